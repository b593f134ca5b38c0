"""The cluster layer (application): everything that meets SLURM, one way onto it.

``profile`` the cluster profile (SlurmConfig per kind of job, from TOML);
``render`` job files (the committed ones and an experiment's); ``launch`` the
entry point every job hands over to (``main/job.py``: environment, signals,
requeue, srun); ``slurm`` SLURM's tools (the preflight against sinfo, every
command checked, job states); ``experiment`` experiment files and their plan
(a DAG of steps; a sweep is a plan with runs only); ``runner`` what exists,
the pure planner and the executors (SLURM, dry run, here); ``status`` where a
plan stands, its report, and the steps that pick their runs when they run;
``shell`` the one quoting rule.
"""
