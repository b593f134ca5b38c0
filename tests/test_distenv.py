"""More than one node: the rendezvous from made-up SLURM environments, and two processes that
meet through the engines' own code paths (gloo for PyTorch, MultiWorkerMirroredStrategy for Keras)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from utils.core.distenv import (
    dist_env,
    expand_nodelist,
    expand_tasks_per_node,
    first_node,
    job_port,
    per_process_batch,
    rendezvous,
    set_master_env,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("nodelist, hosts", [
    ("node[01-02]", ["node01", "node02"]),
    ("gpu-a,gpu-b", ["gpu-a", "gpu-b"]),
    ("gpu[03-05,07],cpu1", ["gpu03", "gpu04", "gpu05", "gpu07", "cpu1"]),
    ("n7", ["n7"]),
    ("rack[1-2]-n[8-9]", ["rack1-n8", "rack1-n9", "rack2-n8", "rack2-n9"]),
    ("a[098-101]", ["a098", "a099", "a100", "a101"]),
])  # fmt: skip
def test_compressed_node_lists_expand(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts
    assert first_node(nodelist) == hosts[0]


@pytest.mark.parametrize("bad", ["node[01-02", "node01]", "node[a-b]", "node[5-3]"])
def test_unreadable_node_lists_are_errors(bad, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol to fall back on
    with pytest.raises(ValueError, match="node list"):
        first_node(bad)


def test_rendezvous_comes_from_the_first_node_and_the_job_id():
    """Found in use: MASTER_ADDR defaulted to 127.0.0.1, so ranks on a second node dialled themselves."""
    env = {"SLURM_JOB_NODELIST": "gpu[03-05,07],cpu1", "SLURM_JOB_ID": "123456", "SLURM_PROCID": "3", "SLURM_NTASKS": "4"}
    assert rendezvous(env) == ("gpu03", 29500 + 123456 % 2000)
    assert job_port(env) == job_port({**env, "SLURM_PROCID": "0"})  # every rank computes the same port
    assert job_port({"SLURM_JOB_ID": "123457"}) != job_port(env)
    assert rendezvous({}) == ("127.0.0.1", 29500)
    assert rendezvous({**env, "MASTER_ADDR": "head", "MASTER_PORT": "40000"}) == ("head", 40000)
    mine = dict(env)
    assert set_master_env(mine) == ("gpu03", job_port(env))
    assert (mine["MASTER_ADDR"], mine["MASTER_PORT"]) == ("gpu03", str(job_port(env)))
    with pytest.raises(ValueError, match="MASTER_PORT"):
        rendezvous({"MASTER_PORT": "x"})


def test_the_global_batch_splits_evenly_or_is_refused_with_the_nearest_batch():
    assert per_process_batch(8, 1) == 8 and per_process_batch(8, 4) == 2
    with pytest.raises(ValueError, match="split evenly over the run's 4 processes.*--batch-size 8"):
        per_process_batch(9, 4)


def test_tasks_per_node_expand():
    assert expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1] and expand_tasks_per_node("4") == [4]
    with pytest.raises(ValueError, match="tasks per node"):
        expand_tasks_per_node("2x3")


def test_each_keras_task_takes_its_share_of_the_gpus():
    pytest.importorskip("utils.core.tf_strategy")
    from utils.core.tf_strategy import task_gpus

    gpus = ["g0", "g1", "g2", "g3"]
    env = {"SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_NODEID": "1", "SLURM_LOCALID": "1"}
    assert task_gpus(gpus, env) == ["g2", "g3"]
    assert task_gpus(["g0"], env) == ["g0"]  # SLURM bound one GPU to this task
    assert task_gpus([], env) == []


def test_ranks_from_srun_and_torchrun():
    assert dist_env({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "1"}) == (1, 2, 1)
    assert dist_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    # The batch script of a 2-task job is one process: the step's own count wins.
    assert dist_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "1"}) == (0, 1, 0)
    assert dist_env({}) == (0, 1, 0)


def _free_job_id() -> int:
    """A made-up job id whose derived port is free on this machine."""
    for job in range(os.getpid() % 2000, os.getpid() % 2000 + 2000):
        port = job_port({"SLURM_JOB_ID": str(job)})
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return job
    pytest.skip("no free port in the derived range")


def _two_ranks(code: str, env: dict, timeout: int) -> list[str]:
    procs = []
    for rank in (0, 1):
        renv = {**os.environ, **env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NTASKS": "2",
                "SLURM_STEP_NUM_TASKS": "2", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
        renv.pop("MASTER_ADDR", None)
        renv.pop("MASTER_PORT", None)
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=renv, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("the two ranks did not meet (a rendezvous that waits forever)") from None
        assert p.returncode == 0, err[-3000:]
        outs.append(out.strip().splitlines()[-1])
    return outs


TORCH_RANK = """
from models.engine_torch import _Setup
from utils.core.config import config_from_dict
import os, torch
setup = _Setup(config_from_dict({"model": {"name": "x3d_xs"}, "data": {"root": "unused"}}))
seen = setup.any_rank(setup.rank == 1)  # an all_reduce: true on rank 0 only if rank 1 took part
print(setup.rank, setup.world, os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], seen)
torch.distributed.destroy_process_group()
"""


def test_two_processes_meet_through_the_torch_engine():
    """The engine's own _Setup, two local processes with srun's variables and a made-up node list."""
    job = _free_job_id()
    env = {"SLURM_JOB_ID": str(job), "SLURM_JOB_NODELIST": "localhost,node-b"}
    outs = _two_ranks(TORCH_RANK, env, timeout=120)
    port = str(job_port({"SLURM_JOB_ID": str(job)}))
    assert outs == [f"0 2 localhost {port} True", f"1 2 localhost {port} True"]


TF_RANK = """
from utils.core.tf_strategy import choose_strategy
from utils.core.tf_env import tf
strategy = choose_strategy(gpus=[])
total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)
multi = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
print(multi, strategy.num_replicas_in_sync, float(total))
"""


def test_two_processes_meet_through_the_keras_strategy():
    """TensorFlow's SlurmClusterResolver + MultiWorkerMirroredStrategy, as build_scope chooses them."""
    job = _free_job_id()
    env = {"SLURM_JOB_ID": str(job), "SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_TASKS_PER_NODE": "2",
           "SLURM_JOB_NODELIST": "localhost", "TF_CPP_MIN_LOG_LEVEL": "3"}  # fmt: skip
    outs = _two_ranks(TF_RANK, env, timeout=240)
    assert outs == ["True 2 2.0"] * 2  # one replica per process, and the sum crossed both


def test_keras_strategy_is_the_default_for_one_process(monkeypatch):
    tf_strategy = pytest.importorskip("utils.core.tf_strategy")
    for key in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    from utils.core.tf_env import tf

    assert tf_strategy.choose_strategy(gpus=[]) is tf.distribute.get_strategy()
