"""A stand-in engine for the tuning mechanics tests (and a CLI for subprocesses).

``fake_run(cfg)`` honours the training contract that tuning relies on, in
milliseconds: a checkpoint per epoch in ``run_dir/checkpoints``, resume from
it, history.csv rows, a run record whose val top-1 is a fixed function of the
hyperparameters and epochs. Every trained epoch is appended to
``$FAKE_LOG`` so tests can count what ran. Switches (environment):

- ``FAKE_KILL_AT=<run id suffix>:<epoch>``: SIGKILL this process after that
  epoch's checkpoint, once (a marker file remembers).
- ``FAKE_FAIL=raise,record``: the first training calls fail, in this order:
  ``raise`` = an exception (like CUDA OOM), ``record`` = a failed run record
  (like a non-finite loss).
- ``FAKE_PREEMPT=<run id suffix>:<epoch>``: raise Preempted there, once.

Run as a script: ``python tests/_tuning_fake.py <tune options>`` = the tune
CLI for the test family ``tinytune`` with this engine.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.registry import list_models, register_model  # noqa: E402
from utils.core.config import RunConfig  # noqa: E402
from utils.core.preempt import Preempted  # noqa: E402
from utils.core.records import RunRecord, append_history, environment, write_record  # noqa: E402

FAMILY = "tinytune"

if FAMILY not in list_models():

    @register_model(FAMILY, family=FAMILY, framework="torch", frames=8, size=32, description="tuning tests only")
    def _never_built(**_):
        raise AssertionError("the fake engine never builds a model")


def score(cfg: RunConfig, epoch: int) -> float:
    """Best near lr 3e-3 and low dropout; grows with epochs (so promotions pay)."""
    closeness = 1.0 / (1.0 + abs(math.log10(cfg.train.lr) + 2.5))
    return round(closeness * (1.0 - cfg.model.dropout / 2) * epoch / (epoch + 1), 6)


def _once(marker_dir: Path, key: str) -> bool:
    """True the first time ``key`` is asked for (a marker file per key)."""
    marker = marker_dir / f".fake-{key.replace(':', '_')}"
    if marker.exists():
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return True


def _matches(spec: str | None, run_id: str, epoch: int) -> bool:
    if not spec:
        return False
    suffix, at = spec.rsplit(":", 1)
    return run_id.endswith(suffix) and epoch == int(at)


def fake_run(cfg: RunConfig) -> RunRecord:
    run_dir = cfg.run_dir
    log = Path(os.environ.get("FAKE_LOG", run_dir.parent / "fake.log"))
    markers = log.parent
    fails = [f for f in os.environ.get("FAKE_FAIL", "").split(",") if f]
    for i, kind in enumerate(fails):
        if _once(markers, f"fail{i}"):
            if kind == "raise":
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            record = RunRecord(run_id=cfg.run_id, model=cfg.model.name, framework="torch", config=cfg.to_dict(),
                               status="failed", error="non-finite loss (nan) at epoch 1 (simulated)",
                               env=environment(), tags=dict(cfg.tags))
            write_record(run_dir, record)
            return record
    ckpt = run_dir / "checkpoints" / "state.json"
    start = 0
    if ckpt.is_file() and cfg.train.resume:
        state = json.loads(ckpt.read_text())
        # Like the Keras engine's state.json, the state names its files by path:
        # a copied checkpoint must have been relocated into this run dir.
        if not state["last_prefix"].startswith(str(ckpt.parent)):
            raise RuntimeError(f"checkpoint state points outside {ckpt.parent}: {state['last_prefix']}")
        start = state["epoch"]
    for epoch in range(start + 1, cfg.train.epochs + 1):
        val = score(cfg, epoch)
        append_history(run_dir, {"epoch": epoch, "train_loss": 1.0 / epoch, "val_top1": val, "lr": cfg.train.lr})
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_text(json.dumps({"epoch": epoch, "last_prefix": str(ckpt.parent / f"last-{epoch}")}))
        with log.open("a") as f:
            f.write(f"{cfg.run_id} {epoch} {os.getpid()}\n")
        if _matches(os.environ.get("FAKE_KILL_AT"), cfg.run_id, epoch) and _once(markers, "kill"):
            os.kill(os.getpid(), signal.SIGKILL)
        if _matches(os.environ.get("FAKE_PREEMPT"), cfg.run_id, epoch) and _once(markers, "preempt"):
            raise Preempted(f"signal at epoch {epoch}")
    val = score(cfg, cfg.train.epochs)
    split = {"loss": 1.0 - val, "top1": val, "top2": val, "top5": val, "per_class_top1": val, "n": 6}
    record = RunRecord(run_id=cfg.run_id, model=cfg.model.name, framework="torch", config=cfg.to_dict(),
                       epochs=cfg.train.epochs, best={"epoch": cfg.train.epochs, "val_top1": val},
                       metrics={"val": split, "test": dict(split)}, status="completed", env=environment(),
                       tags=dict(cfg.tags))
    write_record(run_dir, record)
    return record


def trained(log: Path) -> list[tuple[str, int]]:
    """(run_id, epoch) of every epoch trained so far, in order."""
    if not log.is_file():
        return []
    return [(line.split()[0], int(line.split()[1])) for line in log.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    from utils.tuning.cli import main

    raise SystemExit(main(FAMILY, sys.argv[1:], train_fn=fake_run))
