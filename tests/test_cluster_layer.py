"""The one cluster layer: one rule for names, the profile, lazy job lists, the committed files' commands
(trailing arguments win), and a second cluster's job files."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from models.registry import list_models
from utils.cluster.profile import load_profile, parse_time_min, profile_from_dict, valid_keys
from utils.cluster.render import check_dir, render_all

ROOT = Path(__file__).resolve().parents[1]


def test_names_are_checked_in_one_place():
    """Run ids, study, experiment, sweep and job names: utils.core.ids.safe_name / slug, nowhere else."""
    import utils.experiment as experiment
    from utils.core.ids import safe_name

    assert safe_name("wlasl100_v2.1", "x") == "wlasl100_v2.1"
    for bad in ("../x", "x" * 129, "é", "-x", ".x", "a/b"):
        with pytest.raises(ValueError):
            safe_name(bad, "x")
    with pytest.raises(ValueError, match="is not a safe file name"):
        experiment.experiment_from({"name": "../x", "stores": {}}, "f.yaml")
    sources = [p.read_text() for p in (ROOT / "utils").rglob("*.py")] + [p.read_text() for p in (ROOT / "models").rglob("*.py")]
    assert sum("[A-Za-z0-9_.-]" in text for text in sources) == 1, "a second copy of the safe-name pattern"

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
    drift = check_dir(render_all(local, source="slurm/local.toml", folder="slurm/local"), ROOT / "slurm" / "local")
    assert not drift, f"slurm/local/ drifted from slurm/local.toml: {drift}; run `python main/make_slurm.py`"


# -- job lists read the registry when rendered -------------------------------------


def test_job_files_follow_the_registry_lazily(monkeypatch):
    from models import registry

    spec = registry.get_model("x3d_xs")
    monkeypatch.setitem(registry._REGISTRY, "x3d_q", dataclasses.replace(spec, name="x3d_q", size=96))
    files = render_all(load_profile(ROOT / "slurm" / "cluster.toml"))
    assert "x3d_q" in list_models()
    assert "-- python main/train_x3d.py --variant q --data data/wlasl100_96 --results results" in files["x3d_q.slurm"]
    assert "preprocess_96.slurm" in files


# -- trailing arguments: the last one wins -------------------------------------------

def _command_words(text: str) -> list[str]:
    """The command a job file hands to main/job.py (after its ``--``)."""
    line = next(line for line in text.splitlines() if "/main/job.py" in line and " -- " in line)
    return shlex.split(line.split(" -- ", 1)[1].replace('"$@"', ""))


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


# -- the plan below the cluster layer, and the rules they share ---------------------------------


def test_the_plan_is_made_without_the_cluster_layer():
    """utils.experiment plans a whole study (its lazy imports too) without importing utils.cluster: a new
    cluster backend touches utils/cluster only."""
    code = ("import sys; from utils.experiment import load_experiment, make_plan; "
            "plan = make_plan(load_experiment('experiments/thesis_wlasl100.yaml')); "
            "print(len(plan.steps), sorted(m for m in sys.modules if m.startswith('utils.cluster')))")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    steps, modules = r.stdout.split(" ", 1)
    assert int(steps) > 2 and modules.strip() == "[]", r.stdout


def test_job_states_say_once_what_failed_means():
    """The planner (resubmit a failed store) and the status table (show it failed) read the same property."""
    from utils.cluster.slurm import NEVER, JobState

    assert [JobState(s).failed for s in ("COMPLETED", "UNKNOWN", "RUNNING", "PENDING", "REQUEUED")] == [False] * 5
    assert [JobState(s).failed for s in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")] == [True] * 5
    assert JobState("PENDING", reason=NEVER).failed  # waits for a dependency that failed: it will never run


def test_a_models_training_command_comes_from_its_registry_entry():
    from models.registry import get_model

    assert get_model("x3d_xs").train_words() == ["python", "main/train_x3d.py", "--variant", "xs"]
    assert get_model("i3d").train_words() == ["python", "main/train_i3d.py"]
    assert get_model("pose_lstm").train_words() == ["python", "main/train_pose.py", "--variant", "lstm"]
    jobs = render_all(load_profile(ROOT / "slurm" / "cluster.toml"))
    assert "main/train_x3d.py --variant xs" in jobs["x3d_xs.slurm"]
