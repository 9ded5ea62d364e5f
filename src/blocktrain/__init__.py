"""blocktrain: an HPC batch toolkit for ML research on Slurm."""
