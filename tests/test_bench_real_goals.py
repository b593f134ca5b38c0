"""benchmarks/real_wlasl.py's pose goal: a model's val margin is taken over the baseline's own seeds only."""

import importlib.util

from conftest import REPO

_spec = importlib.util.spec_from_file_location("bench_real_wlasl", REPO / "benchmarks" / "real_wlasl.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _figures(val: float, seeds=None, train: float = 1.0) -> dict:
    out = {"runs": [{}, {}, {}], "train": (train, 0.0), "val": (val, 0.01), "test": (0.5, 0.0)}
    return out if seeds is None else {**out, "seeds": seeds}


def test_margin_over_the_same_seeds_and_the_goal():
    out = bench.with_goals({"pose_linear": _figures(0.65, [0, 1, 2]), "pose_lstm": _figures(0.74, [0, 1, 2]),
                            "pose_transformer": _figures(0.80, [0, 1, 2], train=0.85)})  # fmt: skip
    assert out["pose_lstm"]["goal"] == {"fits_train": True, "val_margin": 0.09, "met": False}
    assert out["pose_transformer"]["goal"] == {"fits_train": False, "val_margin": 0.15, "met": False}
    assert "goal" not in out["pose_linear"]


def test_no_margin_against_a_baseline_of_other_seeds():
    out = bench.with_goals({"pose_linear": _figures(0.60, [3, 4, 5]), "pose_lstm": _figures(0.75, [0, 1, 2])})
    assert out["pose_lstm"]["goal"] is None


def test_a_file_from_before_seeds_were_recorded_counts_as_seeds_from_zero():
    out = bench.with_goals({"pose_linear": _figures(0.60), "pose_lstm": _figures(0.75, [0, 1, 2])})
    assert out["pose_lstm"]["goal"]["met"] is True
