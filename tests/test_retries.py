"""retries=: flaky tasks, timeouts and worker deaths get more attempts; only final
failures reach the ERROR bar, and they say how many attempts they had."""
import re
import time

import pytest

import tasks
from parallelbar_clone import TaskTimeoutError, WorkerDiedError, progress_map


@pytest.mark.parametrize("kind,extra", [("raise", {}), ("hang", {"process_timeout": 0.3}),
                                        ("exit", {})])
def test_first_failures_are_retried(tmp_path, start_method, kind, extra):
    func = tasks.fails_first_time(str(tmp_path), kind)
    result = progress_map(func, range(12), retries=1, n_cpu=2, context=start_method,
                          disable=True, **extra)
    assert result == [x * 10 for x in range(12)]


def test_final_failure_carries_its_history(capsys):
    result = progress_map(tasks.raises, range(12), retries=2, n_cpu=2, error_behavior="coerce")
    exc = result[tasks.FAULT_AT]
    assert isinstance(exc, ValueError) and exc.attempts == 3
    assert exc.previous_errors == ["ValueError: task five is bad"] * 2
    err = capsys.readouterr().err
    assert re.findall(r"ERROR:.*\|\s*(\d+)/12", err)[-1] == "1"  # final failures only
    assert "retries=2" in err


def test_retry_on_filters_and_raise_mode_raises_after_retries():
    result = progress_map(tasks.raises, range(12), retries=3, retry_on=KeyError, n_cpu=2,
                          error_behavior="coerce", disable=True)
    assert not hasattr(result[tasks.FAULT_AT], "attempts")  # ValueError: not retried
    with pytest.raises(WorkerDiedError) as info:
        progress_map(tasks.exits, range(12), retries=2, n_cpu=2, disable=True)
    assert info.value.attempts == 3


def test_retry_delay_and_backoff(tmp_path):
    stamps = tmp_path / "stamps"

    def stamp_and_fail(x):
        with open(stamps, "a") as f:
            f.write(f"{time.monotonic()}\n")
        raise ConnectionError("down")

    result = progress_map(stamp_and_fail, [0], retries=2, retry_delay=0.2, retry_backoff=2,
                          error_behavior="coerce", disable=True, executor="threads")
    assert isinstance(result[0], ConnectionError) and result[0].attempts == 3
    t = [float(v) for v in stamps.read_text().split()]
    assert t[1] - t[0] >= 0.2 and t[2] - t[1] >= 0.4  # lower bounds only: never flaky


def test_retried_timeouts_still_time_out():
    result = progress_map(tasks.c_hang, range(12), retries=1, process_timeout=0.2, n_cpu=2,
                          error_behavior="coerce", disable=True)
    assert isinstance(result[tasks.FAULT_AT], TaskTimeoutError)
    assert result[tasks.FAULT_AT].attempts == 2
