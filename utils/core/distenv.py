"""Which process of a distributed job this is: rank, world size, local rank.

Read from torchrun's variables (RANK/WORLD_SIZE/LOCAL_RANK) or from srun's
(SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID); a plain process is rank 0 of 1.
"""

from __future__ import annotations

import os

__all__ = ["dist_env"]


def dist_env(env: dict | None = None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun (RANK/WORLD_SIZE) or srun (SLURM_PROCID/SLURM_NTASKS)."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if int(env.get("SLURM_NTASKS", 1)) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0
