"""``--distributed``: keras-tuner's chief/worker mode over gRPC.

One process is the chief: it holds the oracle and answers the workers'
requests (CPU only, no training). Every other process is a worker that asks
the chief for a trial, trains it and reports back. keras-tuner reads three
variables; when they are unset they are derived here:

- ``KERASTUNER_TUNER_ID``: ``chief`` or ``tuner<N>``. In a SLURM job array the
  first task (``SLURM_ARRAY_TASK_MIN``, usually 0) is the chief and task N is
  ``tuner<N>``. This is the only place roles are decided: the job files
  (``slurm/tune_<family>_distributed.slurm``) just run the tuning script.
- ``KERASTUNER_ORACLE_PORT``: a port derived from the study name (stable, so a
  requeued chief listens where its workers look).
- ``KERASTUNER_ORACLE_IP``: the chief listens on all interfaces and writes its
  host name and port to ``<study>/chief_address.json`` on the shared results
  file system; array tasks run on different nodes, so workers read it there
  (outside an array, the job's first node is tried too).
"""

from __future__ import annotations

import json
import os
import socket
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from utils.core.distenv import first_node
from utils.core.records import write_json

__all__ = ["ADDRESS_FILE", "Role", "apply_env", "connect_worker", "first_node", "publish_chief", "resolve_role", "serve_oracle"]

ENV_ID, ENV_IP, ENV_PORT = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"
ADDRESS_FILE = "chief_address.json"


@dataclass(frozen=True)
class Role:
    """This process's part in a distributed study.

    Attributes:
        tuner_id: ``chief`` or ``tuner<N>``.
        host: the chief's address as given (KERASTUNER_ORACLE_IP); None = derive.
        port: the chief's port.
    """

    tuner_id: str
    host: str | None
    port: int

    @property
    def is_chief(self) -> bool:
        return "chief" in self.tuner_id  # keras-tuner's own test (distribute/utils.py)


def default_port(study: str) -> int:
    """A port in 20000-39999 derived from the study name."""
    return 20000 + zlib.crc32(study.encode()) % 20000


def resolve_role(environ: Mapping[str, str], study: str) -> Role:
    """Who this process is, from KERASTUNER_* or the SLURM array.

    Raises:
        ValueError: neither KERASTUNER_TUNER_ID nor SLURM_ARRAY_TASK_ID is set,
            or the port is not a number.
    """
    tuner_id = environ.get(ENV_ID)
    if not tuner_id:
        task = environ.get("SLURM_ARRAY_TASK_ID")
        if task is None:
            raise ValueError(
                "--distributed needs KERASTUNER_TUNER_ID (chief in one process, tuner1, tuner2, ... in the others) "
                "or a SLURM job array (its first task is the chief); neither is set"
            )
        first = environ.get("SLURM_ARRAY_TASK_MIN", "0")
        tuner_id = "chief" if task == first else f"tuner{task}"
    raw_port = environ.get(ENV_PORT)
    try:
        port = int(raw_port) if raw_port else default_port(study)
    except ValueError:
        raise ValueError(f"{ENV_PORT} expected a port number, received {raw_port!r}") from None
    return Role(tuner_id=tuner_id, host=environ.get(ENV_IP) or None, port=port)


def apply_env(role: Role, host: str) -> None:
    """Set the variables keras-tuner reads (before the Tuner is built).

    The chief only serves the oracle: it hides the GPUs (before TensorFlow
    or PyTorch is imported), so a GPU of its node stays free for a worker.
    """
    os.environ[ENV_ID] = role.tuner_id
    os.environ[ENV_IP] = host
    os.environ[ENV_PORT] = str(role.port)
    if role.is_chief:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def publish_chief(role: Role, study_root: Path) -> str:
    """Chief: pick the listen address and tell the workers where it is.

    Returns:
        The address to listen on: the given KERASTUNER_ORACLE_IP when it is an
        IP address, else all interfaces.
    """
    # A host *name* is published but not bound: on many nodes the name resolves
    # to 127.0.1.1 (/etc/hosts), which other nodes cannot reach; all
    # interfaces are. An IP address (127.0.0.1 in tests) is bound as given.
    listen = role.host if role.host and _is_ip(role.host) else "0.0.0.0"
    public = role.host if role.host and role.host not in ("0.0.0.0", "::", "[::]") else socket.gethostname()
    write_json(study_root / ADDRESS_FILE, {"host": public, "port": role.port, "pid": os.getpid(),
                                          "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return listen


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _candidates(role: Role, study_root: Path, environ: Mapping[str, str]) -> list[tuple[str, int]]:
    if role.host:
        return [(role.host, role.port)]
    found = []
    path = study_root / ADDRESS_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            found.append((str(data["host"]), int(data["port"])))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # being rewritten by a starting chief: read again next round
    if not found and "SLURM_ARRAY_TASK_ID" not in environ and environ.get("SLURM_JOB_NODELIST"):
        node = first_node(environ["SLURM_JOB_NODELIST"])
        if node:
            found.append((node, role.port))
    return found


def connect_worker(role: Role, study_root: Path, *, timeout_s: float, environ: Mapping[str, str] | None = None) -> str:
    """Worker: wait until the chief answers; returns the host to use.

    Raises:
        ConnectionError: nothing answered within ``timeout_s``; names the
            address(es) tried and what to check.
    """
    import grpc

    environ = os.environ if environ is None else environ
    deadline = time.monotonic() + timeout_s
    tried: list[str] = []
    while True:
        for host, port in _candidates(role, study_root, environ):
            address = f"{host}:{port}"
            if address not in tried:
                tried.append(address)
            channel = grpc.insecure_channel(address)
            try:
                grpc.channel_ready_future(channel).result(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
                if port != role.port:
                    os.environ[ENV_PORT] = str(port)
                return host
            except grpc.FutureTimeoutError:
                pass
            finally:
                channel.close()
        if time.monotonic() >= deadline:
            break
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    if not tried:
        raise ConnectionError(
            f"worker {role.tuner_id}: no address for the tuning chief after {timeout_s:.0f} s: {ENV_IP} is unset and "
            f"the chief wrote no {study_root / ADDRESS_FILE}; start the chief ({ENV_ID}=chief, or task 0 of the "
            f"array) with the same --results and --study, or set {ENV_IP}"
        )
    raise ConnectionError(
        f"worker {role.tuner_id} cannot reach the tuning chief at {', '.join(tried)} (waited {timeout_s:.0f} s); "
        f"check that the chief is running ({ENV_ID}=chief, or task 0 of the array), that {ENV_IP}/{ENV_PORT} "
        f"match it, and that the port is open between the nodes"
    )


# Seconds the chief keeps answering after the study ended (see serve_oracle).
LINGER_S = 10.0
# Deadline of each worker -> chief call. keras-tuner waits for the chief
# forever (wait_for_ready, no deadline), so a worker whose chief is gone
# would hang its SLURM task until the time limit.
RPC_TIMEOUT_S = 30.0


class DeadlineStub:
    """Wraps keras-tuner's OracleStub so every call carries a deadline."""

    def __init__(self, stub, timeout_s: float = RPC_TIMEOUT_S):
        self._stub = stub
        self._timeout_s = timeout_s

    def __getattr__(self, name):
        call = getattr(self._stub, name)

        def with_deadline(*args, **kwargs):
            kwargs.setdefault("timeout", self._timeout_s)
            return call(*args, **kwargs)

        return with_deadline


def serve_oracle(oracle, listen: str, port: int, *, poll_s: float = 1.0) -> None:
    """Chief: answer the workers until the oracle stops and every trial ended.

    keras-tuner's own ``start_server`` does the same but re-checks every 20 s
    once stopping; this polls every ``poll_s`` and fails loudly when the port
    is taken (gRPC would otherwise share it via SO_REUSEPORT).

    Raises:
        OSError: the port cannot be bound.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer, exit_chief

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=[("grpc.so_reuseport", 0)])
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{listen}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise OSError(f"the tuning chief cannot listen on {listen}:{port} (in use?); set {ENV_PORT} to a free port")
    server.start()
    print(f"tuning chief: oracle listening on {listen}:{port}", flush=True)
    try:
        while not (servicer.stop_triggered and exit_chief(oracle)):
            time.sleep(poll_s)
        # Linger: a worker that asks just after the last trial ended (one
        # that started slowly) still gets "stopped" instead of a dead port.
        time.sleep(LINGER_S)
    finally:
        server.stop(grace=2)
