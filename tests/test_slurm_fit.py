"""Jobs that fit the machine: CPUs, memory and GRES checked against sinfo (fake SLURM tools), --fit,
refusals in one line with nothing left behind, and sweeps that check their stores first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils.cluster.profile import SlurmConfig, load_profile
from utils.cluster.submit import (
    GresError,
    Node,
    ResourceError,
    check_fit,
    config_request,
    file_request,
    fit_config,
    fit_options,
    parse_gres,
    parse_mem_mb,
)
from utils.cluster.sweep import check_stores, plan_sweep, submit_sweep

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


def test_committed_preprocess_job_does_not_fit_two_cores_and_says_what_to_change():
    """Found in use: `sbatch slurm/preprocess_172.slurm` asks 4 CPUs of a 2-CPU node."""
    req = file_request((ROOT / "slurm" / "preprocess_172.slurm").read_text())
    assert (req.cpus_per_task, req.mem_mb, req.gres) == (4, 8192, None)
    with pytest.raises(ResourceError) as e:
        check_fit(req, [NODE], job="slurm/preprocess_172.slurm")
    msg = str(e.value)
    assert "asks for 4 CPUs per node" in msg and "the most is 2: --cpus-per-task=2" in msg
    assert "main/submit.py --fit slurm/preprocess_172.slurm" in msg and "slurm/local.toml" in msg
    assert "\n" not in msg
    assert fit_options(req, [NODE]) == ["--cpus-per-task=2"]
    check_fit(file_request((ROOT / "slurm" / "local" / "preprocess_172.slurm").read_text()), [NODE], job="x")


def test_training_job_needs_gpus_cpus_and_memory_the_node_lacks():
    req = file_request((ROOT / "slurm" / "i3d.slurm").read_text())
    with pytest.raises(GresError, match=r"asks for --gres=gpu:1, but no node .* --no-gpu"):
        check_fit(req, [NODE], job="slurm/i3d.slurm")
    no_gpu = file_request((ROOT / "slurm" / "i3d.slurm").read_text(), ("--gres=none",))
    with pytest.raises(ResourceError, match=r"8 CPUs per node .* 32768 MB of memory \(the most is 21694 MB"):
        check_fit(no_gpu, [NODE], job="slurm/i3d.slurm")
    assert fit_options(req, [NODE]) == ["--cpus-per-task=2", "--mem=21694M", "--gres=none"]
    big = Node("g1", cpus=64, mem_mb=512000, gres={"gpu": 4, "gpu:a100": 4})
    check_fit(req, [NODE, big], job="x")  # one node that fits is enough
    with pytest.raises(ResourceError, match="gpu:8"):
        check_fit(config_request(SlurmConfig(gpus="gpu:8")), [big], job="x")
    fitted, said = fit_config(load_profile(ROOT / "slurm" / "cluster.toml")["train"], [NODE])
    assert (fitted.cpus_per_task, fitted.mem_gb, fitted.gpus) == (2, 21, None) and len(said) == 3


def test_submit_cli_refuses_in_one_line_and_fits_on_request(tmp_path):
    env = fake_slurm(tmp_path)
    cmd = [sys.executable, "main/submit.py"]
    r = subprocess.run([*cmd, "slurm/preprocess_172.slurm"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--cpus-per-task=2" in r.stderr, r.stderr
    assert not (tmp_path / "sbatch.args").exists(), "a job that cannot fit was submitted"
    r = subprocess.run([*cmd, "--fit", "slurm/i3d.slurm", "--", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "submitted job 4242 fitted with --cpus-per-task=2 --mem=21694M --gres=none" in r.stdout
    assert (tmp_path / "sbatch.args").read_text().split() == [
        "--parsable", "--cpus-per-task=2", "--mem=21694M", "--gres=none", "slurm/i3d.slurm", "--dry-run"]  # fmt: skip


def test_refused_sbatch_is_one_line(tmp_path):
    env = fake_slurm(tmp_path, sbatch_rc=1)
    r = subprocess.run([sys.executable, "main/submit.py", "slurm/local/report.slurm"], cwd=ROOT, env=env,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: sbatch refused slurm/local/report.slurm: sbatch: error: Batch job")


def test_sweep_refused_by_the_scheduler_is_one_line_and_leaves_no_pickles(tmp_path, monkeypatch, capfd):
    """Found in use: a refused sweep was a submitit traceback, with pickle files left in results/sweeps."""
    monkeypatch.setenv("PATH", fake_slurm(tmp_path, sbatch_rc=1)["PATH"])
    results = tmp_path / "results"
    tasks = plan_sweep(["x3d_xs", "s3d"], 1, results=str(results), name="t")
    with pytest.raises(RuntimeError) as e:
        submit_sweep(tasks, name="t", results=results, cluster="slurm", slurm=SlurmConfig(cpus_per_task=1))
    assert str(e.value).startswith("slurm refused sweep t: ") and "\n" not in str(e.value)
    assert "More processors requested" in str(e.value) and not capfd.readouterr().err
    assert not (results / "sweeps" / "t").exists()
    with pytest.raises(ResourceError, match=r"sweep t does not fit .*--fit"):
        submit_sweep(tasks, name="t", results=results, cluster="slurm", slurm=SlurmConfig(cpus_per_task=8))
    assert not (results / "sweeps" / "t").exists()


def test_sweep_honours_size_and_store_and_checks_stores(tmp_path):
    """Found in use: `--size 64` still looked for wlasl3_224 / wlasl3_172, and every task failed later."""
    by_size = plan_sweep(["x3d_xs", "movinet_a0"], 1, subset=3, data_root="d", model={"size": 64, "frames": 8})
    assert {t.config["data"]["root"] for t in by_size} == {"d/wlasl3_64"}
    assert all(t.config["model"]["size"] == 64 for t in by_size)
    mine = plan_sweep(["x3d_xs"], 1, store="stores/mine", data={"batch_size": 2}, preset={"train": {"lr": 0.1}})
    assert mine[0].config["data"] == {"batch_size": 2, "root": "stores/mine"} and mine[0].config["train"]["lr"] == 0.1
    with pytest.raises(FileNotFoundError) as e:
        check_stores(by_size, subset=3)
    assert "d/wlasl3_64 (for movinet_a0, x3d_xs; make it with: python main/preprocess.py" in str(e.value)
    assert "--subset 3 --size 64 --out d/wlasl3_64" in str(e.value)


def test_sweep_cli_checks_stores_before_submitting(tmp_path):
    r = subprocess.run([sys.executable, "main/sweep.py", "--models", "x3d_xs", "--subset", "3", "--size", "64",
                        "--data-root", str(tmp_path), "--results", str(tmp_path / "results"), "--cluster", "local"],
                       cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"{tmp_path}/wlasl3_64" in r.stderr, r.stderr
    assert not (tmp_path / "results").exists()
