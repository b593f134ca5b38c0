"""The cluster layer (application): everything that meets SLURM.

``shell`` the one quoting rule and safe names; ``profile`` the cluster
profile (SlurmConfig: #SBATCH directives and submitit parameters side by
side); ``sbatch`` + ``body`` the pure job-file renderer; ``jobs`` the suite's
committed job files; ``submit`` preflight against sinfo and sbatch;
``accounting`` job states from sacct/squeue; ``sweep`` submitit job arrays;
``experiment`` experiment files and their plan, ``experiment_run`` (SLURM
chain or local), ``experiment_status`` (status and report),
``experiment_files`` (where an experiment keeps its things).
"""
