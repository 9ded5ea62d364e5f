"""Launching entry functions as Slurm jobs: profiles, run records, submission, the task worker."""
