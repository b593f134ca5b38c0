"""SLURM job files without a cluster: rendering, profile checks, quoting, and what main/job.py does in a job
(the environment, array seeds and tasks, the signal path, requeue and cancel)."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.registry import list_models
from utils.cluster.launch import SRUN_WAIT_S
from utils.cluster.profile import JOB_KINDS, SlurmConfig, load_profile, profile_from_dict
from utils.cluster.render import check_dir, render_all, render_job
from utils.core.ids import slug

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "train_full.slurm"
REGEN = "UPDATE_GOLDEN=1 python -m pytest tests/test_slurm_render.py -k golden"

# Every field set, so the golden file shows every directive and body part.
FULL = SlurmConfig(partition="gpu", account="proj_42", qos="normal", gpus="gpu:a100:1", constraint="a100|h100", nodes=2,
                   ntasks_per_node=4, cpus_per_task=8, mem_gb=32, time_min=600, mail_user="me@example.org",
                   mail_type="END,FAIL", signal_s=300, requeue=True, extra_directives=("--exclusive",),
                   modules=("cuda/12.4",), venv=".venv", env=(("NCCL_DEBUG", "WARN"),))  # fmt: skip


def render(cfg: SlurmConfig, command: list[str], **kw) -> str:
    return render_job(cfg, command, job_name=kw.pop("job_name", "job"), description="a test job", source="test.toml", **kw)


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def test_golden_train_job():
    text = render(FULL, ["python", "main/train_i3d.py", "--data", "d"], job_name="i3d", usage="slurm/i3d.slurm",
                  dry_run_flag="--dry-run", seed_from_array=True)  # fmt: skip
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert GOLDEN.is_file(), f"no golden file {GOLDEN}; create it with: {REGEN}"
    assert text == GOLDEN.read_text(), (
        f"render_job output differs from {GOLDEN.name}. If the change is intended, "
        f"regenerate it with `{REGEN}`, review `git diff tests/golden`, then `python main/make_slurm.py`."
    )


@pytest.mark.usefixtures("suite_models_only")
def test_committed_job_files_match_the_generator_and_fit_on_one_screen():
    for profile, folder in (("cluster.toml", "slurm"), ("local.toml", "slurm/local"), ("local_multi.toml", "slurm/local_multi")):
        files = render_all(load_profile(ROOT / "slurm" / profile), source=f"slurm/{profile}", folder=folder)
        drift = check_dir(files, ROOT / folder)
        assert not drift, f"{folder}/ drifted from slurm/{profile}: {drift}; run `python main/make_slurm.py` and commit"
        assert {f"{m}.slurm" for m in list_models()} <= set(files)
        assert {"preprocess_172.slurm", "preprocess_224.slurm", "report.slurm", "tune_x3d_distributed.slurm"} <= set(files)
        # Issue 25: the header and a few lines handing over to main/job.py, not 122 lines of shell each.
        assert max(text.count("\n") for text in files.values()) <= 30
        assert all(f"sbatch {folder}/{name} [args]" in text for name, text in files.items())


def test_make_slurm_check_reports_drift(tmp_path):
    cmd = [sys.executable, str(ROOT / "main" / "make_slurm.py"), "--out", str(tmp_path)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert subprocess.run([*cmd, "--check"], capture_output=True).returncode == 0
    (tmp_path / "i3d.slurm").write_text((tmp_path / "i3d.slurm").read_text() + "# hand edit\n")
    r = subprocess.run([*cmd, "--check"], capture_output=True, text=True)
    assert r.returncode == 1 and "i3d.slurm (differs)" in r.stderr and "python main/make_slurm.py" in r.stderr


def test_directives_sorted_and_unset_values_give_no_line():
    lines = directives(render(FULL, ["true"]))
    keys = [re.match(r"#SBATCH --([a-z-]+)", line).group(1) for line in lines]
    assert keys == sorted(keys)
    assert directives(render(SlurmConfig(), ["true"], job_name="x")) == ["#SBATCH --job-name=x",
                                                                         "#SBATCH --output=logs/%x-%j.out"]  # fmt: skip
    arr = directives(render(SlurmConfig(array_parallel=2), ["true"], array="0-3"))
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
    with pytest.raises(TypeError, match="'mem_gb' expected a whole number"):
        profile_from_dict({"mem_gb": "32"})
    with pytest.raises(ValueError, match="both venv"):
        profile_from_dict({"conda_env": "slr"})


@pytest.mark.parametrize("field, value", [
    ("partition", "gpu\n#SBATCH --wrap=touch pwned"), ("partition", "gpu --wrap=x"), ("account", "$(touch pwned)"),
    ("qos", "a'b"), ("log_dir", "logs;touch pwned"), ("extra_directives", ("--wrap=`id`",)),
])  # fmt: skip
def test_hostile_directive_values_are_rejected(field, value):
    with pytest.raises(ValueError):
        render(SlurmConfig(**{field: value}), ["true"])


def test_job_names_are_made_safe_by_the_one_rule():
    assert slug("x3d s; rm -rf /") == "x3d-s-rm--rf"
    assert "--job-name=a-b\n" in render(SlurmConfig(), ["true"], job_name="a b")
    with pytest.raises(ValueError):
        slug("$;", fallback="")


# -- a fake repo: the real main/job.py and utils/, a venv whose python logs what it runs


HOSTILE = ["$(touch PWNED1)", "`touch PWNED2`", "'; touch PWNED3; '", '"; touch PWNED4; "', "x\\'; touch PWNED5 #"]
LOGGER = """#!/bin/bash
printf "%s\\n" "$@" > "{out}/args"
env > "{out}/env"
"""


def sandbox(tmp_path: Path, cfg: SlurmConfig, command: list[str], *, venv: bool = True, **kw) -> Path:
    """A fake repo holding one job file; fake `module`, `conda` and `scontrol` log their arguments."""
    repo = tmp_path / "repo"
    (repo / "main").mkdir(parents=True)
    shutil.copy(ROOT / "main" / "job.py", repo / "main" / "job.py")
    (repo / "utils").symlink_to(ROOT / "utils")
    if venv:
        (repo / "venv" / "bin").mkdir(parents=True)
        (repo / "venv" / "bin" / "python").write_text(LOGGER.format(out=tmp_path))
        (repo / "venv" / "bin" / "python").chmod(0o755)
        cfg = dataclasses.replace(cfg, venv="venv") if cfg.venv == ".venv" else cfg
    (repo / "slurm").mkdir()
    job = repo / "slurm" / "job.slurm"
    job.write_text(render(cfg, command, **kw))
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("module", "conda", "scontrol"):
        (bin_ / tool).write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done >> "{tmp_path}/{tool}.args"\n')
        (bin_ / tool).chmod(0o755)
    return job


def run_job(job: Path, *args, env=None, cwd=None):
    base = {"PATH": f"{job.parents[2] / 'bin'}:/usr/bin:/bin", "HOME": str(job.parents[2])}
    return subprocess.run(["bash", str(job), *args], cwd=cwd or job.parents[2], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def logged(tmp_path: Path) -> list[str]:
    return (tmp_path / "args").read_text().splitlines()


def test_hostile_profile_values_stay_inert(tmp_path):
    cfg = SlurmConfig(venv=None, conda_env=HOSTILE[0], modules=tuple(HOSTILE), env=tuple((f"V{i}", v) for i, v in
                      enumerate(HOSTILE)))  # fmt: skip
    logger = tmp_path / "logger"
    logger.write_text(LOGGER.format(out=tmp_path))
    logger.chmod(0o755)
    job = sandbox(tmp_path, cfg, [str(logger), *HOSTILE], venv=False)
    # module/conda are shell functions on a real machine; here the fake ones log and `conda shell.bash hook` prints nothing.
    r = run_job(job)
    assert r.returncode == 0, r.stderr
    assert not list(tmp_path.rglob("PWNED*")), "a profile value ran as shell code"
    assert logged(tmp_path) == HOSTILE
    env = dict(line.split("=", 1) for line in (tmp_path / "env").read_text().splitlines() if "=" in line)
    assert [env[f"V{i}"] for i in range(len(HOSTILE))] == HOSTILE
    assert (tmp_path / "module.args").read_text().splitlines() == [w for m in HOSTILE for w in ("load", m)]
    assert HOSTILE[0] in (tmp_path / "conda.args").read_text().splitlines()


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_venv_stays_inert(tmp_path, value):
    job = sandbox(tmp_path, SlurmConfig(venv=value), ["python", "x.py"], venv=False)
    r = run_job(job)
    assert r.returncode == 2 and "no virtualenv at" in r.stderr
    assert not list(tmp_path.rglob("PWNED*"))


def test_the_job_runs_in_its_venv_with_the_arguments_last_and_dry_run(tmp_path):
    job = sandbox(tmp_path, SlurmConfig(venv=".venv"), ["python", "main/x.py", "--a", "1"], dry_run_flag="--dry-run")
    r = run_job(job, "--epochs", "50", "a b", cwd="/")  # from anywhere: the repo is found from the file
    assert r.returncode == 0, r.stderr
    assert logged(tmp_path) == ["main/x.py", "--a", "1", "--epochs", "50", "a b"]
    assert f"VIRTUAL_ENV={tmp_path / 'repo' / 'venv'}" in (tmp_path / "env").read_text()
    assert run_job(job, "--epochs", "5", env={"DRY_RUN": "1"}).returncode == 0
    assert logged(tmp_path) == ["main/x.py", "--a", "1", "--epochs", "5", "--dry-run"]


def test_slr_venv_overrides_the_profile(tmp_path):
    job = sandbox(tmp_path, SlurmConfig(venv="nowhere"), ["python", "main/x.py"])
    r = run_job(job, env={"SLR_VENV": str(tmp_path / "repo" / "venv")})
    assert r.returncode == 0 and logged(tmp_path) == ["main/x.py"], r.stderr


def test_an_array_task_trains_its_seed_and_an_experiment_task_its_line(tmp_path):
    """Issue 23: `sbatch --array=0-4 slurm/x3d_xs.slurm` trains seeds 0-4; an experiment's array picks its #TASK."""
    job = sandbox(tmp_path, SlurmConfig(venv=".venv"), ["python", "main/train_x.py", "--data", "d"], seed_from_array=True)
    assert run_job(job, "--epochs", "1", env={"SLURM_ARRAY_TASK_ID": "3"}).returncode == 0
    assert logged(tmp_path) == ["main/train_x.py", "--seed", "3", "--data", "d", "--epochs", "1"]
    assert run_job(job, "--seed", "9", env={"SLURM_ARRAY_TASK_ID": "3"}).returncode == 0  # the job's own wins (last)
    assert logged(tmp_path)[-2:] == ["--seed", "9"]
    tasks = [(0, "run:a", ["python", "main/a.py", HOSTILE[0]]), (1, "run:b", ["python", "main/b.py", "--x", "y z"])]
    job.write_text(render(SlurmConfig(venv="venv"), [], tasks=tasks, array="0-1"))
    assert run_job(job, "--extra", env={"SLURM_ARRAY_TASK_ID": "1"}).returncode == 0
    assert logged(tmp_path) == ["main/b.py", "--x", "y z", "--extra"]
    assert run_job(job, env={"SLURM_ARRAY_TASK_ID": "0"}).returncode == 0 and logged(tmp_path) == ["main/a.py", HOSTILE[0]]
    r = run_job(job, env={"SLURM_ARRAY_TASK_ID": "7"})
    assert r.returncode == 2 and "array task 7 is not in this job" in r.stderr
    assert not list(tmp_path.rglob("PWNED*"))


def test_job_files_outside_the_repo_use_slr_root_or_say_how(tmp_path):
    job = sandbox(tmp_path, SlurmConfig(venv=".venv"), ["python", "main/x.py"])
    outside = tmp_path / "elsewhere" / "job.slurm"
    outside.parent.mkdir()
    outside.write_text(job.read_text())
    r = subprocess.run(["bash", str(outside)], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                       text=True, timeout=30)  # fmt: skip
    assert r.returncode == 2 and "set SLR_ROOT=" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = subprocess.run(["bash", str(outside)], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin", "SLR_ROOT": str(tmp_path / "repo")})  # fmt: skip
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("under_slurm", [True, False])
def test_jobs_over_several_tasks_launch_with_srun(tmp_path, under_slurm):
    """The profile's nodes x tasks per node > 1 -> srun starts the command once per task (on every node)."""
    job = sandbox(tmp_path, SlurmConfig(nodes=2, ntasks_per_node=1, venv=".venv"), ["python", "main/x.py"])
    text = job.read_text()
    assert "#SBATCH --nodes=2" in text and "--srun" in text
    # A stand-in srun: records its arguments, then runs the command after its own options.
    (tmp_path / "bin" / "srun").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{tmp_path}/srun.args"\n'
                                          'while [[ "$1" == -* ]]; do shift; done\nexec "$@"\n')  # fmt: skip
    (tmp_path / "bin" / "srun").chmod(0o755)
    env = {"SLURM_JOB_ID": "77", "SLURM_SUBMIT_DIR": str(tmp_path / "repo")} if under_slurm else {}
    assert run_job(job, "--seed", "1", env=env).returncode == 0
    assert logged(tmp_path) == ["main/x.py", "--seed", "1"]
    assert (tmp_path / "srun.args").exists() == under_slurm
    if under_slurm:  # the tasks end together, and an exit 85 of one does not kill the others' 85
        assert (tmp_path / "srun.args").read_text().split()[:2] == ["--kill-on-bad-exit=0", f"--wait={SRUN_WAIT_S}"]
    assert "--srun" not in render(SlurmConfig(), ["true"])


# A stand-in for a training script: on USR1 it "checkpoints" and exits with the code in argv[2].
FAKE_TRAIN = """
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGUSR1, lambda *a: (out.write_text("checkpoint"), sys.exit(int(sys.argv[2]))))
(out.parent / "started").write_text("")
time.sleep(60)
"""


@pytest.mark.parametrize("under_slurm, rc, scontrol_ok", [(False, 85, True), (True, 85, True), (True, 85, False),
                                                          (True, 86, True)])  # fmt: skip
def test_usr1_is_forwarded_then_85_requeues_and_86_stays_cancelled(tmp_path, under_slurm, rc, scontrol_ok):
    (tmp_path / "fake.py").write_text(FAKE_TRAIN)
    job = sandbox(tmp_path, SlurmConfig(venv=None, requeue=True), [sys.executable, str(tmp_path / "fake.py"),
                                                                    str(tmp_path / "ckpt"), str(rc)], venv=False)  # fmt: skip
    if not scontrol_ok:  # SLURM refuses (the job is being requeued or cancelled already): said, and the code kept
        (tmp_path / "bin" / "scontrol").write_text("#!/bin/sh\necho 'scontrol: error: Job is pending' >&2\nexit 1\n")
    env = {"SLURM_JOB_ID": "4242", "SLURM_SUBMIT_DIR": str(tmp_path / "repo")} if under_slurm else {}
    proc = subprocess.Popen(["bash", str(job)], cwd=tmp_path, env={"PATH": f"{tmp_path}/bin:/usr/bin:/bin", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for _ in range(600):  # until the stand-in has installed its handler
        if (tmp_path / "started").exists():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # what `scancel --signal=USR1 --batch` does: the batch step only
    _, err = proc.communicate(timeout=30)
    assert (tmp_path / "ckpt").read_text() == "checkpoint", err
    assert "got SIGUSR1" in err
    requeued = under_slurm and rc == 85
    calls = (tmp_path / "scontrol.args").read_text().split() if (tmp_path / "scontrol.args").exists() else []
    assert ("requeue" in calls) == (requeued and scontrol_ok), calls  # (the job file asks `scontrol show job` too)
    if requeued and scontrol_ok:
        assert proc.returncode == 0 and calls[-2:] == ["requeue", "4242"], err
    elif requeued:
        assert proc.returncode == 85 and "not requeued (scontrol: error: Job is pending)" in err
    elif rc == 86:
        assert proc.returncode == 86 and "cancelled; the checkpoint is kept" in err
    else:
        assert proc.returncode == 85 and "run the same command again" in err


def test_committed_jobs_run_locally_with_bash(tmp_path):
    """`bash slurm/<job>.slurm` is a plain script: no SLURM, all shards in one, arguments passed on."""
    from wlasl.synthetic import make_synthetic

    raw = make_synthetic(tmp_path / "raw", glosses=2, per_gloss=3, broken=False)
    out = tmp_path / "store"
    args = ["--metadata", str(raw["metadata"]), "--videos", str(raw["videos"]), "--out", str(out)]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}, "SLR_VENV": sys.prefix}
    # Called from elsewhere: the script finds its repo from its own path.
    r = subprocess.run(["bash", str(ROOT / "slurm" / "preprocess_172.slurm"), *args, "--subset", "2", "--size", "32",
                        "--frames", "4"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((out / "clips").glob("*.npy"))) == 6
    r = subprocess.run(["bash", str(ROOT / "slurm" / "local" / "report.slurm"), "--help"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0 and "usage: utils/report.py" in r.stdout, r.stderr[-2000:]
