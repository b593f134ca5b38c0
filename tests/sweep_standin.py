"""A stand-in for the training engine in sweep tests: same run-record contract, no model.

It "trains" in small steps inside a PreemptionFlag, appends one history row
per step, checkpoints and raises Preempted when signalled, and resumes from
its checkpoint on the next start, like the real engines. Importable by
submitit's worker process (it runs from the repo root).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from utils.cluster.sweep import TrainTask
from utils.core.preempt import Preempted, PreemptionFlag
from utils.core.records import RunRecord, append_history, read_history, write_record

STEPS = 4


class StandInTask(TrainTask):
    def train(self, config: dict) -> dict:
        run_dir = Path(config["results"]) / "runs" / config["run_id"]
        ckpt = run_dir / "checkpoints" / "last.json"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
        hold = float(config.get("tags", {}).get("hold_s", 0))  # seconds per step: time to be signalled
        if config.get("tags", {}).get("fail"):
            raise ValueError(f"stand-in failure: {config['tags']['fail']}")
        with PreemptionFlag() as flag:
            (run_dir / "started").write_text(str(start))  # signals from here on reach the flag
            for step in range(start, STEPS):
                deadline = time.monotonic() + hold
                while time.monotonic() < deadline and not flag.requested:
                    time.sleep(0.05)
                if flag.requested:
                    ckpt.write_text(json.dumps({"step": step}))
                    raise Preempted(f"signal {flag.requested} at step {step}")
                append_history(run_dir, {"epoch": step + 1, "train_loss": 1.0 / (step + 1)})
        epochs = len(read_history(run_dir))
        top1 = 0.5 + 0.1 * config["train"]["seed"]
        record = completed_record(config, top1, epochs)
        write_record(run_dir, record)
        return {"run_id": record.run_id, "status": record.status, "top1": top1}


def completed_record(config: dict, top1: float, epochs: int) -> RunRecord:
    """A valid completed run record for ``config`` (nested RunConfig dicts)."""
    split = {"loss": 1.0, "top1": top1, "top2": top1, "top5": 1.0, "per_class_top1": top1, "n": 4}
    return RunRecord(
        run_id=config["run_id"],
        model=config["model"]["name"],
        framework="torch",  # a stand-in, but records are validated
        config=config,
        epochs=epochs,
        best={"epoch": epochs, "val_top1": top1},
        metrics={"val": dict(split), "test": dict(split)},
        status="completed",
    )
