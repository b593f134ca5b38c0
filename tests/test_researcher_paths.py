"""Issue 23 off the cluster: a run trains at its store's side (a larger --size is refused with the fix), batch
jobs print progress lines, only rank 0 prints the result, a bug keeps its traceback while a refusal is one line,
and a preempted run's message fits where it runs."""

from __future__ import annotations

import sys
import types

import pytest

from wlasl.clip_store import ClipStore, StoreError


def test_a_run_trains_at_its_stores_side_and_a_larger_size_is_refused(tiny_store, tmp_path, capsys):
    import models  # noqa: F401
    from models.registry import get_model
    from models.train import resolve
    from utils.core.config import config_from_dict
    from utils.train_cli import main

    store, spec = ClipStore(tiny_store), get_model("x3d_xs")
    base = {"model": {"name": "x3d_xs"}, "data": {"root": str(tiny_store)}}
    assert spec.size == 224 and resolve(config_from_dict(base), spec, store).model.size == 32  # not 224: issue 23
    assert resolve(config_from_dict({**base, "model": {"name": "x3d_xs", "size": 24}}), spec, store).model.size == 24
    with pytest.raises(StoreError, match=r"holds 32x32 clips but this run asks for --size 64.*Drop --size"):
        resolve(config_from_dict({**base, "model": {"name": "x3d_xs", "size": 64}}), spec, store)
    argv = ["--variant", "xs", "--data", str(tiny_store), "--results", str(tmp_path), "--frames", "8", "--size", "64"]
    assert main("x3d", argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "python main/preprocess.py" in err, err


def test_batch_jobs_print_progress_lines(synthetic, tmp_path, capsys):
    """Issue 23: the preprocessing jobs printed nothing until the end (--no-progress); a log now gets lines."""
    from tests.conftest import prepare_cfg
    from wlasl.prepare import run_prepare

    run_prepare(prepare_cfg(synthetic, tmp_path / "store"), progress=True)  # stderr is not a terminal here
    lines = [line for line in capsys.readouterr().err.splitlines() if " clips (" in line]
    assert lines and lines[-1].startswith(f"clips: {3 * 8}/{3 * 8} clips (100%) after"), lines
    assert all("\r" not in line for line in lines)


def _fake_run(result=None, error=None):
    def run(cfg):
        if error is not None:
            raise error
        return result
    return run


def test_a_bug_keeps_its_traceback_a_refusal_is_one_line_and_rank_0_alone_prints(tiny_store, tmp_path, capsys,
                                                                                 monkeypatch):  # fmt: skip
    import utils.train_cli as cli
    from utils.core.records import RunRecord

    argv = ["--variant", "xs", "--data", str(tiny_store), "--results", str(tmp_path)]

    def bug(cfg):
        return {}["no such key"]  # a KeyError from inside Python, not a refusal

    monkeypatch.setattr(cli, "run", bug)
    with pytest.raises(KeyError):
        cli.main("x3d", argv)

    def refuses(cfg):
        raise ValueError("the checkpoint belongs to another run; pick another --run-id")

    monkeypatch.setattr(cli, "run", refuses)
    assert cli.main("x3d", argv) == 2 and capsys.readouterr().err == (
        "error: the checkpoint belongs to another run; pick another --run-id\n")  # fmt: skip
    done = RunRecord(run_id="r", model="x3d_xs", framework="torch", config={}, status="completed",
                     best={"val_top1": 0.5}, metrics={"test": {"top1": 0.5, "top2": 0.5}})  # fmt: skip
    monkeypatch.setattr(cli, "run", lambda cfg: done)
    assert cli.main("x3d", argv) == 0 and capsys.readouterr().out.startswith("completed: r")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main("x3d", argv) == 0 and capsys.readouterr().out == ""  # issue 23: both ranks printed it


def test_the_preemption_message_fits_where_the_run_is(tmp_path, monkeypatch):
    from models.lifecycle import Run
    from utils.core.config import config_from_dict
    from utils.core.preempt import Cancelled, Preempted
    from utils.core.records import read_record

    cfg = config_from_dict({"model": {"name": "x3d_xs"}, "data": {"root": "d"}, "run_id": "r", "results": str(tmp_path)})
    ckpt = types.SimpleNamespace(save=lambda kind, tag: [f"{kind}-{tag}"], load=lambda kind, files: None)
    for env, flag, expected in ((None, (10, False), "rerun the same command"), ("7", (10, False), "requeues itself"),
                                ("7", (15, True), "the same command resumes")):  # fmt: skip
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
        if env:
            monkeypatch.setenv("SLURM_JOB_ID", env)
        run = Run(tmp_path / "runs" / "r", cfg, framework="torch", num_classes=3, env={})
        run.dir.mkdir(parents=True, exist_ok=True)
        (run.ckpt_dir).mkdir(exist_ok=True)
        with pytest.raises(Cancelled if flag[1] else Preempted, match=expected):
            run.preempt(ckpt, 0, run.resume(ckpt), types.SimpleNamespace(requested=flag[0], cancelled=flag[1]))
        assert read_record(run.dir / "metrics.json").status == ("cancelled" if flag[1] else "stopped")
    assert "python" in sys.executable
