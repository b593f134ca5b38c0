"""A stand-in for main/train_<family>.py in the cluster tests: the same preemption contract.

Usage: python tests/slurm_standin_train.py RUN_DIR. Each start appends history
rows from where the checkpoint left off; SIGUSR1 (forwarded by the job script)
makes it save a checkpoint and exit REQUEUE_EXIT_CODE, as models.train.main does.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.core.preempt import REQUEUE_EXIT_CODE, PreemptionFlag  # noqa: E402
from utils.core.records import append_history  # noqa: E402

EPOCHS = 4


def main(run_dir: Path) -> int:
    ckpt = run_dir / "checkpoint.json"
    start = json.loads(ckpt.read_text())["epoch"] if ckpt.exists() else 0
    with PreemptionFlag() as flag:
        with (run_dir / "starts.txt").open("a") as f:
            f.write(f"{start}\n")
        for epoch in range(start, EPOCHS):
            # The first start waits (up to a minute) to be signalled mid-run.
            deadline = time.monotonic() + (60 if start == 0 and epoch == 1 else 0.1)
            while time.monotonic() < deadline and not flag.requested:
                time.sleep(0.05)
            if flag.requested:
                ckpt.write_text(json.dumps({"epoch": epoch}))
                return REQUEUE_EXIT_CODE
            append_history(run_dir, {"epoch": epoch + 1, "train_loss": 1.0 / (epoch + 1)})
    (run_dir / "done").write_text("")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
