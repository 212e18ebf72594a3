"""executor='threads': same outcomes, no pickling, and timeouts that never touch the caller."""
import threading
import time

import pytest

import tasks
from parallelbar_clone import InitializerError, TaskTimeoutError, progress_map, progress_imapu


def test_threads_map_and_unpicklable_values():
    lock_results = progress_map(lambda x: threading.Lock(), range(5), executor="threads",
                                disable=True)
    assert len(lock_results) == 5
    assert progress_map(tasks.times_ten, range(100), executor="threads", n_cpu=4,
                        disable=True) == [x * 10 for x in range(100)]


def test_thread_timeout_fills_the_slot_at_the_deadline():
    main = threading.main_thread()
    interrupted = []

    def slow(x):
        if x == 2:
            end = time.monotonic() + 30
            while time.monotonic() < end:  # pure Python: the pool stops it when abandoned
                time.sleep(0.01)
        return x

    started = time.monotonic()
    try:
        result = progress_map(slow, range(6), executor="threads", n_cpu=2, process_timeout=0.3,
                              error_behavior="coerce", disable=True)
    except KeyboardInterrupt:  # the published package interrupted the main thread
        interrupted.append(True)
    assert not interrupted and threading.current_thread() is main
    assert isinstance(result[2], TaskTimeoutError)
    assert [r for i, r in enumerate(result) if i != 2] == [0, 1, 3, 4, 5]
    assert time.monotonic() - started < 5   # the slow task would run 30 s


def test_thread_errors_and_initializer():
    result = progress_imapu(tasks.raises, range(12), executor="threads", n_cpu=3,
                            error_behavior="ignore", disable=True)
    assert sorted(result) == [x * 10 for x in range(12) if x != tasks.FAULT_AT]
    with pytest.raises(InitializerError):
        progress_map(tasks.times_ten, range(3), executor="threads",
                     initializer=tasks.failing_initializer, disable=True)
    with pytest.raises(ValueError):
        progress_map(tasks.raises, range(12), executor="threads", disable=True)
