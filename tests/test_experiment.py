"""Experiment files without a cluster: the plan of the shipped files, --set, checks, the dry-run
script, hostile values in experiment jobs, and the resubmission logic against fake SLURM tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils.cluster.experiment import apply_sets, load_experiment, make_plan
from utils.cluster.experiment_run import compress, profile_for, render_stage, submit_plan

ROOT = Path(__file__).resolve().parents[1]
THESIS = ROOT / "experiments" / "thesis_wlasl100.yaml"
DEMO = ROOT / "experiments" / "demo.yaml"


def plan_of(path: Path, *sets: str):
    return make_plan(load_experiment(path, list(sets)))


def test_thesis_plan_is_the_recipe():
    plan = plan_of(THESIS)
    assert [s.name for s in plan.stores] == ["wlasl100_172", "wlasl100_224"]
    assert " ".join(plan.stores[0].argv) == (
        "python main/preprocess.py --metadata raw/WLASL_v0.3.json --videos raw/videos --nslt raw/nslt_100.json "
        "--frames 20 --size 172 --frame-step 2 --out data/wlasl100_172"
    )
    runs = {r.run_id: " ".join(r.argv) for r in plan.runs}
    assert list(runs) == [f"movinet_a{i}_stream-wlasl100_172-s0" for i in range(6)] + ["i3d-wlasl100_224-s0"]
    assert runs["movinet_a4_stream-wlasl100_172-s0"] == (
        "python main/train_movinet.py --variant a4 --data data/wlasl100_172 --results results/experiments/thesis_wlasl100 "
        "--seed 0 --run-id movinet_a4_stream-wlasl100_172-s0 --frames 20 --size 172 --stream --optimizer rmsprop "
        "--momentum 0.9 --clipnorm 1.0 --lr 0.001 --batch-size 4 --dropout 0.1 --stochastic-depth 0.1 "
        "--unfreeze-last 45 --pretrained checkpoints/movinet_a4_stream"
    )
    assert "--unfreeze-last" not in runs["movinet_a3_stream-wlasl100_172-s0"]
    assert runs["i3d-wlasl100_224-s0"] == (
        "python main/train_i3d.py --data data/wlasl100_224 --results results/experiments/thesis_wlasl100 --seed 0 "
        "--run-id i3d-wlasl100_224-s0 --frames 20 --size 224 --lr 0.001 --batch-size 2 --dropout 0.0 "
        "--pretrained checkpoints/i3d_rgb_imagenet_kinetics.h5"
    )
    stages = [(s.name, s.kind, s.after, s.dependency) for s in plan.stages]
    assert stages == [
        ("prep-wlasl100_172", "preprocess", (), "afterok"),
        ("prep-wlasl100_224", "preprocess", (), "afterok"),
        ("train-wlasl100_172", "train", ("prep-wlasl100_172",), "afterok"),
        ("train-wlasl100_224", "train", ("prep-wlasl100_224",), "afterok"),
        ("report", "report", ("train-wlasl100_172", "train-wlasl100_224"), "afterany"),
    ]
    assert "thesis" in THESIS.read_text().splitlines()[0] and "rho 0.9" in THESIS.read_text()


def test_demo_plan_is_tiny_and_synthetic():
    plan = plan_of(DEMO)
    assert plan.stores[0].synthetic == {"glosses": 3, "per_gloss": 12}
    assert [r.model for r in plan.runs] == ["movinet_a0", "x3d_xs"]
    assert all("--frames 8 --size 64" in " ".join(r.argv) for r in plan.runs)
    assert plan.exp.results == "demo/results"


def test_set_overrides_any_field():
    plan = plan_of(THESIS, "runs.*.seeds=2", "runs.0.models=[movinet_a0]", "stores.wlasl100_172.size=112",
                   "runs.1.options.epochs=1", "results=/tmp/x", "report.published=false")  # fmt: skip
    assert [r.run_id for r in plan.runs] == ["movinet_a0_stream-wlasl100_172-s0", "movinet_a0_stream-wlasl100_172-s1",
                                             "i3d-wlasl100_224-s0", "i3d-wlasl100_224-s1"]  # fmt: skip
    assert "--size 112" in " ".join(plan.stores[0].argv) and plan.runs[0].argv[plan.runs[0].argv.index("--size") + 1] == "112"
    assert "--epochs" in plan.runs[2].argv and plan.exp.results == "/tmp/x" and plan.exp.report["published"] is False
    assert apply_sets({"a": [1, 2]}, ["a.*=x"], "f") == {"a": ["x", "x"]}
    with pytest.raises(ValueError, match="key=value"):
        plan_of(THESIS, "runs")
    with pytest.raises(ValueError, match="not an index of a list of 2"):
        plan_of(THESIS, "runs.5.seeds=1")


@pytest.mark.parametrize("sets, message", [
    (["runs.0.models=[movinet_a9]"], r"runs\[0\]: unknown model\(s\) \['movinet_a9'\]"),
    (["runs.1.store=nowhere"], r"runs\[1\]: store 'nowhere' is not among the stores"),
    (["runs.0.per_model.movinet_a9={lr: 1}"], r"runs\[0\].per_model: unknown model\(s\) \['movinet_a9'\]"),
    (["stores.wlasl100_224.size=null"], r"stores.wlasl100_224: `size` is missing"),
    (["stores.wlasl100_224.subset=100"], "give `subset` or `nslt`, not both"),
    (["runs.0.seeds=0"], r"runs\[0\].seeds: expected an integer >= 1"),
    (["runs.0.colour=red"], r"runs\[0\]: unknown key\(s\) \['colour'\]"),
    (["name=../x"], "name expected 1-64 letters"),
    (["runs.1.models=[i3d, i3d]"], "planned twice"),
    (["runs.0.options.lr=\"1\\n--x\""], "one line"),
])  # fmt: skip
def test_bad_experiment_files_say_which_entry(sets, message):
    with pytest.raises(ValueError, match=message) as e:
        plan_of(THESIS, *sets)
    assert str(THESIS.relative_to(ROOT)) in str(e.value) or str(THESIS) in str(e.value)


def test_dry_run_prints_the_plan_and_a_runnable_sbatch_script(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "main" / "experiment.py"), "run", str(THESIS), "--dry-run", "--set",
                        f"results={tmp_path}/res"], cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    jobs = f"{tmp_path}/res/jobs/thesis_wlasl100"
    script = [line for line in r.stdout.splitlines() if "=$(sbatch" in line]
    assert script == [
        f"PREP_wlasl100_172=$(sbatch --parsable {jobs}-prep-wlasl100_172.slurm)",
        f"PREP_wlasl100_224=$(sbatch --parsable {jobs}-prep-wlasl100_224.slurm)",
        f"TRAIN_wlasl100_172=$(sbatch --parsable --array=0-5 --dependency=afterok:$PREP_wlasl100_172 {jobs}-train-wlasl100_172.slurm)",
        f"TRAIN_wlasl100_224=$(sbatch --parsable --array=0 --dependency=afterok:$PREP_wlasl100_224 {jobs}-train-wlasl100_224.slurm)",
        f"REPORT=$(sbatch --parsable --dependency=afterany:$TRAIN_wlasl100_172:$TRAIN_wlasl100_224 {jobs}-report.slurm)",
    ]  # fmt: skip
    assert "run movinet_a4_stream-wlasl100_172-s0: python main/train_movinet.py --variant a4" in r.stdout
    assert "warning: run i3d-wlasl100_224-s0: --pretrained checkpoints/i3d_rgb_imagenet_kinetics.h5 not found" in r.stdout
    train = Path(f"{jobs}-train-wlasl100_172.slurm").read_text()
    assert "#SBATCH --array=0-5" in train and "#SBATCH --gres=gpu:1" in train
    assert not (tmp_path / "res" / "submitted.json").exists(), "a dry run recorded a submission"


def test_array_ranges_compress():
    assert compress([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and compress([3]) == "3"


HOSTILE = "a'$(touch PWNED1)`touch PWNED2`\"; touch PWNED3"


def test_experiment_jobs_keep_hostile_values_inert(tmp_path):
    """Values from an experiment file reach the job's shell only as quoted words."""
    exp_file = tmp_path / "evil.yaml"
    exp_file.write_text(json.dumps({
        "name": "evil", "results": str(tmp_path / "res"), "profile": str(ROOT / "slurm" / "local.toml"),
        "stores": {"s": {"metadata": HOSTILE, "videos": HOSTILE, "subset": 3, "frames": 8, "size": 32,
                         "options": {"margin": HOSTILE}}},
        "runs": [{"models": ["x3d_xs"], "store": "s", "options": {"lr": HOSTILE, "note": "$(touch PWNED4)"},
                  "pretrained": HOSTILE}],
    }))  # fmt: skip
    plan = make_plan(load_experiment(exp_file))
    profile = profile_for(plan)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export PATH="{venv}/bin:$PATH"\n')
    (venv / "bin" / "python").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{tmp_path}/args"\n')
    (venv / "bin" / "python").chmod(0o755)
    for stage in plan.stages[:2]:
        text, _ = render_stage(plan, stage, profile[stage.kind])
        job = tmp_path / f"{stage.name}.slurm"
        job.write_text(text)
        env = {"PATH": "/usr/bin:/bin", "SLR_VENV": str(venv), "SLURM_ARRAY_TASK_ID": "0"}
        r = subprocess.run(["bash", str(job)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert not list(tmp_path.rglob("PWNED*")), f"{stage.name}: a value from the experiment file ran as code"
        args = (tmp_path / "args").read_text().splitlines()
        argv = next(a for _, a in stage.tasks)
        assert args[: len(argv) - 1] == list(argv[1:]), (args, argv)


# -- resubmission: what `run` submits again, against fake SLURM tools ---------------


def fake_cluster(tmp_path: Path) -> Path:
    """sbatch (ids 101, 102, ... and an argv log), sinfo (one 2-CPU node), squeue/sacct reading files."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (tmp_path / "next_id").write_text("101")
    tools = {
        "sbatch": f'id=$(cat "{tmp_path}/next_id"); echo $((id + 1)) > "{tmp_path}/next_id"\n'
                  f'echo "$*" >> "{tmp_path}/sbatch.log"\necho "$id"',
        "sinfo": "echo 'vm|2|21694|(null)'",
        "squeue": f'cat "{tmp_path}/squeue.txt" 2>/dev/null || true',
        "sacct": f'cat "{tmp_path}/sacct.txt" 2>/dev/null || true',
        "scontrol": f'echo "$*" >> "{tmp_path}/scontrol.log"',
    }  # fmt: skip
    for name, body in tools.items():
        (bin_ / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_ / name).chmod(0o755)
    return bin_


def _complete_run(results: Path, run_id: str) -> None:
    from tests.sweep_standin import completed_record
    from utils.core.records import write_record

    write_record(results / "runs" / run_id, completed_record({"run_id": run_id, "model": {"name": "x3d_xs"}}, 0.5, 1))


def test_run_again_submits_only_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_cluster(tmp_path)}:{os.environ['PATH']}")
    results = tmp_path / "res"
    sets = [f"results={results}", f"stores.mini.out={tmp_path}/store"]
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(
        "name: again\nprofile: slurm/local.toml\nstores:\n  mini:\n    synthetic: {glosses: 2, per_gloss: 3}\n"
        f"    metadata: {tmp_path}/raw/WLASL_v0.3.json\n    videos: {tmp_path}/raw/videos\n    subset: 2\n"
        "    frames: 4\n    size: 32\nruns:\n  - models: [x3d_xs, s3d]\n    store: mini\n    seeds: 2\n"
    )
    monkeypatch.chdir(ROOT)
    plan = make_plan(load_experiment(exp_file, sets))
    ids = [r.run_id for r in plan.runs]
    log = tmp_path / "sbatch.log"
    said: list[str] = []
    submit_plan(plan, say=said.append)
    first = log.read_text().splitlines()
    assert [line.split(" ")[:-1] for line in first] == [
        ["--parsable"], ["--parsable", "--array=0-3", "--dependency=afterok:101"],
        ["--parsable", "--dependency=afterany:102"]]  # fmt: skip
    assert (tmp_path / "raw" / "WLASL_v0.3.json").is_file(), "the synthetic set was not written"
    assert json.loads((results / "submitted.json").read_text())["runs"] == {i: f"102_{n}" for n, i in enumerate(ids)}

    # Everything still queued or running: nothing is submitted twice.
    (tmp_path / "squeue.txt").write_text("101_0|RUNNING|None\n102_0|PENDING|Dependency\n102_1|PENDING|Dependency\n"
                                         "102_2|PENDING|Dependency\n102_3|PENDING|Dependency\n103|PENDING|Dependency\n")  # fmt: skip
    log.write_text("")
    submit_plan(plan, say=said.append)
    assert log.read_text() == "" and any("still queued" in s for s in said)

    # Store done, two runs completed, one running, one cancelled, the report finished: only the cancelled run goes again.
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "prepare_report.json").write_text('{"complete": true}')
    _complete_run(results, ids[0])
    _complete_run(results, ids[1])
    (tmp_path / "squeue.txt").write_text("102_2|RUNNING|None\n")
    (tmp_path / "sacct.txt").write_text("101_0|COMPLETED|0:0\n102_0|COMPLETED|0:0\n102_1|COMPLETED|0:0\n"
                                        "102_3|CANCELLED by 0|0:15\n103|COMPLETED|0:0\n")  # fmt: skip
    submit_plan(plan, say=said.append)
    assert log.read_text().splitlines() == [f"--parsable --array=3 {results}/jobs/again-train-mini.slurm",
                                            f"--parsable --dependency=afterany:102:104 {results}/jobs/again-report.slurm"]  # fmt: skip
    state = json.loads((results / "submitted.json").read_text())
    assert state["runs"][ids[3]] == "104_3" and state["runs"][ids[2]] == "102_2" and state["report"] == "105"


def test_a_crafted_submitted_file_passes_only_job_ids_on(tmp_path):
    plan = plan_of(DEMO, f"results={tmp_path}")
    (tmp_path / "submitted.json").write_text(json.dumps({
        "stores": {"mini3_64": "12; touch PWNED"}, "runs": {"a": "13_1", "b": "JobId=1 Partition=x", "c": 5},
        "report": "--help", "local": []}))  # fmt: skip
    from utils.cluster.experiment_files import submitted

    assert submitted(plan) == {"stores": {}, "runs": {"a": "13_1"}, "report": None}


def test_demo_lives_where_it_is_told(tmp_path):
    from utils.demo import demo_plan

    plan = demo_plan(tmp_path / "d")
    assert plan.exp.results == f"{tmp_path}/d/results" and plan.stores[0].out == f"{tmp_path}/d/data/mini3_64"
    assert plan.stores[0].metadata == f"{tmp_path}/d/raw/WLASL_v0.3.json" and plan.stores[0].synthetic
    assert all(f"--results {tmp_path}/d/results" in " ".join(r.argv) for r in plan.runs)


@pytest.mark.parametrize("path", [THESIS, DEMO], ids=lambda p: p.name)
def test_shipped_experiments_speak_the_real_command_lines(path):
    """Every command of the shipped files parses with the scripts' own parsers (no unknown option)."""
    import models  # noqa: F401
    from main.preprocess import build_parser
    from utils.train_cli import train_parser

    plan = plan_of(path)
    for store in plan.stores:
        args = build_parser().parse_args([*store.argv[2:], "--workers", "1", "--no-progress"])
        assert str(args.out) == store.out
    for run in plan.runs:
        family = run.argv[1].removeprefix("main/train_").removesuffix(".py")
        args = train_parser(family).parse_args(list(run.argv[2:]))
        assert (args.run_id, args.seed) == (run.run_id, run.seed)
        assert args.data == next(s.out for s in plan.stores if s.name == run.store)


def test_options_on_by_default_are_switched_off_by_their_no_flag():
    """``tensorboard: false`` / ``resume: false`` in a run's options are ``--no-tensorboard`` / ``--no-resume``, not dropped."""
    from utils.train_cli import train_parser

    plan = plan_of(DEMO, "runs.1.options.tensorboard=false", "runs.1.options.resume=false")
    argv = list(plan.runs[1].argv)
    assert "--no-tensorboard" in argv and "--no-resume" in argv
    args = train_parser("x3d").parse_args(argv[2:])
    assert args.tensorboard is False and args.resume is False
    assert "--tensorboard" in plan_of(DEMO, "runs.1.options.tensorboard=true").runs[1].argv


def test_a_keypoint_store_is_extracted_and_feeds_the_pose_models(tmp_path):
    path = tmp_path / "pose.yaml"
    path.write_text(
        "stores:\n"
        "  wlasl100_pose: {kind: keypoints, metadata: raw/WLASL_v0.3.json, videos: raw/videos, subset: 100, max_frames: 64}\n"
        "  wlasl100_224: {metadata: raw/WLASL_v0.3.json, videos: raw/videos, subset: 100, size: 224, frames: 20}\n"
        "runs:\n"
        "  - {models: [pose_transformer], store: wlasl100_pose}\n"
        "  - {models: [x3d_s], store: wlasl100_224}\n"
    )
    plan = plan_of(path)
    assert " ".join(plan.stores[0].argv) == (
        "python main/extract_keypoints.py --metadata raw/WLASL_v0.3.json --videos raw/videos --subset 100 "
        "--max-frames 64 --out data/wlasl100_pose"
    )
    pose = next(r for r in plan.runs if r.model == "pose_transformer")
    assert "--size" not in pose.argv and "--frames" not in pose.argv  # the model's own frame count
    path.write_text(path.read_text().replace("store: wlasl100_pose}", "store: wlasl100_224}"))
    with pytest.raises(ValueError, match="pose_transformer trains on a keypoints store, but store wlasl100_224"):
        plan_of(path)
    path.write_text("stores:\n  s: {kind: keypoints, metadata: m.json, videos: v, size: 224}\n"
                    "runs:\n  - {models: [pose_lstm], store: s}\n")
    with pytest.raises(ValueError, match=r"\['size'\] do not apply to a keypoints store"):
        plan_of(path)
