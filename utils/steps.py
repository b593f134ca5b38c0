"""A plan's steps that choose their runs when they run: ensembles and exports (``main/experiment.py step FILE KEY``).

Whichever executor starts such a step (a SLURM job, or :func:`utils.cluster.runner.run_local` here), its runs are
picked only then, from the runs completed by then: a named seed, or the best completed seed on val (the best-trial
rule of :func:`utils.core.records.best_trial`), so an ensemble that waited on a failed seed still uses the others.
Then ``main/ensemble.py``, or ``main/export.py`` and ``main/predict.py``, run on them. Nothing here knows SLURM.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from utils.core.files import atomic_write_text, make_dirs
from utils.core.records import best_trial, record_or_none
from utils.experiment import ROOT, Plan, flags

__all__ = ["run_step"]


def _pick(plan: Plan, ref) -> Path:
    """The run a :class:`RunRef` names, now: its seed, or the best of its completed seeds on val (the best-trial rule)."""
    runs = [r for r, v in plan.runs.items() if (v["model"], v["store"]) == (ref.model, ref.store)
            and ref.seed in ("best", v["seed"])]  # fmt: skip
    records = [rec for rec in (record_or_none(plan.outputs[f"run:{r}"]) for r in runs) if rec and rec.status == "completed"]
    best = best_trial(records, "val_top1")
    if best is None:
        raise FileNotFoundError(f"no completed run of {ref.model} on {ref.store} (seed {ref.seed}) among {runs}; "
                                "see: python main/experiment.py status")  # fmt: skip
    return Path(plan.outputs[f"run:{best.run_id}"])


def run_step(plan: Plan, key: str) -> int:
    """Run an ensemble or export step (``main/experiment.py step FILE KEY``): its runs are chosen now,
    then ``main/ensemble.py``, or ``main/export.py`` and ``main/predict.py``, run on them."""
    kind, _, name = key.partition(":")
    out = Path(plan.outputs[key])
    python = [sys.executable]
    if kind == "ensemble":
        e = next(e for e in plan.exp.spec.ensembles if e.name == name)
        members = [str(_pick(plan, m)) for m in e.members]
        return subprocess.run([*python, "main/ensemble.py", *members, "--out", str(out), "--weights", e.weights],
                              cwd=ROOT).returncode  # fmt: skip
    e = next(e for e in plan.exp.spec.exports if e.name == name)
    run, export = _pick(plan, e.run), f"{e.format}_{'int8' if e.int8 else 'float32'}"
    rc = subprocess.run([*python, "main/export.py", str(run), "--format", e.format, "--name", export,
                         *(["--int8"] if e.int8 else [])], cwd=ROOT).returncode  # fmt: skip
    if rc != 0:
        return rc
    make_dirs(out, f"export {name}")
    if e.predict:
        r = subprocess.run([*python, "main/predict.py", e.predict, "--run", str(run), "--export", export,
                            *flags(e.options, key)], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        sys.stderr.write(r.stderr)
        atomic_write_text(out / "prediction.txt", r.stdout)
        if r.returncode != 0:
            return r.returncode
    atomic_write_text(out / "export.json", json.dumps({"run": str(run), "export": str(run / "exports" / export),
                                                       "prediction": str(out / "prediction.txt") if e.predict else None}))
    return 0
