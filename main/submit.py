"""Submit a job file to SLURM after checking that it fits a node (CPUs, memory, GPUs), making its log folder.

Examples:
    python main/submit.py slurm/movinet_a3.slurm -- --epochs 50
    python main/submit.py --fit slurm/preprocess_172.slurm     # shrink CPUs/memory/GPUs to the largest node
    python main/submit.py --no-gpu slurm/i3d.slurm -- --dry-run   # a CPU-only cluster
    python main/submit.py --sbatch=--partition=long --sbatch=-c4 slurm/x3d_m.slurm
Plain `sbatch slurm/<job>.slurm [args]` works too; this checks first (every problem at once) and creates
the log folder sbatch needs. Arguments after `--` go to the job's command and win over its built-in ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

from utils.cluster.slurm import ResourceError, submit_file  # noqa: E402
from utils.core.argv import script_parser  # noqa: E402


def main(argv=None) -> int:
    p = script_parser(
        "main/submit.py",
        "sbatch a job file after checking its CPUs, memory and GRES against sinfo.",
        __doc__,
    )
    p.add_argument("job", help="job file, e.g. slurm/movinet_a3.slurm")
    p.add_argument("job_args", nargs="*", help="arguments for the job's command (after --)")
    p.add_argument("--no-gpu", action="store_true", help="drop the job's GPU request (--gres=none)")
    p.add_argument("--fit", action="store_true", help="shrink CPUs, memory and GPUs to what the largest node has")
    p.add_argument("--sbatch", action="append", default=[],
                   help="an extra sbatch option in any form sbatch takes, e.g. --sbatch=--qos=long, --sbatch=-c4")  # fmt: skip
    args = p.parse_args(argv)
    sbatch_args = tuple(args.sbatch) + (("--gres=none",) if args.no_gpu else ())
    try:
        job_id, added, log = submit_file(args.job, tuple(args.job_args), sbatch_args, fit=args.fit)
    except (ResourceError, FileNotFoundError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"submitted job {job_id}" + (f" fitted with {' '.join(added)}" if added else "") + f"; log: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
