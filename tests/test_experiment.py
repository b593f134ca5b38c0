"""Experiment files without a cluster: the plan of the shipped files, --set, checks from types, the dry-run
script, hostile values in experiment jobs, the planner as a pure function of (plan, what exists, what is
queued), the executor against fake SLURM tools, the new step kinds, and a whole plan run here (--local)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils.cluster.runner import Facts, compress, execute, gather, plan_actions
from utils.cluster.slurm import JobState
from utils.experiment import apply_sets, load_experiment, make_plan

ROOT = Path(__file__).resolve().parents[1]
THESIS = ROOT / "experiments" / "thesis_wlasl100.yaml"
DEMO = ROOT / "experiments" / "demo.yaml"
REAL = ROOT / "experiments" / "wlasl_real.yaml"


def plan_of(path: Path, *sets: str):
    return make_plan(load_experiment(path, list(sets)))


def test_thesis_plan_is_the_recipe():
    plan = plan_of(THESIS)
    prep = {s.name: " ".join(s.tasks[0][1]) for s in plan.steps if s.kind == "preprocess"}
    assert prep["prep-wlasl100_172"] == (
        "python main/preprocess.py --metadata raw/WLASL_v0.3.json --videos raw/videos --nslt raw/nslt_100.json "
        "--frames 20 --size 172 --frame-step 2 --out data/wlasl100_172"
    )
    runs = {key: " ".join(argv) for s in plan.steps if s.kind == "train" for key, argv in s.tasks}
    assert list(runs) == [f"run:movinet_a{i}_stream-wlasl100_172-s0" for i in range(6)] + ["run:i3d-wlasl100_224-s0"]
    assert runs["run:movinet_a4_stream-wlasl100_172-s0"] == (
        "python main/train_movinet.py --variant a4 --data data/wlasl100_172 --results results/experiments/thesis_wlasl100 "
        "--seed 0 --tag plan=thesis_wlasl100 --frames 20 --size 172 --stream --optimizer rmsprop --momentum 0.9 "
        "--clipnorm 1.0 --lr 0.001 --batch-size 4 --dropout 0.1 --stochastic-depth 0.1 --unfreeze-last 45 "
        "--pretrained checkpoints/movinet_a4_stream --run-id movinet_a4_stream-wlasl100_172-s0"
    )
    assert "--unfreeze-last" not in runs["run:movinet_a3_stream-wlasl100_172-s0"]
    assert runs["run:i3d-wlasl100_224-s0"] == (
        "python main/train_i3d.py --data data/wlasl100_224 --results results/experiments/thesis_wlasl100 --seed 0 "
        "--tag plan=thesis_wlasl100 --frames 20 --size 224 --lr 0.001 --batch-size 2 --dropout 0.0 "
        "--pretrained checkpoints/i3d_rgb_imagenet_kinetics.h5 --run-id i3d-wlasl100_224-s0"
    )
    assert [(s.name, s.kind, s.after) for s in plan.steps] == [
        ("prep-wlasl100_172", "preprocess", ()),
        ("prep-wlasl100_224", "preprocess", ()),
        ("train-wlasl100_172", "train", (("afterok", "prep-wlasl100_172"),)),
        ("train-wlasl100_224", "train", (("afterok", "prep-wlasl100_224"),)),
        ("report", "report", (("afterany", "train-wlasl100_172"), ("afterany", "train-wlasl100_224"))),
    ]  # fmt: skip
    assert "thesis" in THESIS.read_text().splitlines()[0] and "rho 0.9" in THESIS.read_text()


def test_demo_plan_is_tiny_and_synthetic():
    plan = plan_of(DEMO)
    assert plan.exp.spec.stores["mini3_64"].synthetic.per_gloss == 12
    assert [v["model"] for v in plan.runs.values()] == ["movinet_a0", "x3d_xs"]
    assert all("--frames 8 --size 64" in " ".join(argv) for s in plan.steps if s.kind == "train" for _, argv in s.tasks)
    assert plan.exp.results == "demo/results"


def test_set_overrides_any_field():
    plan = plan_of(THESIS, "runs.*.seeds=2", "runs.0.models=[movinet_a0]", "stores.wlasl100_172.size=112",
                   "runs.1.options.epochs=1", "results=/tmp/x", "report.published=false")  # fmt: skip
    assert list(plan.runs) == ["movinet_a0_stream-wlasl100_172-s0", "movinet_a0_stream-wlasl100_172-s1",
                               "i3d-wlasl100_224-s0", "i3d-wlasl100_224-s1"]  # fmt: skip
    train = plan.step("train-wlasl100_172").tasks[0][1]
    assert "--size 112" in " ".join(plan.step("prep-wlasl100_172").tasks[0][1]) and train[train.index("--size") + 1] == "112"
    assert "--epochs" in plan.step("train-wlasl100_224").tasks[0][1] and plan.exp.results == "/tmp/x"
    assert plan.exp.spec.report.published is False
    assert apply_sets({"a": [1, 2]}, ["a.*=x"], "f") == {"a": ["x", "x"]}
    with pytest.raises(ValueError, match="key=value"):
        plan_of(THESIS, "runs")
    with pytest.raises(ValueError, match="not an index of a list of 2"):
        plan_of(THESIS, "runs.5.seeds=1")


@pytest.mark.parametrize("sets, message", [
    (["runs.0.models=[movinet_a9]"], r"runs\[0\]: unknown model\(s\) \['movinet_a9'\]"),
    (["runs.1.store=nowhere"], r"runs\[1\]: store 'nowhere' is not among the stores"),
    (["runs.0.per_model.movinet_a9={lr: 1}"], r"runs\[0\]\['per_model'\]: unknown model\(s\) \['movinet_a9'\]"),
    (["stores.wlasl100_224.size=null"], r"stores\['wlasl100_224'\]: `size` is missing"),
    (["stores.wlasl100_224.subset=100"], "give `subset` or `nslt`, not both"),
    (["runs.0.seeds=0"], r"runs\[0\]\['seeds'\] expected a whole number 1\.\.1000"),
    (["runs.0.seeds=two"], r"runs\[0\]\['seeds'\] expected a whole number or a list of a whole number"),
    (["runs.0.colour=red"], r"runs\[0\]: unknown key\(s\) \['colour'\]"),
    (["stores.wlasl100_172.kind=pose"], r"stores\['wlasl100_172'\]\['kind'\] expected one of 'clips', 'keypoints'"),
    (["report.formats=[md, pdf]"], r"report\['formats'\]\[1\] expected one of 'md', 'csv', 'tex'"),
    (["name=../x"], "is not a safe file name"),
    (["runs.1.models=[i3d, i3d]"], "planned twice"),
    (["runs.0.options.lr=\"1\\n--x\""], "one line"),
    (["runs.0.options.batchsize=4"], "unrecognized arguments: --batchsize 4"),
])  # fmt: skip
def test_bad_experiment_files_say_which_entry(sets, message):
    with pytest.raises((ValueError, KeyError, TypeError), match=message) as e:
        plan_of(THESIS, *sets)
    assert str(THESIS.relative_to(ROOT)) in str(e.value) or str(THESIS) in str(e.value) or "train_" in str(e.value)


def test_dry_run_prints_the_plan_and_a_runnable_sbatch_script(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "main" / "experiment.py"), "run", str(THESIS), "--dry-run", "--set",
                        f"results={tmp_path}/res"], cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    jobs = f"{tmp_path}/res/jobs/thesis_wlasl100"
    script = [line for line in r.stdout.splitlines() if "=$(sbatch" in line]
    kill = "--kill-on-invalid-dep=yes"
    assert script == [
        f"PREP_WLASL100_172=$(sbatch --parsable {jobs}-prep-wlasl100_172.slurm)",
        f"PREP_WLASL100_224=$(sbatch --parsable {jobs}-prep-wlasl100_224.slurm)",
        f"TRAIN_WLASL100_172=$(sbatch --parsable --array=0-5 --dependency=afterok:$PREP_WLASL100_172 {kill} {jobs}-train-wlasl100_172.slurm)",
        f"TRAIN_WLASL100_224=$(sbatch --parsable --array=0 --dependency=afterok:$PREP_WLASL100_224 {kill} {jobs}-train-wlasl100_224.slurm)",
        f"REPORT=$(sbatch --parsable --dependency=afterany:$TRAIN_WLASL100_172:$TRAIN_WLASL100_224 {jobs}-report.slurm)",
    ]  # fmt: skip
    assert "run:movinet_a4_stream-wlasl100_172-s0: python main/train_movinet.py --variant a4" in r.stdout
    # Issue 23: every missing input is named, the split file too.
    for missing in ("nslt raw/nslt_100.json not found", "metadata raw/WLASL_v0.3.json not found",
                    "--pretrained checkpoints/i3d_rgb_imagenet_kinetics.h5 not found"):  # fmt: skip
        assert f"warning: store wlasl100_172: {missing}" in r.stdout or missing in r.stdout, missing
    train = Path(f"{jobs}-train-wlasl100_172.slurm").read_text()
    assert "#SBATCH --array=0-5" in train and "#SBATCH --gres=gpu:1" in train and train.count("#TASK ") == 6
    assert not (tmp_path / "res" / "submitted.json").exists(), "a dry run recorded a submission"


def test_array_ranges_compress():
    assert compress([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and compress([3]) == "3"


HOSTILE = "a'$(touch PWNED1)`touch PWNED2`\"; touch PWNED3"


def test_experiment_jobs_keep_hostile_values_inert(tmp_path):
    """Values from an experiment file reach the job only as argv words (the #TASK lines, the exec line)."""
    from utils.cluster.runner import _render, profile_for

    exp_file = tmp_path / "evil.yaml"
    exp_file.write_text(json.dumps({
        "name": "evil", "results": str(tmp_path / "res"), "profile": str(ROOT / "slurm" / "local.toml"),
        # A store's number options are checked by main/preprocess.py's parser when the plan is made (issue 24);
        # its paths stay free text.
        "stores": {"s": {"metadata": HOSTILE, "videos": HOSTILE, "nslt": HOSTILE, "frames": 8, "size": 32,
                         "options": {"margin": 0.2}}},
        "runs": [{"models": ["x3d_xs"], "store": "s", "options": {"lr": 0.1, "workers": 0}, "pretrained": HOSTILE}],
    }))  # fmt: skip
    plan = make_plan(load_experiment(exp_file))
    profile = profile_for(plan)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{tmp_path}/args"\n')
    (venv / "bin" / "python").chmod(0o755)
    for step in plan.steps[:2]:
        text, _ = _render(plan, step, profile[step.kind])
        job = tmp_path / f"{step.name}.slurm"
        job.write_text(text)
        env = {"PATH": "/usr/bin:/bin", "SLR_VENV": str(venv), "SLURM_ARRAY_TASK_ID": "0"}
        r = subprocess.run(["bash", str(job)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert not list(tmp_path.rglob("PWNED*")), f"{step.name}: a value from the experiment file ran as code"
        args = (tmp_path / "args").read_text().splitlines()
        if step.shards:  # main/job.py gives a preprocessing job its CPUs as --workers
            assert args[1:3] == ["--workers", "1"]
            del args[1:3]
        argv = step.tasks[0][1]
        assert args[: len(argv) - 1] == list(argv[1:]), (args, argv)


# -- the planner: a pure function of (plan, what exists, what is queued) ---------------


MINI = """name: mini
profile: slurm/local.toml
stores:
  mini:
    synthetic: {{glosses: 2, per_gloss: 3}}
    metadata: {root}/raw/WLASL_v0.3.json
    videos: {root}/raw/videos
    subset: 2
    frames: 4
    size: 32
runs:
  - models: [x3d_xs, s3d]
    store: mini
    seeds: 2
"""


@pytest.fixture()
def mini(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    path = tmp_path / "mini.yaml"
    path.write_text(MINI.format(root=tmp_path))
    return make_plan(load_experiment(path, [f"results={tmp_path}/res", f"stores.mini.out={tmp_path}/store"]))


def js(state: str, reason: str = "") -> JobState:
    return JobState(state=state, reason=reason)


def brief(actions) -> list[tuple]:
    return [(a.kind, a.step, a.tasks, a.after, a.job) for a in actions if a.kind != "keep"]


def test_the_planner_submits_what_is_missing_after_what_it_needs(mini):
    runs = [f"run:{r}" for r in mini.runs]
    assert brief(plan_actions(mini, Facts())) == [
        ("submit", "prep-mini", (), (), ""),
        ("submit", "train-mini", (0, 1, 2, 3), (("afterok", "step:prep-mini"),), ""),
        ("submit", "report", (), (("afterany", "step:train-mini"),), "")]  # fmt: skip
    # Everything queued or running: nothing twice.
    jobs = {"store:mini": "101", **{k: f"102_{i}" for i, k in enumerate(runs)}, "report": "103"}
    states = {"101_0": js("RUNNING"), **{f"102_{i}": js("PENDING", "Dependency") for i in range(4)}, "103": js("PENDING")}
    assert brief(plan_actions(mini, Facts(set(), jobs, states))) == []
    # Store done, two runs completed, one running, one cancelled, the report finished: only the cancelled run goes,
    # and the new report waits for it and for the running one.
    states = {"101_0": js("COMPLETED"), "102_2": js("RUNNING"), "102_3": js("CANCELLED"), "103": js("COMPLETED")}
    facts = Facts({"store:mini", runs[0], runs[1]}, jobs, states)
    assert brief(plan_actions(mini, facts)) == [("submit", "train-mini", (3,), (), ""),
                                                ("submit", "report", (), (("afterany", "step:train-mini"),
                                                                          ("afterany", "102")), "")]  # fmt: skip


def test_a_failed_store_goes_again_with_what_depends_on_it(mini):
    """Issue 23: a failed preprocessing job left the training array in DependencyNeverSatisfied and `run` said
    "nothing to submit". Its output even says complete (--strict fails on a skip): the failed job decides."""
    runs = [f"run:{r}" for r in mini.runs]
    jobs = {"store:mini": "101", **{k: f"102_{i}" for i, k in enumerate(runs)}, "report": "103"}
    states = {"101_0": js("FAILED"), "101_1": js("COMPLETED"), **{f"102_{i}": js("PENDING", "DependencyNeverSatisfied")
              for i in range(4)}, "103": js("PENDING", "Dependency")}  # fmt: skip
    assert brief(plan_actions(mini, Facts({"store:mini"}, jobs, states))) == [
        ("submit", "prep-mini", (), (), ""),
        *[("cancel", "train-mini", (), (), f"102_{i}") for i in range(4)],
        ("submit", "train-mini", (0, 1, 2, 3), (("afterok", "step:prep-mini"),), ""),
        ("update", "report", (), (("afterany", "step:train-mini"),), "103")]  # fmt: skip


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
        "scontrol": f'echo "$*" >> "{tmp_path}/scontrol.log"; exit "$(cat "{tmp_path}/scontrol.rc" 2>/dev/null || echo 0)"',
        "scancel": f'echo "$*" >> "{tmp_path}/scancel.log"',
    }  # fmt: skip
    for name, body in tools.items():
        (bin_ / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_ / name).chmod(0o755)
    return bin_


def test_the_executor_sends_the_actions_and_checks_every_result(mini, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_cluster(tmp_path)}:{os.environ['PATH']}")
    results, log = tmp_path / "res", tmp_path / "sbatch.log"
    execute(mini, say=lambda _: None)
    assert [line.split(" ")[:-1] for line in log.read_text().splitlines()] == [
        ["--parsable"], ["--parsable", "--array=0-3", "--dependency=afterok:101", "--kill-on-invalid-dep=yes"],
        ["--parsable", "--dependency=afterany:102"]]  # fmt: skip
    assert (tmp_path / "raw" / "WLASL_v0.3.json").is_file(), "the synthetic set was not written"
    jobs = json.loads((results / "submitted.json").read_text())["jobs"]
    assert jobs == {"store:mini": "101", **{f"run:{r}": f"102_{i}" for i, r in enumerate(mini.runs)}, "report": "103"}
    # The report still waits; one run is cancelled: the run goes again, the report is made to wait for it too.
    (tmp_path / "squeue.txt").write_text("101_0|RUNNING|None\n102_0|PENDING|Dependency\n102_1|PENDING|Dependency\n"
                                         "102_2|PENDING|Dependency\n103|PENDING|Dependency\n")  # fmt: skip
    (tmp_path / "sacct.txt").write_text("102_3|CANCELLED by 0|0:15\n")
    log.write_text("")
    execute(mini, say=lambda _: None)
    assert log.read_text().splitlines() == [f"--parsable --array=3 --dependency=afterok:101 --kill-on-invalid-dep=yes "
                                            f"{results}/jobs/mini-train-mini.slurm"]  # fmt: skip
    assert (tmp_path / "scontrol.log").read_text().split() == ["update", "JobId=103", "Dependency=afterany:104:102"]
    # scontrol refuses the next update: said, not swallowed.
    (tmp_path / "sacct.txt").write_text("102_3|CANCELLED by 0|0:15\n104_3|FAILED|1:0\n")
    (tmp_path / "scontrol.rc").write_text("1")
    with pytest.raises(RuntimeError, match="scontrol refused updating job 103"):
        execute(mini, say=lambda _: None)


def test_submitted_files_pass_only_job_ids_on_and_the_old_layout_still_reads(mini):
    results = Path(mini.exp.results)
    results.mkdir(parents=True)
    (results / "submitted.json").write_text(json.dumps({
        "stores": {"mini": "12; touch PWNED"}, "runs": {"a": "13_1", "b": "JobId=1 Partition=x", "c": 5},
        "report": "14", "local": []}))  # fmt: skip
    facts = gather(mini, slurm_states=False)
    assert facts.jobs == {"run:a": "13_1", "report": "14"} and facts.local == {}


def test_demo_lives_where_it_is_told(tmp_path):
    from utils.demo import demo_plan

    plan = demo_plan(tmp_path / "d")
    assert plan.exp.results == f"{tmp_path}/d/results" and plan.outputs["store:mini3_64"] == f"{tmp_path}/d/data/mini3_64"
    assert plan.exp.spec.stores["mini3_64"].metadata == f"{tmp_path}/d/raw/WLASL_v0.3.json"
    assert all(f"--results {tmp_path}/d/results" in " ".join(argv) for _, argv in plan.step("train-mini3_64").tasks)


@pytest.mark.parametrize("path", [THESIS, DEMO, REAL], ids=lambda p: p.name)
def test_shipped_experiments_speak_the_real_command_lines(path):
    """Every command of the shipped files parses with the scripts' own parsers (no unknown option)."""
    import models  # noqa: F401
    from main.extract_keypoints import build_parser as keypoints_parser
    from main.preprocess import build_parser
    from main.render_keypoints import build_parser as render_parser
    from utils.train_cli import train_parser

    parsers = {"main/preprocess.py": build_parser, "main/extract_keypoints.py": keypoints_parser,
               "main/render_keypoints.py": render_parser}  # fmt: skip
    plan = plan_of(path)
    for step in plan.steps:
        for key, argv in step.tasks:
            if step.kind == "preprocess":
                extra = ["--workers", "1"] if argv[1] == "main/preprocess.py" else []
                assert str(parsers[argv[1]]().parse_args([*argv[2:], *extra]).out) == plan.outputs[key]
            elif step.kind == "train":
                family = argv[1].removeprefix("main/train_").removesuffix(".py")
                args = train_parser(family).parse_args(list(argv[2:]))
                assert (args.run_id, args.seed) == (key[4:], plan.runs[key[4:]]["seed"])


def test_options_on_by_default_are_switched_off_by_their_no_flag():
    """``tensorboard: false`` / ``resume: false`` in a run's options are ``--no-tensorboard`` / ``--no-resume``, not dropped."""
    from utils.train_cli import train_parser

    def x3d_argv(plan):
        return next(argv for _, argv in plan.step("train-mini3_64").tasks if "main/train_x3d.py" in argv)

    argv = x3d_argv(plan_of(DEMO, "runs.1.options.tensorboard=false", "runs.1.options.resume=false"))
    assert "--no-tensorboard" in argv and "--no-resume" in argv
    args = train_parser("x3d").parse_args(argv[argv.index("main/train_x3d.py") + 1 :])
    assert args.tensorboard is False and args.resume is False
    assert "--tensorboard" in x3d_argv(plan_of(DEMO, "runs.1.options.tensorboard=true"))


def test_a_keypoint_store_and_store_options(tmp_path):
    path = tmp_path / "pose.yaml"
    path.write_text(
        "stores:\n"
        "  wlasl100_pose: {kind: keypoints, metadata: raw/WLASL_v0.3.json, videos: raw/videos, subset: 100, max_frames: 64}\n"
        "  wlasl100_224: {metadata: raw/WLASL_v0.3.json, videos: raw/videos, subset: 100, size: 224, frames: 20,\n"
        "                 drop_duplicates: true, strict: true}\n"
        "runs:\n"
        "  - {models: [pose_transformer], store: wlasl100_pose}\n"
        "  - {models: [x3d_s], store: wlasl100_224}\n"
    )
    plan = plan_of(path)
    assert " ".join(plan.step("prep-wlasl100_pose").tasks[0][1]) == (
        "python main/extract_keypoints.py --metadata raw/WLASL_v0.3.json --videos raw/videos --subset 100 "
        "--max-frames 64 --out data/wlasl100_pose"
    )
    assert " ".join(plan.step("prep-wlasl100_224").tasks[0][1]).endswith("--drop-duplicates --strict --out data/wlasl100_224")
    pose = plan.step("train-wlasl100_pose").tasks[0][1]
    assert "--size" not in pose and "--frames" not in pose  # the model's own frame count
    path.write_text(path.read_text().replace("store: wlasl100_pose}", "store: wlasl100_224}"))
    with pytest.raises(ValueError, match="pose_transformer trains on a keypoints store, but store wlasl100_224"):
        plan_of(path)
    path.write_text("stores:\n  s: {kind: keypoints, metadata: m.json, videos: v, size: 224}\n"
                    "runs:\n  - {models: [pose_lstm], store: s}\n")
    with pytest.raises(ValueError, match=r"\['size'\] do not apply to a keypoints store"):
        plan_of(path)


def test_paths_name_a_folder_once_and_set_moves_every_use():
    plan = plan_of(REAL)
    real = "../shared/data/wlasl_real"
    prep = {s.name: s.tasks[0][1] for s in plan.steps if s.kind == "preprocess"}
    for store in ("prep-real_64", "prep-real_pose"):
        argv = prep[store]
        assert argv[argv.index("--videos") + 1] == f"{real}/videos"
        assert argv[argv.index("--metadata") + 1] == "../shared/data/wlasl/WLASL100_v0.3.json"
    assert [e.predict for e in plan.exp.spec.exports] == [f"{real}/videos/65506.mp4"]
    moved = plan_of(REAL, "paths.real=/data/my wlasl", "paths.metadata=raw/WLASL_v0.3.json")
    argv = next(s.tasks[0][1] for s in moved.steps if s.name == "prep-real_64")
    assert argv[argv.index("--videos") + 1] == "/data/my wlasl/videos"
    assert argv[argv.index("--metadata") + 1] == "raw/WLASL_v0.3.json"
    assert not any(real in " ".join(a) for s in moved.steps for _, a in s.tasks)


@pytest.mark.parametrize(
    "paths,message",
    [("[a, b]", "paths expected a mapping of names to paths"), ("{model: x}", "'model' is taken"),
     ("{real: 3}", "paths expected a mapping")],  # fmt: skip
)
def test_bad_paths_are_refused(tmp_path, paths, message):
    path = tmp_path / "p.yaml"
    path.write_text(f"paths: {paths}\nstores:\n  s: {{out: data/s}}\nruns:\n  - {{models: [x3d_xs], store: s}}\n")
    with pytest.raises(ValueError, match=message):
        plan_of(path)


def test_a_skeleton_store_is_drawn_after_its_keypoints_and_trains_rgb_models(tmp_path):
    plan = plan_of(REAL)
    step = plan.step("prep-real_skeleton")
    assert step.after == (("afterok", "prep-real_pose"),)
    assert " ".join(step.tasks[0][1]) == (
        "python main/render_keypoints.py --keypoints data/real_pose --out data/real_skeleton --frames 16 --size 64"
    )
    assert plan.step("train-real_skeleton").after == (("afterok", "prep-real_skeleton"),)
    path = tmp_path / "skel.yaml"
    base = "stores:\n  k: {kind: keypoints, metadata: m.json, videos: v}\n  c: {out: data/c}\n  s: SKEL\n"
    runs = "runs:\n  - {models: [x3d_xs], store: s}\n"
    for skeleton, message in [
        ("{kind: skeleton, source: c, frames: 8, size: 32}", r"expected the name of a keypoints store of this file \['k'\]"),
        ("{kind: skeleton, source: k}", "`frames` and `size` are required for a skeleton store"),
        ("{kind: skeleton, source: k, frames: 8, size: 32, videos: v}", r"drop \['videos'\]"),
        ("{out: data/s, source: k}", "`source` belongs to a skeleton store"),
    ]:
        path.write_text(base.replace("SKEL", skeleton) + runs)
        with pytest.raises(ValueError, match=message):
            plan_of(path)
    path.write_text(base.replace("SKEL", "{kind: skeleton, source: k, frames: 8, size: 32}")
                    + "runs:\n  - {models: [pose_lstm], store: s}\n")  # fmt: skip
    with pytest.raises(ValueError, match="pose_lstm trains on a keypoints store, but store s is a skeleton store"):
        plan_of(path)


# -- tuning, ensembles and exports ---------------------------------------------------


STEPS = """
tuning:
  - {model: x3d_xs, store: mini, tuner: bayesian, max_trials: 2, max_epochs: 1, options: {batch_size: 2, workers: 0}}
ensembles:
  - name: x3d_pair
    members: [{model: x3d_xs, store: mini, seed: best}, {model: s3d, store: mini, seed: 0}]
exports:
  - {name: x3d_onnx, run: {model: x3d_xs, store: mini}, format: onnx, predict: VIDEO, options: {top: 2}}
"""


def test_tuning_ensembles_and_exports_are_steps_with_their_dependencies(mini, tmp_path):
    path = tmp_path / "steps.yaml"
    path.write_text(MINI.format(root=tmp_path) + STEPS.replace("VIDEO", f"{tmp_path}/raw/videos/90004.mp4"))
    plan = make_plan(load_experiment(path, [f"results={tmp_path}/res"]))
    deps = {s.name: s.after for s in plan.steps}
    study = "x3d_xs-bayesian-mini"  # utils.tuning.study.study_name, the one rule
    assert deps == {"prep-mini": (), "train-mini": (("afterok", "prep-mini"),), f"tune-{study}": (("afterok", "prep-mini"),),
                    "ensemble-x3d_pair": (("afterany", "train-mini"),), "export-x3d_onnx": (("afterany", "train-mini"),),
                    "report": tuple(("afterany", s) for s in ("train-mini", f"tune-{study}", "ensemble-x3d_pair",
                                                              "export-x3d_onnx"))}  # fmt: skip
    tune = " ".join(plan.step(f"tune-{study}").tasks[0][1])
    assert tune == (f"python main/tune_x3d.py --tuner bayesian --variant xs --data data/mini --results {tmp_path}/res "
                    "--frames 4 --size 32 --objective val_accuracy --max-trials 2 --max-epochs 1 --batch-size 2 "
                    f"--workers 0 --study {study}")  # fmt: skip
    assert plan.step("ensemble-x3d_pair").tasks[0][1][2:] == ("step", f"{tmp_path}/res/experiment.yaml", "ensemble:x3d_pair")
    assert plan.step("export-x3d_onnx").kind == "export" and plan.outputs["ensemble:x3d_pair"] == f"{tmp_path}/res/runs/x3d_pair"
    for old, new, message in (("seed: 0}]", "seed: 7}]", r"ensembles\[0\]: no planned run of s3d on mini with seed 7"),
                              ("tuner: bayesian", "tuner: grid", r"tuning\[0\]\['tuner'\] expected one of"),
                              ("format: onnx", "format: pt", r"exports\[0\]\['format'\] expected one of 'onnx', 'tflite'"),
                              ("max_epochs: 1,", "max_epochs: 1, objective: val_f1,", "argument --objective: invalid choice")):  # fmt: skip
        path.write_text(MINI.format(root=tmp_path) + STEPS.replace(old, new))
        with pytest.raises((ValueError, TypeError), match=message):
            make_plan(load_experiment(path))


@pytest.mark.slow
def test_a_plan_with_every_step_kind_runs_here(tmp_path, monkeypatch):
    """Stores -> two models (x3d_xs two seeds, s3d) -> a Bayesian study of two trials -> the best x3d_xs seed fused
    with s3d -> the best x3d_xs exported to ONNX and asked about one raw video -> the report, with --local."""
    monkeypatch.chdir(ROOT)
    path = tmp_path / "every.yaml"
    runs = ("runs:\n  - {models: [x3d_xs], store: mini, seeds: 2, options: {epochs: 1, batch_size: 2, workers: 0}}\n"
            "  - {models: [s3d], store: mini, seeds: [0], options: {epochs: 1, batch_size: 2, workers: 0}}\n")  # fmt: skip
    # Enough training clips for every batch size the study may try (4, 8, 16), and 8 frames for S3D.
    mini = MINI.format(root=tmp_path).replace("per_gloss: 3", "per_gloss: 14").replace("frames: 4", "frames: 8")
    path.write_text(mini[: mini.index("runs:")] + runs + STEPS.replace("VIDEO", f"{tmp_path}/raw/videos/90004.mp4"))
    r = subprocess.run([sys.executable, "main/experiment.py", "run", str(path), "--local", "--workers", "1", "--set",
                        f"results={tmp_path}/res", "--set", f"stores.mini.out={tmp_path}/store"], cwd=ROOT,
                       capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    res = tmp_path / "res"
    assert (res / "tuning" / "x3d_xs-bayesian-store" / "best.json").is_file()  # named after the store's folder
    ensemble = json.loads((res / "runs" / "x3d_pair" / "metrics.json").read_text())
    assert ensemble["status"] == "completed" and len(ensemble["tags"]["members"]) == 2
    export = json.loads((res / "exports" / "x3d_onnx" / "export.json").read_text())
    assert Path(export["export"], "model.onnx").is_file() and "1." in (res / "exports" / "x3d_onnx" / "prediction.txt").read_text()
    status = subprocess.run([sys.executable, "main/experiment.py", "status", str(path), "--set", f"results={res}", "--set",
                             f"stores.mini.out={tmp_path}/store"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert status.returncode == 0 and "failed" not in status.stdout and status.stdout.count("completed") >= 6, status.stdout
    summary = (res / "tables" / "summary.md").read_text()
    assert "X3D-XS" in summary and "Ensemble" in summary and "bayesian" in summary, summary


def test_a_run_id_of_another_plan_in_the_same_folder_is_refused_before_submitting(mini, tmp_path):
    """Issue 23: a sweep's status showed FAILED beside another run's top-1 (two plans, one run id, one folder)."""
    from utils.cluster.runner import check_inputs

    rid = next(iter(mini.runs))
    run_dir = Path(mini.outputs[f"run:{rid}"])
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"tags": {"plan": "other"}}))
    facts = gather(mini, slurm_states=False)
    assert any(f"run {rid}: {run_dir} belongs to plan other" in m for m in check_inputs(mini, facts, create=False))
    (run_dir / "config.json").write_text(json.dumps({"tags": {}}))
    assert any("belongs to a standalone run" in m for m in check_inputs(mini, facts, create=False))
    (run_dir / "config.json").write_text(json.dumps({"tags": {"plan": "mini"}}))  # its own: resumes
    assert not any("belongs to" in m for m in check_inputs(mini, facts, create=False))
