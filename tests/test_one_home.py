"""Issue 25, one home per rule: every metric list derives from one table, records are validated from their
types (an old record lacking a metric reads NaN), one best-trial rule for tuning and the report, one rule of
which settings shape a result for resume and the report, one run-id rule for training, sweeps and experiments."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from utils.core.metrics import HISTORY_COLUMNS, METRICS, OBJECTIVES, SPLIT_KEYS, evaluate_logits
from utils.core.records import RecordError, RunRecord, best_trial, validate_record, write_json, write_record

ROOT = Path(__file__).resolve().parents[1]


def record(run_id: str, *, val: dict | None = None, **fields) -> RunRecord:
    split = {"loss": 1.0, "top1": 0.5, "top2": 0.6, "top5": 1.0, "per_class_top1": 0.5, "n": 4, **(val or {})}
    base = {"run_id": run_id, "model": "x3d_xs", "framework": "torch", "status": "completed",
            "config": {"model": {"name": "x3d_xs"}, "data": {"root": "data/wlasl100_224"}, "train": {"seed": 0}},
            "best": {"epoch": 1, "val_top1": split["top1"], "val_loss": split["loss"]},
            "metrics": {"val": split, "test": dict(split)}, "env": {"num_classes": 100}}  # fmt: skip
    return RunRecord(**{**base, **fields})


def test_every_metric_list_derives_from_the_one_table():
    import numpy as np

    from utils.reporting.tables import METRICS as COLUMNS
    from utils.tuning.cli import tune_parser

    keys = [m.key for m in METRICS]
    assert SPLIT_KEYS == (*keys, "n") and set(evaluate_logits(np.eye(3), np.arange(3))) == set(SPLIT_KEYS)
    assert [c for c in HISTORY_COLUMNS if c.startswith("val_")] == [f"val_{m.key}" for m in METRICS if m.per_epoch]
    assert set(COLUMNS) == set(keys) and set(OBJECTIVES) == {"val_accuracy", *(f"val_{k}" for k in keys)}
    import models  # noqa: F401

    choices = next(a.choices for a in tune_parser("x3d")._actions if a.dest == "objective")
    assert list(choices) == list(OBJECTIVES)


def test_records_are_read_by_their_types_and_an_old_one_lacking_a_metric_reads_nan():
    old = record("r").to_dict()
    del old["metrics"]["test"]["per_class_top1"], old["metrics"]["val"]["top2"]  # written before those metrics existed
    r = validate_record(old)
    assert math.isnan(r.metrics["test"]["per_class_top1"]) and math.isnan(r.metrics["val"]["top2"])
    assert validate_record({**record("c").to_dict(), "status": "cancelled"}).status == "cancelled"
    with pytest.raises(RecordError, match="'status' expected one of"):
        validate_record({**record("c").to_dict(), "status": "gone"})
    with pytest.raises(RecordError, match="completed run without metrics\\['test'\\]"):
        validate_record({**record("c").to_dict(), "metrics": {"val": {}}})
    assert validate_record({**record("c").to_dict(), "from_the_future": 1}).run_id == "c"  # unknown keys pass


def test_one_best_trial_rule_for_tuning_and_the_report(tmp_path):
    """A study tuned on val_loss: its best trial is the lowest loss, in best.json and in the table alike."""
    from utils.reporting.runs import collect_runs
    from utils.tuning.study import Study, best_record

    study = Study("s", tmp_path)
    values = {"0": {"top1": 0.9, "loss": 2.0}, "1": {"top1": 0.5, "loss": 0.5}, "2": {"top1": 0.5, "loss": 0.5}}
    for trial, val in values.items():
        write_record(study.run_dir(trial), record(study.run_id(trial), val=val, tags={"study": "s", "trial": trial}))
    write_json(study.root / "study.json", {"objective": "val_loss"})
    assert best_record(study, "val_loss")[0] == "1"  # the tie goes to the earlier trial
    [best] = collect_runs(tmp_path).best_trials
    assert best.record.tags["trial"] == "1"
    assert best_trial([r.record for r in collect_runs(tmp_path).trials], "val_top1").tags["trial"] == "0"


def test_one_rule_of_which_settings_shape_a_result():
    from models.policy import ROW_EXEMPT, fingerprint, fingerprint_diff, settings
    from utils.core.config import config_from_dict

    def cfg(**train):
        return config_from_dict({"model": {"name": "x3d_xs"}, "data": {"root": "d/s"}, "train": train})

    for neutral in ({"compile": True}, {"channels_last": True}, {"resume": False}):  # resume and the report agree
        assert fingerprint_diff(fingerprint(cfg()), fingerprint(cfg(**neutral))) == [], neutral
        assert settings(cfg().to_dict(), ROW_EXEMPT) == settings(cfg(**neutral).to_dict(), ROW_EXEMPT), neutral
    assert fingerprint_diff(fingerprint(cfg()), fingerprint(cfg(lr=0.1)))
    assert settings(cfg().to_dict(), ROW_EXEMPT) != settings(cfg(lr=0.1).to_dict(), ROW_EXEMPT)
    assert fingerprint_diff(fingerprint(cfg()), fingerprint(cfg(epochs=99))) == []  # more epochs resume
    assert settings(cfg(seed=1).to_dict(), ROW_EXEMPT) == settings(cfg().to_dict(), ROW_EXEMPT)  # seeds share a row


def test_one_run_id_rule_for_training_sweeps_and_experiments(tmp_path, monkeypatch):
    """Issue 25: a distilled or streaming run started by an experiment is looked up under the id it trains under."""
    from utils.experiment import load_experiment, make_plan

    monkeypatch.chdir(ROOT)
    path = tmp_path / "e.yaml"
    path.write_text(json.dumps({
        "stores": {"s": {"out": "data/wlasl100_172"}},
        "runs": [{"models": ["movinet_a0"], "store": "s", "options": {"stream": True, "teacher": "r/t", "dry_run": True}},
                 {"models": ["movinet_a0"], "store": "s"}]}))  # fmt: skip
    assert list(make_plan(load_experiment(path)).runs) == ["movinet_a0_stream-wlasl100_172-s0-kd-dryrun",
                                                           "movinet_a0-wlasl100_172-s0"]  # fmt: skip
    sources = "\n".join(p.read_text() for d in ("utils", "models") for p in (ROOT / d).rglob("*.py"))
    assert sources.count('"-kd"') == 1 and sources.count("_stream\" if") == 2  # run_id and study_label
