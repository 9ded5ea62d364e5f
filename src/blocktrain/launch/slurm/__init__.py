"""Jobs on Slurm: the batch script (:mod:`.batch`), its submission through submitit
(:mod:`.submit`), the ``squeue``/``sacct``/``scancel`` calls (:mod:`.commands`), and the
finalizer job that closes runs whose jobs died outright (:mod:`.finalize`).

Must not decide what to launch (the flow in :mod:`blocktrain.launch` does) nor run in a task
(:mod:`blocktrain.restart` does).
"""
