"""SLURM job files without a cluster: rendering, profile checks, quoting, the job script's signal path."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from utils.cluster.jobs import check_dir, job_models, render_all
from utils.cluster.profile import JOB_KINDS, SlurmConfig, load_profile, profile_from_dict
from utils.cluster.sbatch import render_sbatch, sanitize_job_name

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "train_full.slurm"
REGEN = "UPDATE_GOLDEN=1 python -m pytest tests/test_slurm_render.py -k golden"

# Every field set, so the golden file shows every directive and body part.
FULL = SlurmConfig(
    partition="gpu",
    account="proj_42",
    qos="normal",
    gpus="gpu:a100:1",
    constraint="a100|h100",
    nodes=2,
    ntasks_per_node=4,
    cpus_per_task=8,
    mem_gb=32,
    time_min=600,
    mail_user="me@example.org",
    mail_type="END,FAIL",
    signal_s=300,
    requeue=True,
    extra_directives=("--exclusive",),
    modules=("cuda/12.4",),
    venv=".venv",
    env=(("NCCL_DEBUG", "WARN"),),
)


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def test_golden_train_job():
    text = render_sbatch(FULL, "python main/train_i3d.py --data d", job_name="i3d", dry_run_flag="--dry-run")
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert GOLDEN.is_file(), f"no golden file {GOLDEN}; create it with: {REGEN}"
    assert text == GOLDEN.read_text(), (
        f"render_sbatch output differs from {GOLDEN.name}. If the change is intended, "
        f"regenerate it with `{REGEN}`, review `git diff tests/golden`, then `python main/make_slurm.py`."
    )


@pytest.mark.usefixtures("suite_models_only")
def test_committed_job_files_match_the_generator():
    files = render_all(load_profile(ROOT / "slurm" / "cluster.toml"))
    drift = check_dir(files, ROOT / "slurm")
    assert not drift, f"slurm/ drifted from slurm/cluster.toml: {drift}; run `python main/make_slurm.py` and commit"
    assert {f"{m}.slurm" for m in job_models()} <= set(files)
    assert {"preprocess_172.slurm", "preprocess_224.slurm", "report.slurm", "tune_x3d_distributed.slurm"} <= set(files)


def test_make_slurm_check_reports_drift(tmp_path):
    cmd = [sys.executable, str(ROOT / "main" / "make_slurm.py"), "--out", str(tmp_path)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert subprocess.run([*cmd, "--check"], capture_output=True).returncode == 0
    (tmp_path / "i3d.slurm").write_text((tmp_path / "i3d.slurm").read_text() + "# hand edit\n")
    r = subprocess.run([*cmd, "--check"], capture_output=True, text=True)
    assert r.returncode == 1 and "i3d.slurm (differs)" in r.stderr and "python main/make_slurm.py" in r.stderr


def test_directives_sorted_and_unset_values_give_no_line():
    lines = directives(render_sbatch(FULL, "true", job_name="x"))
    keys = [re.match(r"#SBATCH --([a-z-]+)", line).group(1) for line in lines]
    assert keys == sorted(keys)
    bare = directives(render_sbatch(SlurmConfig(), "true", job_name="x"))
    assert bare == ["#SBATCH --job-name=x", "#SBATCH --output=logs/%x-%j.out"]
    arr = directives(render_sbatch(SlurmConfig(array_parallel=2), "true", job_name="x", array="0-3"))
    assert "#SBATCH --array=0-3%2" in arr and "#SBATCH --output=logs/%x-%A_%a.out" in arr


def test_generic_profile_sets_no_site_specific_lines():
    text = (ROOT / "slurm" / "movinet_a3.slurm").read_text()
    for key in ("partition", "account", "qos", "constraint", "mail-user"):
        assert f"--{key}=" not in text


def test_unknown_key_is_rejected_listing_every_valid_key():
    with pytest.raises(KeyError) as e:
        profile_from_dict({"train": {"gpu": "gpu:1"}}, where="my.toml")
    msg = e.value.args[0]
    assert "my.toml [train]" in msg and "'gpu'" in msg
    for name in SlurmConfig.__dataclass_fields__:
        assert f"  {name} = " in msg, name
    assert "time_min = None" in msg and "venv = '.venv'" in msg
    with pytest.raises(KeyError, match="partitoin"):
        profile_from_dict({"partitoin": "gpu"})


def test_profile_layers_and_types():
    p = profile_from_dict({"partition": "gpu", "report": {"partition": "", "mem_gb": 2}})
    assert set(p) == set(JOB_KINDS)
    assert p["train"].partition == "gpu" and p["report"].partition is None and p["report"].mem_gb == 2
    assert p["train"].gpus == "gpu:1" and p["preprocess"].gpus is None
    with pytest.raises(TypeError, match="mem_gb expected int"):
        profile_from_dict({"mem_gb": "32"})
    with pytest.raises(ValueError, match="both venv"):
        profile_from_dict({"conda_env": "slr"})


@pytest.mark.parametrize(
    "field, value",
    [
        ("partition", "gpu\n#SBATCH --wrap=touch pwned"),
        ("partition", "gpu --wrap=x"),
        ("account", "$(touch pwned)"),
        ("qos", "a'b"),
        ("log_dir", "logs;touch pwned"),
        ("extra_directives", ("--wrap=`id`",)),
    ],
)
def test_hostile_directive_values_are_rejected(field, value):
    with pytest.raises(ValueError):
        render_sbatch(SlurmConfig(**{field: value}), "true", job_name="x")


def test_job_names_are_sanitized():
    assert sanitize_job_name("x3d s; rm -rf /") == "x3d_s_rm_-rf"
    assert "--job-name=a_b\n" in render_sbatch(SlurmConfig(), "true", job_name="a b")
    with pytest.raises(ValueError):
        sanitize_job_name("$;")


HOSTILE = ["$(touch PWNED1)", "`touch PWNED2`", "'; touch PWNED3; '", '"; touch PWNED4; "', "x\\'; touch PWNED5 #"]


def sandbox(tmp_path: Path, cfg: SlurmConfig, command: str, **kw) -> Path:
    """A fake repo with one job file, and fake `module`/`conda`/`scontrol` that log their arguments."""
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "make_slurm.py").write_text("")
    (tmp_path / "slurm").mkdir()
    job = tmp_path / "slurm" / "job.slurm"
    job.write_text(render_sbatch(cfg, command, job_name="job", **kw))
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("module", "conda", "scontrol"):
        (bin_ / tool).write_text(
            f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done >> "{tmp_path}/{tool}.args"\n'
        )
        (bin_ / tool).chmod(0o755)
    return job


def run_job(job: Path, *args, env=None, **kw):
    base = {"PATH": f"{job.parents[1] / 'bin'}:/usr/bin:/bin", "HOME": str(job.parents[1])}
    return subprocess.run(["bash", str(job), *args], cwd=job.parents[1], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=60, **kw)  # fmt: skip


def test_hostile_profile_values_stay_inert(tmp_path):
    cfg = SlurmConfig(
        venv=None,
        conda_env=HOSTILE[0],
        modules=tuple(HOSTILE),
        env=tuple((f"V{i}", v) for i, v in enumerate(HOSTILE)),
        data_root=HOSTILE[1],
        raw_root=HOSTILE[2],
        results_root=HOSTILE[3],
    )
    show = 'printf "%s\\n" "$data_root" "$raw_root" "$results_root" "$V0" "$V1" "$V2" "$V3" "$V4"'
    job = sandbox(tmp_path, cfg, show)
    r = run_job(job)
    assert r.returncode == 0, r.stderr
    assert not list(tmp_path.rglob("PWNED*")), "a profile value ran as shell code"
    assert r.stdout.splitlines() == [HOSTILE[1], HOSTILE[2], HOSTILE[3], *HOSTILE]
    assert (tmp_path / "module.args").read_text().splitlines() == [w for m in HOSTILE for w in ("load", m)]
    assert HOSTILE[0] in (tmp_path / "conda.args").read_text().splitlines()


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_venv_stays_inert(tmp_path, value):
    job = sandbox(tmp_path, SlurmConfig(venv=value), "true")
    r = run_job(job)
    assert r.returncode == 2 and "no virtualenv at" in r.stderr
    assert not list(tmp_path.rglob("PWNED*"))


def test_local_run_passes_arguments_and_dry_run(tmp_path):
    job = sandbox(tmp_path, SlurmConfig(venv=None), 'printf "%s\\n" first', dry_run_flag="--dry-run")
    assert run_job(job, "--epochs", "50", "a b").stdout.splitlines() == ["first", "--epochs", "50", "a b"]
    r = run_job(job, "--epochs", "5", env={"DRY_RUN": "1"})
    assert r.stdout.splitlines() == ["first", "--dry-run", "--epochs", "5"]


def test_slr_venv_overrides_the_profile(tmp_path):
    venv = tmp_path / "myvenv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(
        'export ACTIVATED="$(basename "$(dirname "$(dirname "${BASH_SOURCE[0]}")")")"\n'
    )
    job = sandbox(tmp_path, SlurmConfig(venv="nowhere"), 'printf "%s\\n" "$ACTIVATED"')
    r = run_job(job, env={"SLR_VENV": str(venv)})
    assert r.returncode == 0 and r.stdout.strip() == "myvenv", r.stderr


# A stand-in for a training script: on USR1 it "checkpoints" and exits 85.
FAKE_TRAIN = """
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGUSR1, lambda *a: (out.write_text("checkpoint"), sys.exit(85)))
(out.parent / "started").write_text("")
time.sleep(60)
"""


@pytest.mark.parametrize("under_slurm", [False, True])
def test_usr1_is_forwarded_and_exit_85_requeues(tmp_path, under_slurm):
    (tmp_path / "fake.py").write_text(FAKE_TRAIN)
    job = sandbox(tmp_path, SlurmConfig(venv=None), f"{sys.executable} {tmp_path}/fake.py {tmp_path}/ckpt")
    env = {"SLURM_JOB_ID": "4242", "SLURM_SUBMIT_DIR": str(tmp_path)} if under_slurm else {}
    proc = subprocess.Popen(["bash", str(job)], cwd=tmp_path, env={"PATH": f"{tmp_path}/bin:/usr/bin:/bin", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for _ in range(300):  # until the stand-in has installed its handler
        if (tmp_path / "started").exists():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # what `scancel --signal=USR1 --batch` does
    _, err = proc.communicate(timeout=30)
    assert (tmp_path / "ckpt").read_text() == "checkpoint", err
    assert "got SIGUSR1" in err
    if under_slurm:
        assert proc.returncode == 0, err
        assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "4242"]
    else:
        assert proc.returncode == 85 and "run the same command again" in err
        assert not (tmp_path / "scontrol.args").exists()


def test_committed_preprocess_job_runs_locally_with_bash(tmp_path):
    """`bash slurm/<job>.slurm` is a plain script: no SLURM, all shards in one, arguments passed on."""
    from wlasl.synthetic import make_synthetic

    raw = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=3, broken=False)
    out = tmp_path / "store"
    args = ["--metadata", str(raw["metadata"]), "--videos", str(raw["videos"]), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    # Called from elsewhere: the script finds its repo from its own path.
    r = subprocess.run(["bash", str(ROOT / "slurm" / "preprocess_172.slurm"), *args, "--subset", "2", "--size", "32",
                        "--frames", "4"], cwd=tmp_path, env={**env, "SLR_VENV": sys.prefix}, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((out / "clips").glob("*.npy"))) == 6
