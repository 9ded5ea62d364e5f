"""Jobs without Slurm (``--executor local``): one supervisor process per job stands in for
``sbatch`` and ``srun``.

:mod:`.jobstate` holds the job's state file and every decision on it (pure);
:mod:`.supervisor` is the process that starts, signals and waits for the tasks;
:mod:`.scheduler` submits; :mod:`.queries` answers ``slurm-status``, ``slurm-log``,
``slurm-stop`` and ``slurm-cancel``. Must not import submitit or call a Slurm command.
"""
