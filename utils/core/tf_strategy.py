"""The Keras engine's distribution strategy, chosen in one place.

- Several SLURM tasks (``srun`` over nodes, or several tasks on one node):
  TensorFlow's own ``SlurmClusterResolver`` with ``MultiWorkerMirroredStrategy``;
  every task trains its share and gradients are all-reduced across tasks.
- One task on a node with several GPUs: ``MirroredStrategy``.
- Otherwise TensorFlow's default strategy.

``MultiWorkerMirroredStrategy`` configures TensorFlow's collective ops, which
is only possible before the first TensorFlow operation of the process: build
it before any tensor or tf.data pipeline exists (:func:`choose_strategy`
caches it, so calling it early and again later returns the same object).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from utils.core.distenv import dist_env, expand_tasks_per_node, job_port

__all__ = ["choose_strategy", "slurm_resolver", "task_gpus"]

# TensorFlow's gRPC servers listen on port_base + the task's index on its node:
# apart from torch's range (utils.core.distenv), still below the ephemeral ports.
_TF_PORT_BASE = 26000

_cached = None


def _tasks_on_this_node(env: Mapping[str, str]) -> int:
    """From SLURM_STEP_TASKS_PER_NODE (``2(x3),1``) and SLURM_NODEID; 1 when unknown."""
    raw = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if not raw:
        return 1
    per_node = expand_tasks_per_node(raw)
    node = int(env.get("SLURM_NODEID", 0))
    return per_node[node] if node < len(per_node) else per_node[0]


def task_gpus(gpus: list, env: Mapping[str, str]) -> list:
    """This task's share of the GPUs it sees, by local rank.

    SLURM may bind one GPU per task (then each task sees just its own) or show
    every GPU of the node to every task (then the tasks split them by local
    rank, as the PyTorch engine does with ``cuda:<local rank>``).
    """
    per_node = _tasks_on_this_node(env)
    if per_node <= 1 or len(gpus) < per_node:
        return list(gpus)
    share = len(gpus) // per_node
    local = int(env.get("SLURM_LOCALID", 0))
    return list(gpus[local * share : (local + 1) * share])


def slurm_resolver(gpus_per_task: int, env: Mapping[str, str] | None = None):
    """TensorFlow's ``SlurmClusterResolver`` for this job step, told how many GPUs this task uses.

    The resolver hands out GPUs itself through CUDA_VISIBLE_DEVICES, which is
    too late once TensorFlow has listed its devices, and it lists no task at
    all on a node without GPUs; so its GPU bookkeeping is given room for every
    task (``auto_set_gpu=False``) and the accelerators it reports are this
    task's real ones. The port base comes from the job id.
    """
    from utils.core.tf_env import tf

    env = os.environ if env is None else env
    base = tf.distribute.cluster_resolver.SlurmClusterResolver

    class _Resolver(base):
        def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
            return {"GPU": gpus_per_task}

    return _Resolver(port_base=job_port(env, base=_TF_PORT_BASE), gpus_per_node=1024, gpus_per_task=1,
                     auto_set_gpu=False)  # fmt: skip


# Seconds without a heartbeat before TensorFlow's coordination service declares a task dead and aborts
# every collective. Its default, 10 s, was missed by a live task on a loaded node (a two-node run on a
# 2-core machine under load 10: "heartbeat timeout"); a task that really dies closes its connections, and
# its peers fail at once anyway.
HEARTBEAT_TIMEOUT_S = 120


def _patient_coordination(resolver) -> None:
    """Configure the coordination service MultiWorkerMirroredStrategy would, with HEARTBEAT_TIMEOUT_S.

    The strategy takes no heartbeat setting; it configures the service only when none is (TensorFlow
    2.20's collective_all_reduce_strategy), so this is the same configuration, made first.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    if context.context().coordination_service is not None:
        return
    spec = resolver.cluster_spec()
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
            for job in ("chief", "worker") if job in spec.jobs]  # fmt: skip
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs, heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_S * 1000)  # fmt: skip


def choose_strategy(gpus: list | None = None, env: Mapping[str, str] | None = None):
    """The strategy for this process (see the module docstring); the same object on every call.

    Args:
        gpus: ``tf.config.list_physical_devices("GPU")`` (listed when None).
        env: the environment (``os.environ`` when None).
    """
    global _cached
    if _cached is not None:
        return _cached
    from utils.core.tf_env import tf

    env = os.environ if env is None else env
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    _, world, _ = dist_env(env)
    if world > 1 and "SLURM_PROCID" in env:
        mine = task_gpus(gpus, env)
        if gpus and len(mine) < len(gpus):
            tf.config.set_visible_devices(mine, "GPU")  # before the runtime starts: this task's GPUs only
        resolver = slurm_resolver(len(mine), env)
        _patient_coordination(resolver)
        _cached = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    elif len(gpus) > 1:
        _cached = tf.distribute.MirroredStrategy()
    else:
        return tf.distribute.get_strategy()  # the default strategy: nothing to keep
    return _cached
