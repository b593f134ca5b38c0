"""The one cluster layer: the profile as #SBATCH lines and submitit parameters side by side,
one quoting rule on every path, hostile values, lazy job lists, trailing arguments."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from utils.cluster.jobs import check_dir, job_models, render_all
from utils.cluster.profile import RESOURCES, SlurmConfig, load_profile, parse_time_min, profile_from_dict, valid_keys
from utils.cluster.sbatch import render_sbatch
from utils.cluster.shell import check_name
from utils.cluster.sweep import make_executor, plan_sweep, sweep_status

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = ["a'$(touch PWNED1)", "`touch PWNED2`", "'; touch PWNED3; '", '"; touch PWNED4; "', "cuda/12.4; touch PWNED5"]

FULL = SlurmConfig(partition="gpu", account="proj_42", qos="normal", gpus="gpu:a100:1", constraint="a100|h100",
                   nodes=2, ntasks_per_node=4, cpus_per_task=8, mem_gb=32, time_min=600, mail_user="me@example.org",
                   mail_type="END,FAIL", signal_s=300, extra_directives=("--exclusive",))  # fmt: skip


def _fake_tools(tmp_path: Path, *tools: str) -> Path:
    """Fake commands that log each argument on its own line to <tmp>/<tool>.args."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    for tool in tools:
        (bin_ / tool).write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done >> "{tmp_path}/{tool}.args"\n')
        (bin_ / tool).chmod(0o755)
    return bin_


def _submitit_script(tmp_path: Path, cfg: SlurmConfig, job_name: str = "sweep-x") -> str:
    ex = make_executor("slurm", tmp_path / "sweep" / "submitit", cfg, timeout_min=None, job_name=job_name)
    return ex._make_submission_file_text("true", "uid")  # the text submitit hands to sbatch


# -- the two paths, side by side ---------------------------------------------------


def test_sbatch_lines_and_submitit_parameters_say_the_same(tmp_path):
    """Every resource of the profile reaches submitit's sbatch text exactly as our job files write it."""
    ours = {line for line in render_sbatch(FULL, "true", job_name="x").splitlines() if line.startswith("#SBATCH")}
    theirs = {line for line in _submitit_script(tmp_path, FULL).splitlines() if line.startswith("#SBATCH")}
    for r in RESOURCES:
        mine = [line for line in ours if line.startswith(f"#SBATCH --{r.sbatch}=")]
        assert len(mine) == 1, (r.field, ours)
        assert mine[0] in theirs, f"{r.field}: job files say {mine[0]!r}, submitit says {sorted(theirs)}"
    assert "#SBATCH --exclusive" in ours and "#SBATCH --exclusive" in theirs
    assert {r.field for r in RESOURCES} <= set(SlurmConfig.__dataclass_fields__)


@pytest.mark.parametrize("value", HOSTILE)
def test_submitit_jobs_keep_hostile_env_values_and_modules_inert(tmp_path, value):
    """Found in review: submitit's setup quoted env values with repr and module names not at all."""
    cfg = SlurmConfig(env=(("V", value),), modules=(value,))
    script = tmp_path / "job.sh"
    script.write_text(_submitit_script(tmp_path, cfg) + 'printf "%s" "$V" > "$OUT"\n')
    bin_ = _fake_tools(tmp_path, "srun", "module")
    r = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                       env={"PATH": f"{bin_}:/usr/bin:/bin", "OUT": str(tmp_path / "v.out")})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert not list(tmp_path.rglob("PWNED*")), "a profile value ran as shell code in a submitit job"
    assert (tmp_path / "v.out").read_text() == value
    assert (tmp_path / "module.args").read_text().splitlines() == ["load", value]


@pytest.mark.parametrize("name", ["x\ntouch PWNED", "x'\ntouch PWNED\n#'", "../../evil", "a/b", "..", "", "-x", "a b"])
def test_hostile_sweep_names_are_refused(tmp_path, name):
    """Found in review: --name reached the job script unchecked (newline -> a shell line; ../ left results/sweeps)."""
    with pytest.raises(ValueError, match="letters, digits"):
        plan_sweep(["x3d_xs"], 1, name=name, results=str(tmp_path))
    r = subprocess.run([sys.executable, "main/sweep.py", "--models", "x3d_xs", f"--name={name}", "--results",
                        str(tmp_path / "results"), "--cluster", "local"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("error: sweep name") and r.stderr.count("\n") == 1, r.stderr
    assert not list(tmp_path.rglob("*")), "a refused sweep left files behind"


def test_submitit_job_names_cannot_add_script_lines(tmp_path):
    script = _submitit_script(tmp_path, SlurmConfig(), job_name="x'\ntouch PWNED\n#'")
    assert "touch PWNED" not in script
    assert [line for line in script.splitlines() if "job-name" in line] == ["#SBATCH --job-name=x_touch_PWNED"]


def test_submitit_folder_with_a_newline_is_refused(tmp_path):
    with pytest.raises(ValueError, match="one line"):
        make_executor("slurm", tmp_path / "a\nb", SlurmConfig(), timeout_min=5, job_name="x")


class _Evil:
    """Unpickling this creates a file: what a crafted results folder could plant."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("cluster", ["local", "slurm"])
def test_sweep_status_never_unpickles(tmp_path, cluster):
    """Found in review: `sweep.py status` unpickled whatever file sweep.json's `folder` named."""
    evil = pickle.dumps(_Evil(str(tmp_path / "PWNED")))
    sweep_dir = tmp_path / "results" / "sweeps" / "s"
    for folder in (tmp_path / "elsewhere", sweep_dir / "submitit"):  # the named folder and our own
        folder.mkdir(parents=True)
        for name in ("4242_0_result.pkl", "4242_submitted.pkl", "4242_0_submitted.pkl"):
            (folder / name).write_bytes(evil)
    task = {"model": "x3d_xs", "seed": 0, "run_id": "r0", "config": {}, "job_id": "4242"}
    sweep = {"name": "s", "cluster": cluster, "folder": str(tmp_path / "elsewhere"), "results": "/", "tasks": [task]}
    (sweep_dir / "sweep.json").write_text(json.dumps(sweep))
    [status] = sweep_status(sweep_dir / "sweep.json")
    assert not (tmp_path / "PWNED").exists()
    assert status.state in ("FAILED", "UNKNOWN") and "no run record" in status.reason
    assert status.log.endswith("4242_0_log.err") and str(sweep_dir / "submitit") in status.log


def test_names_are_checked_in_one_place():
    assert check_name("wlasl100_v2.1", "x") == "wlasl100_v2.1"
    for bad in ("a..b", "x" * 65, "é"):
        with pytest.raises(ValueError):
            check_name(bad, "x")


# -- the profile ---------------------------------------------------------------------


def test_slurm_spellings_are_accepted_and_others_suggested():
    p = profile_from_dict({"time": "1-00:00:00", "train": {"gres": "gpu:a100:2", "cpus-per-task": 4}})
    assert p["report"].time_min == 1440 and p["train"].gpus == "gpu:a100:2" and p["train"].cpus_per_task == 4
    assert [parse_time_min(v) for v in (90, "90", "1:30", "1:30:00", "2-00", "0:0:30")] == [90, 90, 2, 90, 2880, 1]
    with pytest.raises(KeyError, match=r"unknown key 'mem' \(did you mean mem_gb"):
        profile_from_dict({"mem": "32G"})
    with pytest.raises(KeyError, match=r"did you mean .*partition"):
        profile_from_dict({"partiton": "gpu"})
    with pytest.raises(KeyError, match="given twice"):
        profile_from_dict({"gres": "gpu:1", "gpus": "gpu:2"})
    with pytest.raises(ValueError, match="SLURM time"):
        profile_from_dict({"time": "soon"})


def test_key_listing_shows_the_per_kind_defaults():
    listing = valid_keys()
    gpus = next(line for line in listing.splitlines() if line.startswith("  gpus = "))
    assert "train: 'gpu:1'" in gpus and "tune: 'gpu:1'" in gpus and "report" not in gpus
    assert "gres = gpus" in listing and "time = time_min" in listing
    r = subprocess.run([sys.executable, "main/make_slurm.py", "--keys"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "train: 'gpu:1'" in r.stdout


@pytest.mark.usefixtures("suite_models_only")
def test_local_profile_fits_a_two_core_node_and_its_files_are_committed():
    local = load_profile(ROOT / "slurm" / "local.toml")
    for kind, cfg in local.items():
        assert cfg.gpus is None and (cfg.cpus_per_task or 1) <= 2 and (cfg.mem_gb or 0) <= 4, (kind, cfg)
    drift = check_dir(render_all(local, source="slurm/local.toml"), ROOT / "slurm" / "local")
    assert not drift, f"slurm/local/ drifted from slurm/local.toml: {drift}; run `python main/make_slurm.py`"


# -- job lists read the registry when rendered -------------------------------------


def test_job_files_follow_the_registry_lazily(monkeypatch):
    from models import registry

    spec = registry.get_model("x3d_xs")
    monkeypatch.setitem(registry._REGISTRY, "x3d_q", dataclasses.replace(spec, name="x3d_q", size=96))
    files = render_all(load_profile(ROOT / "slurm" / "cluster.toml"))
    assert "x3d_q" in job_models()
    assert "python main/train_x3d.py --variant q --data \"$data_root/wlasl${subset}_96\"" in files["x3d_q.slurm"]
    assert "preprocess_96.slurm" in files
    assert plan_sweep(["x3d_q"], 1)[0].config["data"]["root"] == "data/wlasl100_96"


# -- trailing arguments: the last one wins -------------------------------------------

_VARS = {"$data_root": "data", "$raw_root": "raw", "$results_root": "results", "$subset": "100", "${subset}": "100",
         "${SLURM_CPUS_PER_TASK:-1}": "1"}  # fmt: skip


def _command_words(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("launch "))
    line = line.removeprefix("launch ").replace('"${dry_run[@]}" "$@"', "")
    for var, value in _VARS.items():
        line = line.replace(var, value)
    return shlex.split(line)


@pytest.mark.parametrize("job, override, attr, expected", [
    ("x3d_s.slurm", ["--data", "data/mine_160", "--epochs", "5"], "data", "data/mine_160"),
    ("movinet_a3.slurm", ["--data", "data/wlasl300_172", "--pretrained", "checkpoints/movinet_a3_base"], "data", "data/wlasl300_172"),
    ("preprocess_224.slurm", ["--videos", "/scratch/raw/videos", "--subset", "300"], "subset", 300),
    ("tune_x3d.slurm", ["--variant", "m", "--data", "data/wlasl300_224"], "variant", "m"),
    ("tune_i3d_distributed.slurm", ["--max-trials", "8", "--data", "data/x"], "data", "data/x"),
    ("report.slurm", ["--results", "/scratch/results"], "results", Path("/scratch/results")),
])  # fmt: skip
def test_trailing_arguments_override_the_built_in_ones(job, override, attr, expected):
    """What slurm/README.md documents: `sbatch slurm/<job> --data X` trains on X (argparse keeps the last)."""
    import models  # noqa: F401
    from main.preprocess import build_parser as preprocess_parser
    from utils.report import build_parser as report_parser
    from utils.train_cli import train_parser
    from utils.tuning.cli import tune_parser

    words = _command_words((ROOT / "slurm" / job).read_text())
    script, args = words[1], words[2:]
    family = re.match(r"main/(?:train|tune)_(\w+)\.py", script)
    parser = {"main/preprocess.py": preprocess_parser, "utils/report.py": report_parser}.get(script)
    if parser is not None:
        parser = parser()
    elif script.startswith("main/train_"):
        parser = train_parser(family.group(1))
    else:
        parser = tune_parser(family.group(1))
    assert getattr(parser.parse_args(args + override), attr) == expected


# -- the repo root from anywhere -----------------------------------------------------


def _fake_repo(tmp_path: Path, job_dir: str, cfg: SlurmConfig) -> Path:
    repo = tmp_path / "repo"
    (repo / "main").mkdir(parents=True)
    (repo / "main" / "make_slurm.py").write_text("")
    venv = repo / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export PATH="{venv}/bin:$PATH"\n')
    (venv / "bin" / "python").write_text(f'#!/bin/bash\npwd > "{tmp_path}/cwd"\nprintf "%s\\n" "$@" > "{tmp_path}/args"\n')
    (venv / "bin" / "python").chmod(0o755)
    job = repo / job_dir / "job.slurm"
    job.parent.mkdir(parents=True, exist_ok=True)
    job.write_text(render_sbatch(dataclasses.replace(cfg, venv=str(venv)), "python main/x.py", job_name="job",
                                 dry_run_flag="--dry-run"))  # fmt: skip
    return job


@pytest.mark.parametrize("job_dir", ["slurm", "slurm/mycluster", "slurm/a/b"])
def test_job_files_in_any_subfolder_find_the_root(tmp_path, job_dir):
    """Found in use: jobs from `make_slurm.py --out slurm/mycluster` failed under bash ("one folder up")."""
    job = _fake_repo(tmp_path, job_dir, SlurmConfig())
    env = {"PATH": "/usr/bin:/bin", "DRY_RUN": "1"}
    r = subprocess.run(["bash", str(job), "--epochs", "1"], cwd="/", env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cwd").read_text().strip() == str((tmp_path / "repo").resolve())
    assert (tmp_path / "args").read_text().split() == ["main/x.py", "--dry-run", "--epochs", "1"]


def test_job_files_outside_the_repo_use_slr_root_or_say_how(tmp_path):
    job = _fake_repo(tmp_path, "slurm", SlurmConfig())
    outside = tmp_path / "elsewhere" / "job.slurm"
    outside.parent.mkdir()
    outside.write_text(job.read_text())
    env = {"PATH": "/usr/bin:/bin"}
    r = subprocess.run(["bash", str(outside)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "set SLR_ROOT=" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = subprocess.run(["bash", str(outside)], cwd=tmp_path, env={**env, "SLR_ROOT": str(tmp_path / "repo")},
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_make_slurm_for_another_cluster_runs_with_bash(tmp_path):
    """The documented flow, in the real repo: a second profile, its own folder, DRY_RUN=1 bash."""
    profile = tmp_path / "mycluster.toml"
    profile.write_text('partition = "gpu"\ntime = "4:00:00"\n[train]\ngres = "gpu:a100:1"\n')
    out = ROOT / "slurm" / f"test-{os.getpid()}"
    try:
        r = subprocess.run([sys.executable, "main/make_slurm.py", "--profile", str(profile), "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 0, r.stderr
        text = (out / "report.slurm").read_text()
        assert "#SBATCH --partition=gpu" in text and "#SBATCH --time=240" in text
        assert "#SBATCH --gres=gpu:a100:1" in (out / "x3d_xs.slurm").read_text()
        r = subprocess.run(["bash", str(out / "report.slurm"), "--help"], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, "SLR_VENV": sys.prefix, "DRY_RUN": "1"}, timeout=120)  # fmt: skip
        assert r.returncode == 0 and "usage: utils/report.py" in r.stdout, r.stderr[-2000:]
    finally:
        for f in out.glob("*.slurm"):
            f.unlink()
        out.rmdir()


@pytest.mark.parametrize("under_slurm", [True, False])
def test_jobs_over_several_tasks_launch_with_srun(tmp_path, under_slurm):
    """Issue 18: the profile's nodes x tasks per node > 1 -> the command runs under srun (once per task)."""
    job = _fake_repo(tmp_path, "slurm", SlurmConfig(nodes=2, ntasks_per_node=2))
    text = job.read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=2" in text and "srun_tasks=1" in text
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{tmp_path}/srun.args"\nexec "$@"\n')
    (bin_ / "srun").chmod(0o755)
    env = {"PATH": f"{bin_}:/usr/bin:/bin"}
    if under_slurm:
        env.update(SLURM_JOB_ID="77", SLURM_SUBMIT_DIR=str(tmp_path / "repo"))
    r = subprocess.run(["bash", str(job), "--seed", "1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=30)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "args").read_text().split() == ["main/x.py", "--seed", "1"]
    if under_slurm:
        assert (tmp_path / "srun.args").read_text().split()[1:] == ["main/x.py", "--seed", "1"]
    else:
        assert not (tmp_path / "srun.args").exists()
    single = render_sbatch(SlurmConfig(), "true", job_name="x")
    assert "srun_tasks=0" in single
