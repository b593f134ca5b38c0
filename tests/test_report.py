"""utils/report.py: run records with known values -> the tables and plots.

Records are written here with utils.core.records (RunRecord, write_record,
append_history) and models.evaluation.write_split, as the engines do; the
expected numbers are computed from the values written, with the statistics
module, not copied from the report's output.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.evaluation import write_split
from utils import report
from utils.core.config import DataConfig, ModelConfig, RunConfig
from utils.core.records import SCHEMA_VERSION, RunRecord, append_history, write_json, write_record
from utils.reporting import plots
from utils.reporting.runs import collect_runs, display_name, model_sort_key, subset_of
from utils.reporting.tables import parse_metrics

REPO = Path(__file__).resolve().parents[1]
rng = np.random.default_rng(7)


def split_metrics(top1: float) -> dict:
    """A plausible metrics[split] dict around ``top1``."""
    top2 = min(1.0, top1 + float(rng.uniform(0.05, 0.2)))
    return {
        "loss": float(rng.uniform(0.5, 3.0)),
        "top1": top1,
        "top2": top2,
        "top5": min(1.0, top2 + 0.1),
        "per_class_top1": top1 - 0.01,
        "n": 258,
    }


def make_run(
    results: Path,
    model: str,
    seed: int,
    *,
    subset: int | None = 100,
    store: str | None = None,
    status: str = "completed",
    test: dict | None = None,
    val: dict | None = None,
    tags: dict | None = None,
    params: int | None = None,
    epochs: int = 3,
    where: str = "runs",
    dry_run: bool = False,
) -> RunRecord:
    """Write a run record (metrics.json + history.csv) the way an engine does."""
    store = store or f"data/wlasl{subset or 100}_224"
    cfg = RunConfig(model=ModelConfig(model), data=DataConfig(root=store), dry_run=dry_run, tags=tags or {})
    run_id = f"{model}-{Path(store).name}-s{seed}" + (f"-t{tags['trial']}" if tags and "trial" in tags else "")
    env = {"host": "test"}
    if subset is not None:
        env["num_classes"] = subset
    if params is not None:
        env["params"] = params
    metrics = {}
    if status == "completed":
        metrics = {
            "val": val or split_metrics(float(rng.uniform(0.3, 0.7))),
            "test": test or split_metrics(float(rng.uniform(0.3, 0.7))),
        }
    record = RunRecord(
        run_id=run_id,
        model=model,
        framework="keras",
        config=cfg.to_dict(),
        epochs=epochs,
        metrics=metrics,
        status=status,
        error="Traceback ...\nRuntimeError: CUDA out of memory" if status == "failed" else None,
        wall_s=12.5,
        env=env,
        tags=tags or {},
    )
    run_dir = results / where / run_id
    write_record(run_dir, record)
    for e in range(epochs):
        append_history(
            run_dir,
            {
                "epoch": e,
                "train_loss": 3 - e,
                "train_top1": 0.2 * e,
                "val_loss": 3.2 - e,
                "val_top1": 0.15 * e,
                "val_top2": 0.2 * e,
                "val_top5": 0.3 * e,
                "lr": 1e-3,
                "wall_s": 4,
            },
        )
    return record


def pm(values: list[float], scale: float = 100.0) -> str:
    """Expected markdown cell: mean ± sample std (or the mean alone for one value)."""
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values) * scale:.2f}"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def seeded(tmp_path) -> tuple[Path, dict[str, list[RunRecord]]]:
    """Runs on WLASL100 written in scrambled order: x3d_s, movinet_a2 x3, i3d x2, movinet_a0 x2, s3d."""
    results = tmp_path / "results"
    plan = [
        ("x3d_s", 0),
        ("movinet_a2", 1),
        ("i3d", 0),
        ("movinet_a2", 0),
        ("movinet_a0", 0),
        ("s3d", 0),
        ("i3d", 1),
        ("movinet_a2", 2),
        ("movinet_a0", 1),
    ]
    params = {"x3d_s": 3_000_000, "movinet_a2": 4_500_000, "i3d": 12_000_000, "movinet_a0": 2_000_000, "s3d": 8_000_000}
    runs: dict[str, list[RunRecord]] = {}
    for model, seed in plan:
        runs.setdefault(model, []).append(make_run(results, model, seed, params=params[model]))
    return results, runs


def expected_md_rows(
    runs: dict[str, list[RunRecord]], metrics=("top1", "top2", "loss"), subset=100, split="test"
) -> list[str]:
    order = sorted(runs, key=model_sort_key)
    lines = []
    for model in order:
        recs = runs[model]
        cells = [display_name(model), str(subset), str(len(recs))]
        for key in metrics:
            cells.append(pm([r.metrics[split][key] for r in recs], 1.0 if key == "loss" else 100.0))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def test_markdown_table_is_exact(seeded):
    results, runs = seeded
    rep = report.build_report(results)
    lines = rep.table("md").splitlines()
    assert lines[0] == "| Model | Subset | n | Top 1 | Top 2 | Loss |"
    assert lines[2:] == expected_md_rows(runs)
    # I3D first, MoViNet by variant, then S3D, then X3D (the seed thesis's order)
    assert [r.model for r in rep.rows] == ["i3d", "movinet_a0", "movinet_a2", "s3d", "x3d_s"]


def test_mean_std_over_seeds_and_val_split(seeded):
    results, runs = seeded
    rep = report.build_report(results, metrics=("top5", "per_class_top1"), split="val")
    row = next(r for r in rep.rows if r.model == "movinet_a2")
    values = [r.metrics["val"]["top5"] * 100 for r in runs["movinet_a2"]]
    assert row.n == 3
    assert row.mean["top5"] == pytest.approx(statistics.fmean(values))
    assert row.std["top5"] == pytest.approx(statistics.stdev(values))
    single = next(r for r in rep.rows if r.model == "s3d")
    assert single.n == 1 and np.isnan(single.std["top5"])
    assert rep.table("md").splitlines()[2:] == expected_md_rows(runs, ("top5", "per_class_top1"), split="val")


def test_model_order_is_family_then_variant():
    names = ["x3d_l", "unknown_net", "movinet_a5", "s3d", "movinet_a0", "i3d", "x3d_xs", "movinet_a10"]
    ordered = sorted(names, key=model_sort_key)
    assert ordered == ["i3d", "movinet_a0", "movinet_a5", "s3d", "x3d_xs", "x3d_l", "movinet_a10", "unknown_net"]
    assert [display_name(m) for m in ("i3d", "movinet_a3", "x3d_xs")] == ["I3D", "MoViNet-A3", "X3D-XS"]


def test_subset_from_env_then_store_name_and_filter(tmp_path):
    results = tmp_path / "results"
    a = make_run(results, "i3d", 0, subset=100)
    b = make_run(results, "i3d", 1, subset=None, store="/data/wlasl2000_224")
    c = make_run(results, "i3d", 2, subset=None, store="/data/mini3_64/")
    d = make_run(results, "i3d", 3, subset=None, store="/data/clips")
    assert [subset_of(r) for r in (a, b, c, d)] == [100, 2000, 3, None]
    rep = report.build_report(results, subset=2000)
    assert [(r.model, r.subset, r.n) for r in rep.rows] == [("i3d", 2000, 1)]
    every = report.build_report(results)
    assert [r.subset for r in every.rows] == [3, 100, 2000, None]


def test_csv_reads_back_with_pandas(seeded):
    results, runs = seeded
    report.write_outputs(report.build_report(results, metrics=("top1", "top2", "loss")), results / "tables", None)
    df = pd.read_csv(results / "tables" / "summary.csv")
    assert list(df.columns[:5]) == ["model", "label", "subset", "study", "n"]
    assert {"top1_mean", "top1_std", "top2_mean", "top2_std", "loss_mean", "loss_std", "params"} <= set(df.columns)
    a2 = df[df.model == "movinet_a2"].iloc[0]
    assert a2.n == 3 and a2.subset == 100
    assert a2.top1_mean == pytest.approx(100 * statistics.fmean(r.metrics["test"]["top1"] for r in runs["movinet_a2"]))
    assert a2.loss_std == pytest.approx(statistics.stdev(r.metrics["test"]["loss"] for r in runs["movinet_a2"]))
    assert list(df.model) == ["i3d", "movinet_a0", "movinet_a2", "s3d", "x3d_s"]


def test_latex_has_the_right_columns(seeded):
    results, runs = seeded
    tex = report.build_report(results, metrics=("top1", "top5", "loss")).table("tex")
    lines = tex.splitlines()
    assert lines[0] == r"\begin{tabular}{lrrrrr}" and lines[-1] == r"\end{tabular}"
    assert lines[2] == r"Model & Subset & n & Top 1 & Top 5 & Loss \\"
    body = lines[4 : 4 + len(runs)]
    assert all(line.count(" & ") == 5 and line.endswith(r"\\") for line in body)
    i3d = [r.metrics["test"]["top1"] * 100 for r in runs["i3d"]]
    assert body[0].startswith(f"I3D & 100 & 2 & {statistics.fmean(i3d):.2f} $\\pm$ {statistics.stdev(i3d):.2f} & ")
    assert r"\bottomrule" in lines


def test_plots_are_pngs_of_the_expected_size(seeded):
    results, runs = seeded
    rep = report.build_report(results)
    target = runs["movinet_a2"][0]
    glosses = ["book", "drink", "computer"]
    labels = np.array([0, 1, 2, 2, 1, 0])
    logits = np.eye(3)[[0, 1, 1, 2, 1, 2]] * 4.0
    write_split(results / "runs" / target.run_id, "test", [f"v{i}" for i in range(6)], labels, logits, glosses)
    report.write_outputs(rep, results / "tables", results / "plots", confusion=[target.run_id])
    px = lambda size: (round(size[0] * plots.DPI), round(size[1] * plots.DPI))  # noqa: E731
    curves = sorted((results / "plots" / "curves").glob("*.png"))
    assert len(curves) == sum(len(v) for v in runs.values())
    assert all(png_size(p) == px(plots.CURVES_SIZE_IN) for p in curves)
    assert png_size(results / "plots" / "accuracy_bars.png") == px(plots.BARS_SIZE_IN)
    assert png_size(results / "plots" / "accuracy_vs_params.png") == px(plots.PARAMS_SIZE_IN)
    assert png_size(results / "plots" / f"confusion_{target.run_id}.png") == px(plots.CONFUSION_SIZE_IN)
    y, pred, names = plots.read_predictions(results / "runs" / target.run_id)
    assert y.tolist() == labels.tolist() and pred.tolist() == logits.argmax(1).tolist()
    assert names == dict(enumerate(glosses))


def test_broken_and_unfinished_records_are_listed_apart(seeded, capsys):
    results, runs = seeded
    bad = results / "runs" / "garbage" / "metrics.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{ not json")
    old = make_run(results, "i3d", 9).to_dict() | {"schema_version": SCHEMA_VERSION - 1, "run_id": "old-schema"}
    write_json(results / "runs" / "old-schema" / "metrics.json", old)
    partial = make_run(results, "i3d", 8).to_dict() | {"run_id": "partial", "metrics": {"val": {}}}
    write_json(results / "runs" / "partial" / "metrics.json", partial)
    # the three above reused seeds 8, 9 of i3d: drop their own dirs so only the broken copies stay
    for seed in (8, 9):
        (results / "runs" / f"i3d-wlasl100_224-s{seed}" / "metrics.json").unlink()
    failed = make_run(results, "movinet_a2", 5, status="failed", test=None)
    running = make_run(results, "i3d", 6, status="running")
    stopped = make_run(results, "s3d", 7, status="stopped")
    dry = make_run(results, "x3d_s", 4, dry_run=True)

    rc = report.main(["--results", str(results)])
    out = capsys.readouterr().out
    assert rc == 0
    table = out.split("\n\n")[0].splitlines()
    assert table[2:] == expected_md_rows(runs)  # unchanged: nothing broken or unfinished averaged in
    for rec, status in ((failed, "failed"), (running, "running"), (stopped, "stopped"), (dry, "dry run")):
        assert f"- {rec.run_id} ({rec.model}): {status}" in out
    assert "CUDA out of memory" in out
    for name in ("garbage", "old-schema", "partial"):
        assert f"runs/{name}/metrics.json: unreadable" in out
    others = pd.read_csv(results / "tables" / "other_runs.csv")
    assert sorted(others.status) == sorted(["failed", "running", "stopped", "dry run"] + ["unreadable"] * 3)
    assert "schema_version" in others[others.path.str.contains("old-schema")].reason.iloc[0]
    # and the dry run counts when asked
    rep = report.build_report(results, include_dry_runs=True)
    assert next(r for r in rep.rows if r.model == "x3d_s").n == 2


def test_tuning_study_shows_its_best_trial(seeded):
    results, runs = seeded
    vals = [0.41, 0.63, 0.55]
    trials = [
        make_run(
            results,
            "movinet_a2",
            0,
            tags={"study": "hb-a2", "trial": f"{i:02d}"},
            where="tuning/hb-a2/trials",
            val=split_metrics(v),
        )
        for i, v in enumerate(vals)
    ]
    make_run(
        results, "movinet_a2", 0, status="failed", tags={"study": "hb-a2", "trial": "03"}, where="tuning/hb-a2/trials"
    )
    best = trials[int(np.argmax(vals))]
    rep = report.build_report(results)
    study_rows = [r for r in rep.rows if r.study]
    assert len(study_rows) == 1
    row = study_rows[0]
    assert row.run_ids == [best.run_id] and row.n == 1
    assert row.label == f"MoViNet-A2 (study hb-a2, best trial {best.tags['trial']})"
    assert row.mean["top1"] == pytest.approx(100 * best.metrics["test"]["top1"])  # test numbers of the val-best trial
    # it follows the seed-averaged MoViNet-A2 row, which trials do not join
    models = [(r.model, r.study) for r in rep.rows]
    assert models.index(("movinet_a2", "hb-a2")) == models.index(("movinet_a2", None)) + 1
    assert next(r for r in rep.rows if r.model == "movinet_a2" and not r.study).n == len(runs["movinet_a2"])
    assert "hb-a2" in report.format_others(rep.runs) and "failed" in report.format_others(rep.runs)


def published_rows() -> list[dict]:
    lines = [
        ln for ln in (REPO / "results" / "published.csv").read_text("utf-8").splitlines() if not ln.startswith("#")
    ]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def test_published_csv_holds_the_reference_figures():
    rows = published_rows()
    assert all(r["citation"] for r in rows)
    thesis = {r["model"]: (float(r["top1"]), float(r["top5"])) for r in rows if r["source"] == "seed_thesis"}
    assert thesis["i3d"] == (48.45, 76.35) and thesis["movinet_a3"] == (63.18, 86.43) and len(thesis) == 7
    li = {
        int(r["subset"]): (float(r["top1"]), float(r["top5"]), float(r["top10"]))
        for r in rows
        if r["source"] == "li2020"
    }
    assert li == {100: (65.89, 84.11, 89.92), 2000: (32.48, 57.31, 66.31)}


def test_published_columns_beside_ours(seeded):
    results, runs = seeded
    rep = report.build_report(results, metrics=("top1", "top2", "top5"), published=True)
    lines = rep.table("md").splitlines()
    assert lines[0] == "| Model | Subset | n | Top 1 | Top 2 | Top 5 | Top 1 [1] | Top 5 [1] | Top 1 [2] | Top 5 [2] |"
    pub = published_rows()
    by = {(r["source"], r["model"], int(r["subset"])): r for r in pub}
    row = {r.model: r for r in rep.rows}
    assert row["movinet_a2"].published["seed_thesis"]["top1"] == float(by["seed_thesis", "movinet_a2", 100]["top1"])
    assert row["i3d"].published["li2020"]["top5"] == float(by["li2020", "i3d", 100]["top5"])
    # published-only models of the shown subset get rows with n = 0; WLASL2000 is not shown
    assert row["movinet_a5"].n == 0 and {r.subset for r in rep.rows} == {100}
    i3d_line = next(ln for ln in lines if ln.startswith("| I3D |"))
    assert i3d_line.endswith(
        f"| {by['seed_thesis', 'i3d', 100]['top1']} | {by['seed_thesis', 'i3d', 100]['top5']} "
        f"| {by['li2020', 'i3d', 100]['top1']} | {by['li2020', 'i3d', 100]['top5']} |"
    )
    assert any(ln.startswith("[2] D. Li") for ln in lines)
    df = pd.read_csv(io.StringIO(rep.table("csv")))
    assert {"top1_pub_seed_thesis", "top5_pub_seed_thesis", "top1_pub_li2020", "top5_pub_li2020"} <= set(df.columns)
    tex = rep.table("tex").splitlines()
    assert tex[2].count(" & ") == 9 and any(r"\footnotesize [1] I. M. Wølneberg and H. Amlie" in ln for ln in tex)


def test_cli_formats_and_errors(seeded, capsys):
    results, runs = seeded
    assert report.main(["--results", str(results), "--format", "csv", "--no-plots", "--out", str(results / "t")]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(df.model) == ["i3d", "movinet_a0", "movinet_a2", "s3d", "x3d_s"]
    assert sorted(p.name for p in (results / "t").iterdir()) == [
        "other_runs.csv",
        "summary.csv",
        "summary.md",
        "summary.tex",
    ]
    assert not (results / "plots").exists()
    # with --no-plots no confusion matrix is drawn, so an unknown id is not an error
    assert report.main(["--results", str(results), "--confusion", "nope", "--no-plots"]) == 0
    assert report.main(["--results", str(results), "--confusion", "nope"]) == 2
    assert "known run ids" in capsys.readouterr().err
    assert report.main(["--results", str(results), "--metrics", "top1,top3"]) == 2
    assert "top3" in capsys.readouterr().err
    with pytest.raises(ValueError, match="per_class_top1"):
        parse_metrics("acc")


def test_runs_as_a_script_from_anywhere(seeded, tmp_path):
    results, runs = seeded
    out = subprocess.run(
        [sys.executable, str(REPO / "utils" / "report.py"), "--results", str(results), "--no-plots", "--format", "tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(r"\begin{tabular}") and "MoViNet-A2" in out.stdout


def test_collect_ignores_nothing_silently(tmp_path):
    results = tmp_path / "results"
    make_run(results, "i3d", 0)
    (results / "runs" / "empty").mkdir()
    (results / "runs" / "empty" / "metrics.json").write_text(json.dumps([1, 2]))
    runs = collect_runs(results)
    assert len(runs.completed) == 1 and len(runs.skipped) == 1
    assert "expected a JSON object" in runs.skipped[0][1]


def test_copied_run_counts_once_and_mixed_settings_are_flagged(seeded):
    results, runs = seeded
    rec = runs["s3d"][0]
    copy = results / "backup" / rec.run_id / "metrics.json"
    copy.parent.mkdir(parents=True)
    copy.write_text((results / "runs" / rec.run_id / "metrics.json").read_text())
    # a second s3d seed trained at another learning rate: averaged, but flagged
    other = make_run(results, "s3d", 1).to_dict()
    other["config"]["train"]["lr"] = 0.01
    write_json(results / "runs" / other["run_id"] / "metrics.json", other)
    rep = report.build_report(results)
    assert [len(r.run_ids) for r in rep.rows if r.model == "s3d"] == [2]
    assert any("duplicate of run" in skip.reason and skip.status == "duplicate" for skip in rep.runs.skipped)
    assert "S3D (100) averages runs with different settings: train.lr: 0.001, 0.01" in rep.remarks()
    assert "MoViNet-A2" not in rep.remarks().split("Not in the table")[0]


def test_a_record_from_before_a_setting_existed_is_not_flagged_as_different(tmp_path):
    # Two seeds of one row: the older record was written before kd_alpha and warmup_epochs existed;
    # the newer has them at what the older one trained with (the default, no warm-up).
    old, new = (make_run(tmp_path, "s3d", seed).to_dict() for seed in (0, 1))
    for key in ("kd_alpha", "warmup_epochs"):
        del old["config"]["train"][key]
    new["config"]["train"]["warmup_epochs"] = 0  # resolved, as models.train.resolve records it
    for rec in (old, new):
        write_json(tmp_path / "runs" / rec["run_id"] / "metrics.json", rec)
    rep = report.build_report(tmp_path)
    assert [len(r.run_ids) for r in rep.rows if r.model == "s3d"] == [2]
    assert "different settings" not in rep.remarks()
    new["config"]["train"]["warmup_epochs"] = 5  # a real difference is still named
    write_json(tmp_path / "runs" / new["run_id"] / "metrics.json", new)
    assert "train.warmup_epochs: 0, 5" in report.build_report(tmp_path).remarks()


def test_published_figures_stay_when_only_a_tuned_run_exists(tmp_path):
    results = tmp_path / "results"
    make_run(results, "movinet_a3", 0, tags={"study": "bo", "trial": "1"}, where="tuning/bo")
    rep = report.build_report(results, published=True)
    plain = [r for r in rep.rows if r.model == "movinet_a3" and r.study is None]
    assert (
        len(plain) == 1
        and plain[0].n == 0
        and plain[0].published["seed_thesis"]["top1"]
        == next(
            float(r["top1"]) for r in published_rows() if (r["source"], r["model"]) == ("seed_thesis", "movinet_a3")
        )
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("model,subset,top1,source,citation\ni3d,WLASL100,50,x,y\n")
    with pytest.raises(ValueError, match="line 2: subset"):
        report.build_report(results, published=bad)


# --------------------------------------------------------------------------- issue 11.1: dry runs


def test_tuned_dry_run_is_listed_apart_never_a_result(tiny_store, tmp_path, monkeypatch, capsys):
    # The issue's case, with the tuning tests' stand-in engine instead of X3D:
    # tune --dry-run, then the report. The study's best trial must not become a row.
    from tests._tuning_fake import FAMILY, fake_run
    from utils.tuning.cli import main as tune

    results = tmp_path / "results"
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "fake.log"))
    argv = ["--tuner", "hyperband", "--data", str(tiny_store), "--results", str(results), "--dry-run"]
    assert tune(FAMILY, argv, train_fn=fake_run) == 0
    capsys.readouterr()
    trials = collect_runs(results, include_dry_runs=True).trials
    assert trials and all(t.dry_run and t.record.tags.get("dry_run") is True for t in trials)
    # the flag is recorded, the trial is not shrunk again: Hyperband's epoch budget (2 in a dry run) stays
    assert max(t.record.config["train"]["epochs"] for t in trials) == 2
    make_run(results, "i3d", 0)  # one real run, so the table is not empty
    rep = report.build_report(results)
    assert [(r.model, r.study) for r in rep.rows] == [("i3d", None)]
    study = trials[0].record.tags["study"]
    assert f": dry run study {study} trial " in rep.remarks() and "best trial of a --dry-run study" in rep.remarks()
    others = pd.read_csv(io.StringIO(report.format_others(rep.runs, "csv")), dtype=str)
    assert list(others[others.status == "dry run"].study) == [study]
    # the demo's explicit opt-in still shows it
    opted = report.build_report(results, include_dry_runs=True)
    assert [r.study for r in opted.rows if r.model == FAMILY] == [study]


def test_dry_run_trials_of_old_records_are_recognised_by_the_study_name(tmp_path):
    # Records written before trials carried the flag: the study name made by --dry-run ends in -dryrun.
    results = tmp_path / "results"
    tags = {"study": "x3d_xs-hyperband-store-dryrun", "trial": "1"}
    make_run(results, "x3d_xs", 0, tags=tags, where="tuning/x3d_xs-hyperband-store-dryrun/runs")
    make_run(results, "x3d_s", 0)
    rep = report.build_report(results)
    assert [r.label for r in rep.rows] == ["X3D-S"]
    assert ": dry run study x3d_xs-hyperband-store-dryrun trial 1: best trial of a --dry-run study" in rep.remarks()


# --------------------------------------------------------------------------- issue 11.2: thesis figures


def test_thesis_figures_are_top5_cited_by_authors_year_and_repository():
    thesis = [r for r in published_rows() if r["source"] == "seed_thesis"]
    assert len(thesis) == 7
    for row in thesis:
        # the thesis's table says "Top 2", its code computes calculate_accuracy(top_predictions, k=5)
        assert row["top2"] == "" and float(row["top5"]) > float(row["top1"])
        assert all(name in row["citation"] for name in ("Wølneberg", "Amlie", "2024", "wolneberg/master"))
        assert "top-5" in row["note"] and "k=5" in row["note"]
    for row in published_rows():
        assert "DESIGN.md" not in row["note"] + row["citation"] and "shared" not in row["note"]


@pytest.mark.parametrize("metrics", [("top1", "top2", "loss"), ("top1", "top2", "top5", "loss")])
def test_published_top5_never_shows_under_top2(seeded, metrics):
    results, runs = seeded
    rep = report.build_report(results, metrics=metrics, published=True)
    thesis = {r["model"]: r for r in published_rows() if r["source"] == "seed_thesis"}
    lines = rep.table("md").splitlines()
    titles = [t.strip() for t in lines[0].strip("|").split("|")]
    # --published adds the column of every metric the published figures report (here top5)
    assert titles == ["Model", "Subset", "n", "Top 1", "Top 2", "Top 5", "Loss",
                      "Top 1 [1]", "Top 5 [1]", "Top 1 [2]", "Top 5 [2]"]  # fmt: skip
    assert rep.metrics == ("top1", "top2", "top5", "loss")
    a3 = [t.strip() for t in next(ln for ln in lines if ln.startswith("| MoViNet-A3 |")).strip("|").split("|")]
    assert a3[titles.index("Top 5 [1]")] == thesis["movinet_a3"]["top5"]
    assert thesis["movinet_a3"]["top5"] not in a3[: titles.index("Top 1 [1]")]
    i3d = [t.strip() for t in next(ln for ln in lines if ln.startswith("| I3D |")).strip("|").split("|")]
    assert i3d[titles.index("Top 2")] == pm([r.metrics["test"]["top2"] for r in runs["i3d"]])
    if "top5" not in metrics:
        assert "--published added Top 5" in rep.remarks()
    else:
        assert "--published added" not in rep.remarks()
    df = pd.read_csv(io.StringIO(rep.table("csv")))
    assert "top2_pub_seed_thesis" not in df.columns and "top5_pub_seed_thesis" in df.columns


# --------------------------------------------------------------------------- issue 12.4 / 12.6: hostile records


def test_run_id_that_escapes_the_plots_folder_is_listed_apart(seeded, capsys):
    results, runs = seeded
    outside = results.parent / "abs-escaped"
    for i, run_id in enumerate(("../../escaped", str(outside), "a/b", ".hidden", "x" * 300)):
        rec = make_run(results, "i3d", 40 + i).to_dict() | {"run_id": run_id}
        write_json(results / "runs" / f"hostile{i}" / "metrics.json", rec)
        (results / "runs" / f"i3d-wlasl100_224-s{40 + i}" / "metrics.json").unlink()
        append_history(results / "runs" / f"hostile{i}", {"epoch": 0, "train_loss": 1.0})
    plots_dir = results / "p" / "plots"
    rc = report.main(["--results", str(results), "--plots", str(plots_dir)])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.split("\n\n")[0].splitlines()[2:] == expected_md_rows(runs)
    for i in range(5):
        assert f"runs/hostile{i}/metrics.json: unsafe run_id" in out
    assert not (results / "escaped.png").exists() and not (results / "p" / "escaped.png").exists()
    assert not outside.with_suffix(".png").exists()
    written = {p.relative_to(plots_dir).as_posix() for p in plots_dir.rglob("*.png")}
    assert {f"curves/{r.run_id}.png" for rs in runs.values() for r in rs} <= written
    assert all(p.startswith("curves/") or "/" not in p for p in written) and len(written) == 9 + 2


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("tags", None, "'tags' expected"),
        ("tags", [], "'tags' expected"),
        ("config.data", "oops", "config['data']"),
        ("config.train", [1], "config['train']"),
        ("metrics.val", [0.5], "metrics['val']"),
        ("metrics.test.top1", "0.5", "metrics['test']['top1']"),
        ("best", [], "'best' expected"),
        ("best.val_top1", "high", "best['val_top1']"),
        ("error", 5, "'error' expected"),
        ("env.num_classes", "100", "env['num_classes']"),
        ("tags.study", {"a": 1}, "tags['study']"),
    ],
)
def test_records_of_the_wrong_type_are_listed_apart_and_the_table_is_written(seeded, capsys, field, value, expected):
    results, runs = seeded
    data = make_run(results, "s3d", 50).to_dict()
    target, *path = field.split(".")
    holder = data
    for key in [target, *path][:-1]:
        holder = holder[key]
    holder[[target, *path][-1]] = value
    write_json(results / "runs" / "s3d-wlasl100_224-s50" / "metrics.json", data)
    rc = report.main(["--results", str(results), "--no-plots"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.split("\n\n")[0].splitlines()[2:] == expected_md_rows(runs)
    line = next(ln for ln in out.splitlines() if "s3d-wlasl100_224-s50" in ln)
    assert ": unreadable" in line and expected in line
    assert (results / "tables" / "summary.md").is_file()


def test_pipe_in_a_model_name_does_not_break_the_markdown_table(tmp_path):
    results = tmp_path / "results"
    piped = make_run(results, "x3d_m", 0).to_dict() | {"model": "my|net"}  # the run id stays a safe file name
    write_json(results / "runs" / piped["run_id"] / "metrics.json", piped)
    make_run(results, "x3d_s", 0, tags={"study": "a|b", "trial": "1"}, where="tuning/ab")
    md = report.build_report(results).table("md").splitlines()
    assert len(md) == 4
    columns = md[0].count(" | ")
    assert all(ln.replace("\\|", "").count(" | ") == columns for ln in (md[0], md[2], md[3]))
    assert any(ln.startswith("| my\\|net |") for ln in md)
    assert any("(study a\\|b, best trial 1)" in ln for ln in md)
    # LaTeX: braces and backslashes in a name are escaped in one pass, the row keeps its columns
    braced = make_run(results, "x3d_l", 0).to_dict() | {"model": "net{x}\\y"}
    write_json(results / "runs" / braced["run_id"] / "metrics.json", braced)
    tex = report.build_report(results).table("tex").splitlines()
    row = next(ln for ln in tex if ln.startswith("net"))
    assert row.startswith(r"net\{x\}\textbackslash{}y & 100 & 1 & ") and row.count(" & ") == tex[2].count(" & ")


def test_a_damaged_history_costs_its_curve_not_the_report(seeded, capsys):
    results, runs = seeded
    damaged = runs["s3d"][0]
    (results / "runs" / damaged.run_id / "history.csv").write_bytes(b"epoch,train_loss\n\xff\xfe\x00garbage\n")
    assert report.main(["--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.split("\n\n")[0].splitlines()[2:] == expected_md_rows(runs)
    assert f"{damaged.run_id}/history.csv: no curves drawn" in out
    assert "no curves drawn" in (results / "tables" / "summary.md").read_text()
    curves = {p.stem for p in (results / "plots" / "curves").glob("*.png")}
    assert curves == {r.run_id for rs in runs.values() for r in rs} - {damaged.run_id}


def test_the_global_report_groups_runs_by_plan_and_says_what_it_includes(tmp_path, capsys):
    """Issue 23: with no arguments the report mixed experiment runs and trials into one table, and a standalone run
    and an experiment's run of the same id counted once."""
    results = tmp_path / "results"
    make_run(results, "x3d_s", 0)
    make_run(results, "x3d_s", 1)
    make_run(results, "x3d_s", 0, tags={"plan": "e2e"}, where="experiments/e2e/runs")
    make_run(results, "x3d_s", 0, tags={"study": "st", "trial": "0"}, where="tuning/st/runs")
    rows = report.build_report(results).rows
    assert sorted((r.label, r.n) for r in rows) == [("X3D-S (study st, best trial 0)", 1), ("X3D-S [e2e]", 1),
                                                   ("X3D-S [runs/]", 2)]  # fmt: skip
    assert report.main(["--results", str(results), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "Included: 2 standalone runs; 1 run(s) of e2e; the best trial of 1 tuning study (0 other trials" in out
    one = report.build_report(results / "experiments" / "e2e").rows  # an experiment's own table names no plan
    assert [r.label for r in one] == ["X3D-S"]
