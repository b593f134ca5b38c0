"""Jobs that fit the machine: CPUs, memory and GRES in every form sbatch takes, checked against sinfo (fake SLURM
tools), every problem at once, --fit to what the job needs, refusals in one line naming what exists, and sweeps that
check their stores first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils.cluster.profile import SlurmConfig, load_profile
from utils.cluster.slurm import (
    GresError,
    Node,
    Request,
    ResourceError,
    check_fit,
    config_request,
    fit_options,
    parse_gres,
    parse_mem_mb,
    request,
)

ROOT = Path(__file__).resolve().parents[1]
NODE = Node("vm", cpus=2, mem_mb=21694, gres={})  # what slurm/local_cluster.sh makes on a 2-core machine


def fake_slurm(tmp_path: Path, *, sbatch_rc: int = 0, sinfo: str = "vm|2|21694|(null)") -> dict:
    """sinfo answering one node, sbatch recording its argv (and failing with sbatch_rc), srun present."""
    bin_ = tmp_path / "fakebin"
    bin_.mkdir()
    (bin_ / "sinfo").write_text(f"#!/bin/sh\necho '{sinfo}'\n")
    refusal = "sbatch: error: Batch job submission failed: More processors requested than permitted"
    (bin_ / "sbatch").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{tmp_path}/sbatch.args"\n'
        + (f'echo "{refusal}" >&2\nexit {sbatch_rc}\n' if sbatch_rc else "echo 4242\n")
    )
    (bin_ / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sinfo", "sbatch", "srun"):
        (bin_ / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"}


def test_sizes_and_gres_parse():
    assert parse_gres("gpu:a100:2(S:0-1),shard:4") == {"gpu": 2, "gpu:a100": 2, "shard": 4}
    assert parse_gres("(null)") == {} and parse_gres("none") == {} and parse_gres("gpu") == {"gpu": 1}
    assert [parse_mem_mb(v) for v in ("32G", "4096", "500M", "1T")] == [32768, 4096, 500, 1048576]
    with pytest.raises(ValueError, match="--mem expected"):
        parse_mem_mb("lots")


def file_request(text, args=()):
    return request(text, args)[0]


FIX = "python main/submit.py --fit JOB"


def test_every_form_sbatch_takes_is_read():
    """Issue 23: `--sbatch=-c4` skipped the check (only `--cpus-per-task=` was read)."""
    base = "#SBATCH --cpus-per-task=1\n#SBATCH --mem=1G\n"
    for args, cpus in ((("-c4",), 4), (("-c", "4"), 4), (("--cpus-per-task", "3"), 3), (("--cpus-per-task=2",), 2)):
        assert file_request(base, args).cpus_per_task == cpus, args
    assert file_request("#SBATCH -c 6\n#SBATCH --mem 8G\n#SBATCH -N 2-4\n").cpus_per_task == 6
    req = file_request(base, ("--mem", "8G", "-G", "2", "-N", "2", "--ntasks-per-node=2"))
    assert (req.mem_mb, parse_gres(req.gres), req.nodes, req.ntasks_per_node, req.cpus) == (8192, {"gpu": 1}, 2, 2, 2)
    assert file_request(base, ("--ntasks", "4", "--nodes=2")).ntasks_per_node == 2
    assert file_request("#SBATCH --mem-per-cpu=2G\n#SBATCH -c 3\n").mem_mb == 6144
    assert parse_gres(file_request(base, ("--gpus-per-node=a100:2",)).gres) == {"gpu": 2, "gpu:a100": 2}
    with pytest.raises(ValueError, match="--cpus-per-task expected a whole number"):
        file_request(base, ("-c", "many"))


def test_every_problem_is_named_at_once_with_a_fix_that_exists():
    req = file_request((ROOT / "slurm" / "i3d.slurm").read_text())
    with pytest.raises(GresError) as e:
        check_fit(req, [NODE], job="slurm/i3d.slurm", fix=FIX)
    msg = str(e.value)
    assert "--gres=gpu:1, but no node has gpu" in msg and "8 CPUs per node" in msg and "32768 MB of memory" in msg, msg
    assert msg.count("\n") == 0 and msg.endswith(f"Make it fit: {FIX}")


def test_submit_refusal_suggests_the_local_job_only_where_it_exists(tmp_path):
    env = fake_slurm(tmp_path)
    cmd = [sys.executable, "main/submit.py"]
    r = subprocess.run([*cmd, "slurm/x3d_xs.slurm"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "sbatch slurm/local/x3d_xs.slurm" in r.stderr and "--fit slurm/x3d_xs.slurm" in r.stderr
    (tmp_path / "mine.slurm").write_text("#SBATCH --cpus-per-task=8\n")
    r = subprocess.run([*cmd, str(tmp_path / "mine.slurm")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "slurm/local" not in r.stderr and "make_slurm" not in r.stderr, r.stderr
    assert (ROOT / "main" / "submit.py").is_file()


def test_submit_makes_the_log_folder_sbatch_needs(tmp_path):
    """Issue 23: a job submitted from another directory failed with no log anywhere (its logs/ was missing)."""
    env = fake_slurm(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([sys.executable, str(ROOT / "main" / "submit.py"), str(ROOT / "slurm" / "local" / "report.slurm")],
                       cwd=work, env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (work / "logs").is_dir() and "log: logs/report-4242.out" in r.stdout


def test_committed_preprocess_job_does_not_fit_two_cores_and_says_what_to_change():
    """Found in use: `sbatch slurm/preprocess_172.slurm` asks 4 CPUs of a 2-CPU node."""
    req = file_request((ROOT / "slurm" / "preprocess_172.slurm").read_text())
    assert (req.cpus_per_task, req.mem_mb, req.gres) == (4, 8192, None)
    with pytest.raises(ResourceError) as e:
        check_fit(req, [NODE], job="slurm/preprocess_172.slurm", fix=FIX)
    msg = str(e.value)
    assert "asks for 4 CPUs per node" in msg and "the most is 2: --cpus-per-task=2" in msg and FIX in msg
    assert "\n" not in msg
    # --fit keeps what the job needs per CPU (8 GB for 4 CPUs -> 4 GB for 2), not the node's whole memory.
    assert fit_options(req, [NODE]) == ["--cpus-per-task=2", "--mem=4096M"]
    check_fit(file_request((ROOT / "slurm" / "local" / "preprocess_172.slurm").read_text()), [NODE], job="x", fix=FIX)


def test_training_job_needs_gpus_cpus_and_memory_the_node_lacks():
    req = file_request((ROOT / "slurm" / "i3d.slurm").read_text())
    with pytest.raises(GresError, match=r"asks for --gres=gpu:1, but no node has gpu \(drop it: --gres=none\)"):
        check_fit(req, [NODE], job="slurm/i3d.slurm", fix=FIX)
    no_gpu = file_request((ROOT / "slurm" / "i3d.slurm").read_text(), ("--gres=none",))
    with pytest.raises(ResourceError, match=r"8 CPUs per node .* 32768 MB of memory \(the most is 21694 MB"):
        check_fit(no_gpu, [NODE], job="slurm/i3d.slurm", fix=FIX)
    assert fit_options(req, [NODE]) == ["--cpus-per-task=2", "--mem=8192M", "--gres=none"]
    big = Node("g1", cpus=64, mem_mb=512000, gres={"gpu": 4, "gpu:a100": 4})
    check_fit(req, [NODE, big], job="x", fix=FIX)  # one node that fits is enough
    with pytest.raises(ResourceError, match="gpu:8"):
        check_fit(config_request(SlurmConfig(gpus="gpu:8")), [big], job="x", fix=FIX)
    train = config_request(load_profile(ROOT / "slurm" / "cluster.toml")["train"])  # what experiments ask for
    assert fit_options(train, [NODE]) == ["--cpus-per-task=2", "--mem=8192M", "--gres=none"]
    assert fit_options(Request(cpus_per_task=1, mem_mb=64000), [NODE]) == ["--mem=21694M"]  # capped by the node


def test_submit_cli_refuses_in_one_line_and_fits_on_request(tmp_path):
    env = fake_slurm(tmp_path)
    cmd = [sys.executable, "main/submit.py"]
    r = subprocess.run([*cmd, "slurm/preprocess_172.slurm"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--cpus-per-task=2" in r.stderr, r.stderr
    assert not (tmp_path / "sbatch.args").exists(), "a job that cannot fit was submitted"
    r = subprocess.run([*cmd, "--fit", "slurm/i3d.slurm", "--", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "submitted job 4242 fitted with --cpus-per-task=2 --mem=8192M --gres=none" in r.stdout
    assert (tmp_path / "sbatch.args").read_text().split() == [
        "--parsable", "--cpus-per-task=2", "--mem=8192M", "--gres=none", "slurm/i3d.slurm", "--dry-run"]  # fmt: skip


def test_refused_sbatch_is_one_line(tmp_path):
    env = fake_slurm(tmp_path, sbatch_rc=1)
    r = subprocess.run([sys.executable, "main/submit.py", "slurm/local/report.slurm"], cwd=ROOT, env=env,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: sbatch refused slurm/local/report.slurm: sbatch: error: Batch job")


def test_a_refused_sweep_is_one_line_and_claims_no_job(tmp_path, monkeypatch):
    """Found in use: a refused sweep was a submitit traceback, with pickle files left in results/sweeps."""
    from utils.cluster.runner import execute
    from utils.experiment import make_plan, sweep_experiment

    monkeypatch.setenv("PATH", fake_slurm(tmp_path, sbatch_rc=1)["PATH"])
    monkeypatch.chdir(ROOT)
    store = tmp_path / "data" / "wlasl3_64"
    store.mkdir(parents=True)
    (store / "manifest.csv").write_text("")
    results = tmp_path / "results"

    def plan(cpus: int):
        return make_plan(sweep_experiment(["x3d_xs", "s3d"], 1, name="t", results=str(results), store=str(store),
                                          profile="slurm/local.toml", cluster={"train": {"cpus_per_task": cpus}}))  # fmt: skip

    with pytest.raises(RuntimeError) as e:
        execute(plan(1), say=lambda _: None)
    assert str(e.value).startswith("sbatch refused train-s0_wlasl3_64 of t: ") and "\n" not in str(e.value)
    assert "More processors requested" in str(e.value)
    assert not (results / "sweeps" / "t" / "submitted.json").exists()
    with pytest.raises(ResourceError, match=r"experiment t train-s0_wlasl3_64 does not fit .*--fit"):
        execute(plan(8), say=lambda _: None)


def test_sweep_honours_size_and_store_and_checks_stores(tmp_path, monkeypatch):
    """Found in use: `--size 64` still looked for wlasl3_224 / wlasl3_172, and every task failed later."""
    from utils.cluster.runner import check_inputs, gather
    from utils.experiment import make_plan, sweep_experiment

    monkeypatch.chdir(ROOT)
    by_size = make_plan(sweep_experiment(["x3d_xs", "movinet_a0"], 1, name="s", results=str(tmp_path), subset=3,
                                         data_root="d", size=64, options={"frames": 8}))  # fmt: skip
    argvs = [argv for step in by_size.steps for _, argv in step.tasks if step.kind == "train"]
    assert {a[a.index("--data") + 1] for a in argvs} == {"d/wlasl3_64"} and all("--frames" in a for a in argvs)
    assert sorted(by_size.runs) == ["movinet_a0-wlasl3_64-s0", "x3d_xs-wlasl3_64-s0"]
    mine = make_plan(sweep_experiment(["x3d_xs"], 2, name="m", results=str(tmp_path), store="stores/mine",
                                      options={"batch_size": 2, "dry_run": True}))  # fmt: skip
    assert sorted(mine.runs) == ["x3d_xs-mine-s0-dryrun", "x3d_xs-mine-s1-dryrun"]  # the one run-id rule
    missing = check_inputs(by_size, gather(by_size, slurm_states=False), create=False)
    assert missing == ["store s0_wlasl3_64 d/wlasl3_64 not found (make it with main/preprocess.py or "
                       "main/extract_keypoints.py --out d/wlasl3_64)"]  # fmt: skip


def test_sweep_cli_checks_stores_before_submitting(tmp_path):
    r = subprocess.run([sys.executable, "main/sweep.py", "--models", "x3d_xs", "--subset", "3", "--size", "64",
                        "--data-root", str(tmp_path), "--results", str(tmp_path / "results"), "--cluster", "local"],
                       cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"{tmp_path}/wlasl3_64" in r.stderr, r.stderr
    assert not (tmp_path / "results").exists()
