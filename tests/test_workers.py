import os
import signal

import pytest

from wlasl.workers import Lost, WorkerError, run_pool


def _square_or_die(x):
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would, mid-item
    return x * x


def _raise_on_two(x):
    if x == 2:
        raise KeyError("a bug in the work function")
    return x


def test_a_killed_worker_costs_its_item_only_and_the_rest_is_done():
    results = dict(run_pool(_square_or_die, list(range(8)), workers=2))
    assert sorted(results) == list(range(8))
    lost = results.pop(3)
    assert isinstance(lost, Lost) and lost.index == 3 and lost.exitcode == -signal.SIGKILL
    assert "killed by SIGKILL (signal 9)" in lost.describe() and "OOM killer" in lost.describe()
    assert results == {x: x * x for x in range(8) if x != 3}


def test_an_exception_in_the_work_function_stops_the_pool_with_its_traceback():
    with pytest.raises(WorkerError, match=r"(?s)item 2 raised in a worker.*KeyError: 'a bug in the work function'"):
        list(run_pool(_raise_on_two, [0, 1, 2, 3, 4], workers=2))
