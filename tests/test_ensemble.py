"""models/ensemble.py and main/ensemble.py: late fusion of runs by their scores files.

Member runs are written here as the engines leave them (models.evaluation.write_split
and a completed RunRecord); every expected number is computed with numpy from
the scores written, independently of models/ensemble.py.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from models.ensemble import fuse_runs, weight_grid
from models.evaluation import read_scores, write_split
from utils import report
from utils.core.records import RecordError, RunRecord, read_record, validate_record, write_record

REPO = Path(__file__).resolve().parents[1]
GLOSSES = ["book", "drink", "computer", "before", "chair"]


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_member(root: Path, run_id: str, model: str, *, seed: int, glosses=GLOSSES, n=(12, 10, 10), order_seed=None,
                status="completed", ids=None, skill=1.5, tags=None) -> Path:  # fmt: skip
    """A finished run's directory: scores for train/val/test (ids in a shuffled order) and its record."""
    run_dir = root / "runs" / run_id
    rng = np.random.default_rng(seed)
    for split, count, offset in zip(("train", "val", "test"), n, (0, 1000, 2000)):
        vids = list(ids[split]) if ids else [f"{offset + i:05d}" for i in range(count)]
        labels = np.array([int(v) % len(glosses) for v in vids])
        logits = rng.normal(0, 1, (len(vids), len(glosses)))
        logits[np.arange(len(vids)), labels] += skill * rng.random(len(vids))  # somewhat right, differently per run
        order = np.random.default_rng(order_seed).permutation(len(vids)) if order_seed is not None else np.arange(len(vids))
        write_split(run_dir, split, [vids[i] for i in order], labels[order], logits[order], list(glosses))
    metrics = {s: {"loss": 1.0, "top1": 0.5, "top2": 0.6, "top5": 0.9, "per_class_top1": 0.5, "n": 10} for s in ("val", "test")}
    record = RunRecord(run_id=run_id, model=model, framework="torch", config={"model": {"name": model}, "dry_run": False},
                       epochs=3, best={"epoch": 2, "val_top1": 0.5}, metrics=metrics if status == "completed" else {},
                       status=status, env={"num_classes": len(glosses), "params": 1000}, tags=tags or {})  # fmt: skip
    write_record(run_dir, record)
    return run_dir


@pytest.fixture
def pair(tmp_path):
    a = make_member(tmp_path, "x3d_xs-wlasl5_224-s0", "x3d_xs", seed=1)
    b = make_member(tmp_path, "pose_lstm-wlasl5_pose-s0", "pose_lstm", seed=2, order_seed=3)  # another clip order
    return tmp_path, a, b


def _by_id(run_dir, split):
    s = read_scores(run_dir, split)
    return {str(v): (int(y), row) for v, y, row in zip(s["video_id"], s["label"], s["logits"])}


def _hand_fusion(a, b, split, w):
    """numpy, by video id: w0 * softmax(a) + w1 * softmax(b)."""
    sa, sb = _by_id(a, split), _by_id(b, split)
    ids = sorted(sa)
    pa = _softmax(np.array([sa[v][1] for v in ids], np.float64))
    pb = _softmax(np.array([sb[v][1] for v in ids], np.float64))
    return ids, np.array([sa[v][0] for v in ids]), w[0] * pa + w[1] * pb


def test_fixed_weights_equal_the_fusion_computed_by_hand(pair):
    root, a, b = pair
    out = root / "runs" / "ens"
    record = fuse_runs([a, b], out, weights="3,1")  # normalised to 0.75, 0.25
    assert record.tags["weights"] == pytest.approx([0.75, 0.25])
    for split in ("train", "val", "test"):
        ids, labels, expected = _hand_fusion(a, b, split, (0.75, 0.25))
        got = _by_id(out, split)
        assert sorted(got) == ids
        assert np.allclose(_softmax(np.array([got[v][1] for v in ids], np.float64)), expected, atol=1e-6)
        assert [got[v][0] for v in ids] == labels.tolist()
        if split != "train":
            top1 = float((expected.argmax(1) == labels).mean())
            assert record.metrics[split]["top1"] == pytest.approx(top1)
            loss = float(-np.log(expected[np.arange(len(ids)), labels]).mean())
            assert record.metrics[split]["loss"] == pytest.approx(loss, rel=1e-5)
    for name in ("config.json", "predictions_test.csv", "per_class_val.csv", "confusion_test.csv", "plots/confusion_test.png"):
        assert (out / name).is_file(), name


def test_auto_weights_are_the_best_on_val_by_hand(pair):
    root, a, b = pair
    record = fuse_runs([a, b], root / "runs" / "ens", weights="auto")
    # The grid by hand: w0 in 0, 0.1, ..., 1; best val top-1, ties to the more uniform weights.
    scored = []
    for k in range(11):
        w = (k / 10, 1 - k / 10)
        _ids, labels, fused = _hand_fusion(a, b, "val", w)
        scored.append(((fused.argmax(1) == labels).sum(), -abs(w[0] - 0.5), w))
    best = max(scored, key=lambda s: s[:2])
    assert record.tags["weights"] == pytest.approx(best[2])
    assert record.config["weights"] == "auto" and record.config["selected_on"] == "val"
    _ids, labels, fused = _hand_fusion(a, b, "test", best[2])
    assert record.metrics["test"]["top1"] == pytest.approx(float((fused.argmax(1) == labels).mean()))


def test_ties_go_to_the_uniform_weights(tmp_path):
    # Two members with identical scores: every weighting scores the same on val.
    a = make_member(tmp_path, "a", "x3d_xs", seed=5)
    b = make_member(tmp_path, "b", "pose_lstm", seed=5, order_seed=1)
    assert fuse_runs([a, b], tmp_path / "e2", weights="auto").tags["weights"] == [0.5, 0.5]
    c = make_member(tmp_path, "c", "s3d", seed=5)
    assert fuse_runs([a, b, c], tmp_path / "e3", weights="auto", grid_steps=3).tags["weights"] == pytest.approx([1 / 3] * 3)


def test_weight_grid_covers_the_simplex():
    grid = weight_grid(3, 4)
    assert len(grid) == 15 and np.allclose(grid.sum(1), 1) and (grid >= 0).all()
    assert len({tuple(w) for w in grid}) == 15 and [0.25, 0.25, 0.5] in grid.tolist()


def test_runs_that_differ_are_refused_naming_them(tmp_path):
    a = make_member(tmp_path, "a-s0", "x3d_xs", seed=1)
    other_classes = make_member(tmp_path, "b-s0", "pose_lstm", seed=2, glosses=GLOSSES[:4] + ["table"])
    with pytest.raises(ValueError, match=r"run b-s0 .* other classes than run a-s0.*4: 'chair' vs 'table'"):
        fuse_runs([a, other_classes], tmp_path / "e")
    ids = {"train": [f"{i:05d}" for i in range(12)], "val": [f"{1000 + i:05d}" for i in range(10)],
           "test": [f"{2000 + i:05d}" for i in range(9)] + ["09999"]}  # fmt: skip
    other_ids = make_member(tmp_path, "c-s0", "pose_lstm", seed=3, ids=ids)
    with pytest.raises(ValueError, match=r"test split of run c-s0 .* 1 video id\(s\) only in the first \(02009\), 1 only in this one \(09999\)"):
        fuse_runs([a, other_ids], tmp_path / "e")
    relabelled = make_member(tmp_path, "d-s0", "pose_lstm", seed=4)
    s = read_scores(relabelled, "val")
    write_split(relabelled, "val", list(s["video_id"]), (s["label"] + 1) % 5, s["logits"], GLOSSES)
    with pytest.raises(ValueError, match=r"val labels of run d-s0 .* differ from run a-s0 .* 01000, 01001"):
        fuse_runs([a, relabelled], tmp_path / "e")
    running = make_member(tmp_path, "r-s0", "pose_lstm", seed=5, status="running")
    with pytest.raises(ValueError, match="run r-s0 is running, expected completed"):
        fuse_runs([a, running], tmp_path / "e")
    assert not (tmp_path / "e").exists()  # nothing written when refused


def test_bad_requests_are_refused(pair):
    root, a, b = pair
    with pytest.raises(ValueError, match="at least 2 runs"):
        fuse_runs([a], root / "e")
    with pytest.raises(ValueError, match="given twice"):
        fuse_runs([a, a], root / "e")
    with pytest.raises(FileNotFoundError, match="metrics.json not found"):
        fuse_runs([a, root / "nope"], root / "e")
    (b / "scores_test.npz").rename(b / "moved.npz")
    with pytest.raises(FileNotFoundError, match="scores_test.npz not found"):
        fuse_runs([a, b], root / "e")
    (b / "moved.npz").rename(b / "scores_test.npz")
    for weights, match in (("1,2,3", "expected 2 non-negative"), ("1,-1", "non-negative"), ("0,0", "not all 0"),
                           ("a,b", "'auto' or 2")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            fuse_runs([a, b], root / "e", weights=weights)
    with pytest.raises(ValueError, match="is one of the runs to fuse"):
        fuse_runs([a, b], a)
    with pytest.raises(ValueError, match="holds a torch run, not an ensemble"):
        fuse_runs([a, b], make_member(root, "another", "s3d", seed=9))
    fuse_runs([a, b], root / "e")
    fuse_runs([a, b], root / "e", weights="1,1")  # an earlier ensemble is replaced
    assert read_record(root / "e" / "metrics.json").config["weights"] == "1,1"


def test_the_record_validates_and_names_members_and_weights(pair):
    root, a, b = pair
    record = fuse_runs([a, b], root / "runs" / "ens", weights="1,1")
    data = json.loads((root / "runs" / "ens" / "metrics.json").read_text())
    assert validate_record(data).framework == "ensemble"
    assert record.model == "x3d_xs+pose_lstm" and data["config"]["members"] == ["x3d_xs", "pose_lstm"]
    assert data["tags"]["members"] == ["x3d_xs-wlasl5_224-s0", "pose_lstm-wlasl5_pose-s0"]
    assert data["env"]["num_classes"] == 5 and data["env"]["params"] == 2000
    for broken, match in (({"members": ["x"], "weights": [1.0]}, "two or more run ids"),
                          ({"members": ["x", "y"], "weights": [1.0]}, "2 numbers")):  # fmt: skip
        with pytest.raises(RecordError, match=match):
            validate_record({**data, "tags": broken})
    with pytest.raises(RecordError, match="framework' expected one of"):
        validate_record({**data, "framework": "jax"})


def test_the_report_lists_the_ensemble_with_its_members(pair):
    root, a, b = pair
    fuse_runs([a, b], root / "runs" / "ens-s0", weights="2,1")
    built = report.build_report(root)
    labels = [r.label for r in built.rows]
    assert "Ensemble: X3D-XS + Pose-LSTM" in labels
    row = built.rows[labels.index("Ensemble: X3D-XS + Pose-LSTM")]
    assert row.run_ids == ["ens-s0"] and row.subset == 5 and row.n == 1
    assert labels.index("Ensemble: X3D-XS + Pose-LSTM") == len(labels) - 1  # after the single models
    notes = built.remarks()
    assert "ens-s0 fuses x3d_xs-wlasl5_224-s0 (weight 0.67) + pose_lstm-wlasl5_pose-s0 (weight 0.33)" in notes
    assert "Ensemble: X3D-XS + Pose-LSTM" in built.table("md")


def test_an_ensemble_of_one_plans_runs_is_in_that_plan(tmp_path):
    # An experiment's ensemble step fuses the experiment's runs: its row belongs beside them
    # ("[wlasl_real]"), not among standalone runs. Runs of different plans give a standalone ensemble.
    a = make_member(tmp_path, "x3d_xs-real-s0", "x3d_xs", seed=1, tags={"plan": "wlasl_real"})
    b = make_member(tmp_path, "pose_lstm-real-s0", "pose_lstm", seed=2, tags={"plan": "wlasl_real"})
    c = make_member(tmp_path, "pose_lstm-other-s0", "pose_lstm", seed=3, tags={"plan": "other"})
    assert fuse_runs([a, b], tmp_path / "runs" / "ens", weights="1,1").tags["plan"] == "wlasl_real"
    assert "plan" not in fuse_runs([a, c], tmp_path / "runs" / "mixed", weights="1,1").tags
    labels = [r.label for r in report.build_report(tmp_path).rows]
    assert "Ensemble: X3D-XS + Pose-LSTM [wlasl_real]" in labels, labels


def _cli():
    spec = importlib.util.spec_from_file_location("ensemble_cli", REPO / "main" / "ensemble.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli(pair, capsys):
    root, a, b = pair
    cli = _cli()
    assert cli.main([str(a), str(b), "--out", str(root / "runs" / "cli-ens")]) == 0
    out = capsys.readouterr().out
    assert "ensemble cli-ens: weights x3d_xs-wlasl5_224-s0" in out and "chosen on val" in out and "test top1" in out
    assert cli.main([str(a), "--out", str(root / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: an ensemble needs at least 2 runs") and err.count("\n") == 1
