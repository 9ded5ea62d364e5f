"""Launching entry functions as Slurm jobs: the launch flow (:mod:`.launcher`), profiles, run
records, batch scripts, submission, the task worker."""
