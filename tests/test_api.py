"""The published parallelbar API, argument checking, laziness and serialization."""
import inspect
import itertools
import multiprocessing
import time

import psutil
import pytest

import tasks
from parallelbar_clone import (Options, ProgressPool, RunTimeoutError, progress_imap,
                               progress_imapu, progress_map, progress_starmap)
from parallelbar_clone import schedule
from parallelbar_clone.options import parse_memory

PUBLISHED = ["func", "tasks", "initializer", "initargs", "n_cpu", "chunk_size", "context",
             "total", "disable", "process_timeout", "error_behavior", "set_error_value",
             "executor", "need_serialize", "maxtasksperchild", "used_add_progress_decorator",
             "return_failed_tasks", "timeout"]


@pytest.mark.parametrize("fn", [progress_map, progress_starmap, progress_imap, progress_imapu])
def test_signature_is_the_published_one(fn):
    params = inspect.signature(fn).parameters
    positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == PUBLISHED
    defaults = {n: p.default for n, p in params.items() if n not in ("func", "tasks")}
    assert defaults["initargs"] == () and defaults["error_behavior"] == "raise"
    assert defaults["executor"] == "processes" and defaults["disable"] is False
    assert params["options"].kind is inspect.Parameter.VAR_KEYWORD  # new ones: keyword-only
    with pytest.raises(TypeError, match="unexpected keyword argument.*colour.*memory_limit"):
        fn(tasks.times_ten, range(3), colour="blue")
    assert "func" in fn.__doc__ and "memory_limit" in fn.__doc__


def test_four_functions(start_method):
    data = list(range(50))
    expected = [x * 10 for x in data]
    kw = dict(n_cpu=2, context=start_method, disable=True)
    assert progress_map(tasks.times_ten, data, **kw) == expected
    assert progress_imap(tasks.times_ten, data, **kw) == expected
    assert sorted(progress_imapu(tasks.times_ten, data, **kw)) == expected
    assert progress_starmap(tasks.add, [(x, 1) for x in data], **kw) == [x + 1 for x in data]


def test_imapu_returns_in_completion_order():
    # task 0 sleeps long, the others are quick: it must come last
    with ProgressPool(n_cpu=2, disable=True, chunk_size=1) as pool:
        order = list(pool.imap_unordered(_sleepy, [0, 1, 2, 3, 4, 5]))
    assert sorted(order) == [0, 1, 2, 3, 4, 5] and order[-1] == 0


def _sleepy(x):
    import time
    time.sleep(3 if x == 0 else 0.01)
    return x


@pytest.mark.parametrize("kwargs,error,words", [
    ({"error_behavior": "explode"}, ValueError, ["'explode'", "'raise'", "'coerce'", "'ignore'"]),
    ({"executor": "gpu"}, ValueError, ["'gpu'", "'processes'", "'threads'"]),
    ({"n_cpu": 0}, ValueError, ["n_cpu", "at least 1", "0"]),
    ({"n_cpu": 2.5}, TypeError, ["n_cpu", "float"]),
    ({"process_timeout": -1}, ValueError, ["process_timeout", "-1"]),
    ({"timeout": 0}, ValueError, ["timeout", "0"]),
    ({"memory_limit": "lots"}, ValueError, ["'lots'", "MB", "GiB"]),
    ({"memory_limit": -5}, ValueError, ["memory_limit", "-5"]),
    ({"context": "teleport"}, ValueError, ["'teleport'", "'spawn'"]),
    ({"chunk_size": 0}, ValueError, ["chunk_size"]),
    ({"disable": "yes"}, TypeError, ["disable", "'yes'"]),
    ({"initializer": 5}, TypeError, ["initializer", "int"]),
    ({"executor": "threads", "memory_limit": "1GB"}, ValueError, ["memory_limit", "processes"]),
])
def test_bad_arguments_fail_before_any_process_starts(kwargs, error, words):
    before = len(psutil.Process().children(recursive=True))
    with pytest.raises(error) as info:
        progress_map(tasks.times_ten, range(3), **kwargs)
    for word in words:
        assert word in str(info.value)
    assert len(psutil.Process().children(recursive=True)) == before


def test_bad_func_and_tasks():
    with pytest.raises(TypeError, match="func must be callable"):
        progress_map(42, range(3))
    with pytest.raises(TypeError, match="func must be callable, got int 42"):
        progress_starmap(42, [(1, 2)])
    with ProgressPool(n_cpu=1, disable=True) as pool:
        with pytest.raises(TypeError, match="func must be callable"):
            pool.starmap(42, [(1, 2)])
    with pytest.raises(TypeError, match="tasks must be iterable"):
        progress_map(tasks.times_ten, 42, disable=True)


def test_memory_strings():
    assert parse_memory("512MB") == 512 * 10 ** 6
    assert parse_memory("2GiB") == 2 * 2 ** 30
    assert parse_memory("1.5 gb") == 1_500_000_000
    assert parse_memory(1000) == 1000
    assert Options(memory_limit="1KiB").memory_limit == 1024


def test_pool_options_cannot_change_per_call():
    with ProgressPool(n_cpu=1, disable=True) as pool:
        with pytest.raises(TypeError, match="n_cpu"):
            pool.map(tasks.times_ten, range(3), n_cpu=4)
        with pytest.raises(TypeError, match="unexpected option"):
            pool.map(tasks.times_ten, range(3), colour="blue")


def test_generator_without_total_is_fine(capsys):
    result = progress_map(tasks.times_ten, (x for x in range(30)), n_cpu=2)
    assert result == [x * 10 for x in range(30)]
    err = capsys.readouterr().err
    assert "30it" in err and "%" not in err.replace("100%", "")


def test_return_failed_tasks():
    data = list(range(N := 12))
    results, failed = progress_map(tasks.raises, data, n_cpu=2, error_behavior="coerce",
                                   set_error_value="x", return_failed_tasks=True, disable=True)
    assert results[tasks.FAULT_AT] == "x" and failed == [tasks.FAULT_AT]
    results, failed = progress_imapu(tasks.raises, data, n_cpu=2, error_behavior="ignore",
                                     return_failed_tasks=True, disable=True)
    assert len(results) == N - 1 and failed == [tasks.FAULT_AT]


def test_dill_fallback_for_lambdas_and_closures(start_method):
    offset = 7

    def local(x):
        return x + offset

    kw = dict(n_cpu=2, context=start_method, disable=True)
    assert progress_map(lambda x: x * 2, range(10), **kw) == [x * 2 for x in range(10)]
    assert progress_map(local, range(10), **kw) == [x + 7 for x in range(10)]
    assert progress_map(tasks.times_ten, range(5), initializer=lambda: None, **kw) == \
        [x * 10 for x in range(5)]
    # tasks and results that only dill can carry
    funcs = progress_map(_make_adder, range(3), **kw)
    assert [f(1) for f in funcs] == [1, 2, 3]
    assert progress_map(_call, [lambda: 1, lambda: 2], need_serialize=True, **kw) == [1, 2]


def _make_adder(n):
    return lambda x: x + n


def _call(f):
    return f()


def test_maxtasksperchild_recycles_workers(start_method):
    pids = progress_map(tasks.pid_of, range(12), n_cpu=2, maxtasksperchild=2,
                        context=start_method, disable=True)
    assert len(set(pids)) >= 6


def test_whole_call_timeout():
    with pytest.raises(RunTimeoutError) as info:
        progress_map(tasks.always_c_hangs, range(4), n_cpu=2, timeout=0.5, disable=True)
    assert isinstance(info.value, multiprocessing.TimeoutError)
    assert isinstance(info.value, TimeoutError)


def _counting(pulled):
    """An endless generator of 0, 1, 2... that counts in ``pulled[0]`` what was taken."""
    def endless():
        for i in itertools.count():
            pulled[0] += 1
            yield i
    return endless


def test_imap_is_lazy_with_an_endless_generator():
    """A consumer that pauses stops the reading: the count of items pulled from an
    endless input settles, below what the read-ahead policy allows (each worker one
    chunk running, one queued, one more; chunks at most MAX_CHUNK tasks)."""
    pulled = [0]
    endless = _counting(pulled)
    with ProgressPool(n_cpu=2, disable=True) as pool:
        it = pool.imap(tasks.times_ten, endless())
        first = [next(it) for _ in range(2000)]
        assert first == [x * 10 for x in range(2000)]
        readings = [pulled[0]]
        for _ in range(60):        # the consumer pauses; reading must stop
            time.sleep(0.25)
            readings.append(pulled[0])
            if len(readings) >= 3 and readings[-1] == readings[-2] == readings[-3]:
                break
        it.close()
    assert readings[-1] == readings[-2] == readings[-3], readings
    # one more chunk may be on its way in when the cap is reached
    assert readings[-1] <= (3 * 2 + 1) * schedule.MAX_CHUNK, readings


def test_read_ahead_of_slow_tasks_is_seconds_of_work():
    """10 ms tasks on 2 workers: the input is read about READ_AHEAD_SECONDS of work per
    worker ahead of the consumer (400 tasks), not up to the byte bound (~300k such tasks),
    once chunk sizes have settled (before, two chunks a worker at most)."""
    pulled = [0]
    endless = _counting(pulled)
    with ProgressPool(n_cpu=2, disable=True) as pool:
        it = pool.imap(tasks.sleep_a_hundredth, endless())
        assert [next(it) for _ in range(300)] == list(range(300))
        time.sleep(0.3)                     # the consumer pauses
        seen = pulled[0]
        it.close()
    by_time = int(schedule.READ_AHEAD_SECONDS * 2 / 0.01)
    assert 300 < seen <= 300 + by_time * 1.5, seen


def test_imap_unordered_streams_before_input_ends():
    with ProgressPool(n_cpu=2, disable=True) as pool:
        it = pool.imap_unordered(tasks.times_ten, itertools.count())
        got = set(itertools.islice(it, 5000))
        it.close()
    assert len(got) == 5000


def test_pool_starmap_and_context_manager(start_method):
    with ProgressPool(n_cpu=2, context=start_method, disable=True) as pool:
        assert pool.starmap(tasks.add, [(x, x) for x in range(20)]) == [2 * x for x in range(20)]
    with pytest.raises(ValueError, match="closed"):
        pool.map(tasks.times_ten, range(3))


def test_pool_reuse_keeps_workers():
    with ProgressPool(n_cpu=2, disable=True) as pool:
        first = set(pool.map(tasks.pid_of, range(200)))
        second = set(pool.map(tasks.pid_of, range(200)))
    assert first == second and len(first) <= 2


def test_iterator_that_raises_fails_the_call():
    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        progress_map(tasks.times_ten, broken(), n_cpu=2, disable=True, error_behavior="coerce")


def test_empty_input():
    assert progress_map(tasks.times_ten, [], disable=True) == []
    assert progress_imapu(tasks.times_ten, iter([]), disable=True) == []


@pytest.mark.parametrize("fn", [progress_map, progress_imap, progress_imapu])
def test_failed_tasks_are_returned_in_task_order(fn):
    """(The published package listed them in the order they failed.)"""
    results, failed = fn(tasks.raises_on_multiples_of_three, range(30), n_cpu=2,
                         chunk_size=1, error_behavior="coerce", return_failed_tasks=True,
                         disable=True)
    assert failed == list(range(0, 30, 3))
    assert len(results) == 30
