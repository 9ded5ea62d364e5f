"""The slurm-* command-line programs; each answers fast (no torch, no mlflow at start-up)."""
