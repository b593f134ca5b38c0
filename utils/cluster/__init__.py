"""The cluster layer: SLURM job files, submission, sweeps (application layer)."""
