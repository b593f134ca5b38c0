"""The entry point every SLURM job file hands over to (utils/cluster/launch.py does the work).

Job files run it with the system's python3 before any environment is active:
    python3 main/job.py --venv .venv --requeue --dry-run-flag=--dry-run -- python main/train_x3d.py --variant xs ...
It activates the profile's environment, passes SLURM's signals on, requeues after a checkpoint
(exit 85), trains seed N in array task N, and launches with srun over several tasks.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo, before any environment is active

from utils.cluster.launch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(root=ROOT))
