"""The cluster layer (application): everything that meets SLURM, one way onto it.

It carries out the plan of :mod:`utils.experiment` (a DAG of steps; a sweep is
a plan with runs only), which knows nothing of SLURM. ``profile`` the cluster
profile (SlurmConfig per kind of job, from TOML); ``render`` job files;
``launch`` the entry point every job hands over to (``main/job.py``); ``slurm``
SLURM's tools (the preflight against sinfo, every command checked, job
states); ``runner`` the pure planner and the executors (SLURM, dry run, here);
``status`` where a plan stands and its report; ``shell`` the one quoting rule.
An ensemble's or export's step runs :mod:`utils.steps` on any executor: it needs no SLURM.
"""
