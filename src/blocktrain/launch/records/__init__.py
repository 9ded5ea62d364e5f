"""What is kept about launched runs: the run records on disk (:mod:`.store`) and the MLflow runs
the launcher creates, reopens and deletes (:mod:`.tracking`).

Must not ask Slurm or the local supervisor anything: what a run's jobs are doing is read by
the commands and joined with the records by :mod:`blocktrain.launch.statusview`.
"""
