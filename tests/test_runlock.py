"""utils/core/runlock.py: a run's liveness lock, and the report's "interrupted" status.

The holder is a real child process; killing it with SIGKILL (what the OOM
killer and ``scancel`` after the grace time do) must release the lock
through the kernel, with no cleanup code run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_report import make_run
from utils import report
from utils.core.runlock import LOCK_NAME, RunLock, RunLockedError, lock_holder, run_is_alive

REPO = Path(__file__).resolve().parents[1]

_HOLDER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from utils.core.runlock import RunLock
    with RunLock(sys.argv[2]):
        print("locked", flush=True)
        time.sleep(120)
    """
)


@pytest.fixture
def holder():
    """Start a child that holds RunLock(run_dir); yields a function run_dir -> Popen."""
    children = []

    def start(run_dir: Path) -> subprocess.Popen:
        child = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(REPO), str(run_dir)], stdout=subprocess.PIPE, text=True
        )
        children.append(child)
        assert child.stdout.readline().strip() == "locked"
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        child.stdout.close()


def test_sigkill_releases_the_lock(tmp_path, holder):
    run_dir = tmp_path / "runs" / "r0"
    assert run_is_alive(run_dir) is None  # no lock file: an old run, or not started
    child = holder(run_dir)
    assert run_is_alive(run_dir) is True
    info = lock_holder(run_dir)
    assert info["pid"] == child.pid and info["host"] and info["started"]
    with pytest.raises(RunLockedError, match=f"pid {child.pid}") as err:
        with RunLock(run_dir):
            pass
    assert str(run_dir) in str(err.value)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    assert run_is_alive(run_dir) is False
    # and the run can be taken over (a rerun resumes it)
    with RunLock(run_dir) as lock:
        assert run_is_alive(run_dir) is True and lock_holder(run_dir)["pid"] == os.getpid()
        assert lock.path == run_dir / LOCK_NAME
    assert run_is_alive(run_dir) is False


def test_lock_is_reentrant_never_and_released_on_error(tmp_path):
    run_dir = tmp_path / "r1"
    with pytest.raises(RuntimeError, match="training failed"):
        with RunLock(run_dir):
            with pytest.raises(RunLockedError):
                with RunLock(run_dir):  # a second open file description conflicts, even in one process
                    pass
            raise RuntimeError("training failed")
    assert run_is_alive(run_dir) is False
    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_report_marks_a_killed_running_run_interrupted(tmp_path, holder, capsys):
    results = tmp_path / "results"
    make_run(results, "i3d", 0)
    killed = make_run(results, "s3d", 1, status="running")
    alive = make_run(results, "x3d_s", 2, status="running")
    old = make_run(results, "x3d_m", 3, status="running")  # written before runs held a lock
    stopped = make_run(results, "movinet_a0", 4, status="stopped")  # preempted, waiting for its requeue
    child = holder(results / "runs" / killed.run_id)
    holder(results / "runs" / alive.run_id)
    holder(results / "runs" / stopped.run_id).kill()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    assert report.main(["--results", str(results), "--no-plots"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split(" (")[0][2:]: ln for ln in out.splitlines() if ln.startswith("- ")}
    assert lines[killed.run_id].startswith(f"- {killed.run_id} (s3d): interrupted")
    assert f"pid {child.pid}" in lines[killed.run_id]
    assert lines[alive.run_id].startswith(f"- {alive.run_id} (x3d_s): running")
    assert lines[old.run_id].startswith(f"- {old.run_id} (x3d_m): running")
    assert lines[stopped.run_id].startswith(f"- {stopped.run_id} (movinet_a0): stopped")
    assert "| I3D | 100 | 1 |" in out
