"""The decorators: stopit_after_timeout, add_progress outside a pool, memory_limit."""
import pickle
import time

import pytest

import tasks
from parallelbar_clone import MemoryLimitError, progress_map
from parallelbar_clone.tools import cpu_bench, fibonacci
from parallelbar_clone.wrappers import add_progress, memory_limit, stopit_after_timeout


@stopit_after_timeout(0.2)
def sleepy():
    time.sleep(30)


@stopit_after_timeout(0.2, raise_exception=False)
def sleepy_quiet():
    time.sleep(30)


@stopit_after_timeout(5)
def quick():
    return 42


def test_stopit_after_timeout():
    started = time.monotonic()
    with pytest.raises(TimeoutError, match='function "sleepy" took longer than 0.2 s.'):
        sleepy()
    assert sleepy_quiet() == 'function "sleepy_quiet" took longer than 0.2 s.'
    assert quick() == 42
    time.sleep(0.1)  # no late timeout may fire after a normal return
    assert time.monotonic() - started < 10


def test_stopit_in_worker_processes():
    result = progress_map(_stopit_task, range(4), n_cpu=2, error_behavior="coerce", disable=True)
    assert result[0] == 0 and isinstance(result[1], TimeoutError)


@stopit_after_timeout(0.2)
def _stopit_task(x):
    if x == 1:
        time.sleep(30)
    return x


def test_add_progress_outside_a_pool_just_calls():
    @add_progress(error_handling="coerce", set_error_value="bad")
    def f(x):
        if x < 0:
            raise ValueError
        return x

    assert f(3) == 3 and f(-1) == "bad"
    with pytest.raises(ValueError, match="error_handling"):
        add_progress(error_handling="explode")


def test_memory_limit_decorator():
    assert tasks.greedy(5) == 5_000_000
    with pytest.raises(MemoryLimitError) as info:
        tasks.greedy(200)
    assert isinstance(info.value, MemoryError)
    assert tasks.greedy(5) == 5_000_000  # the limit is lifted after each call
    assert pickle.loads(pickle.dumps(tasks.greedy)) is tasks.greedy
    result = progress_map(tasks.greedy, [5, 200, 5], n_cpu=2, error_behavior="coerce",
                          disable=True)
    assert result[0] == result[2] == 5_000_000 and isinstance(result[1], MemoryLimitError)
    inline = memory_limit("50MB")(tasks.times_ten)
    assert pickle.loads(pickle.dumps(inline))(3) == 30


def test_tools():
    assert fibonacci(20) == 6765
    assert cpu_bench(1000) == 1000


def test_library_errors_survive_pickling():
    from parallelbar_clone import errors
    samples = [
        errors.TaskTimeoutError("t", task_position=3, timeout=1.5),
        errors.MemoryLimitError("m", task_position=1, limit=10, used=20),
        errors.WorkerDiedError("w", pid=5, exitcode=-11, task_position=2),
        errors.InitializerError("i"), errors.SerializationError("s"),
        errors.RunTimeoutError("r"),
    ]
    for exc in samples:
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
        assert back.__dict__ == exc.__dict__
    assert pickle.loads(pickle.dumps(samples[2])).signal_name == "SIGSEGV"
