"""Launching entry functions as jobs: the flow from a command line to a queued job.

The flow lives at this level: a request (:mod:`.request`) is checked against the entry's
signature (:mod:`.entryname`) and the profile (:mod:`.profile`), the code is frozen
(:mod:`.codecopy`), runs are created and submitted (:mod:`.launcher`, :mod:`.runjobs`), or a
run is relaunched (:mod:`.relaunch`), on the scheduler :mod:`.executors` picks;
:mod:`.statusview` joins records and queues into what ``slurm-status`` shows. The rooms, in
the order they may import each other (``tests/unit/test_architecture.py``): :mod:`.containers`,
then the profile, :mod:`.records` (run records, MLflow runs), :mod:`.sweeps` (several runs,
names, parent runs), :mod:`.slurm` (batch script, submission, Slurm commands, finalizer) and
:mod:`.local` (jobs without Slurm).

Must not run in a job's task: that is :mod:`blocktrain.restart` (the worker and the restart
protocol), which this package hands a :class:`~blocktrain.restart.jobspec.JobSpec`.
"""
