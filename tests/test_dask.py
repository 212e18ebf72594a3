"""The dask.distributed backend against a real LocalCluster (2 worker processes, 1 thread
each) that these tests start and stop themselves.

The cluster is shared by the module (starting one costs seconds), so this module's own
`no_worker_outlives_the_test` replaces conftest's: after each test every child process
must be one of the cluster's current workers. The tests that start their own cluster
(executor='dask') check that none of its processes is left.

dask gives up on a task after `distributed.scheduler.allowed-failures` worker deaths (3 by
default); the cluster here allows 1, so a crashing task costs two worker restarts.
"""
import copyreg
import ctypes
import itertools
import os
import sys
import time

import pytest

_REDUCERS = dict(copyreg.dispatch_table)
distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")


def _forget_tblib():
    """Importing distributed registers tblib's reducer for every exception class, in the
    whole process (an exception that plain pickle cannot rebuild then travels by its
    attributes). The rest of the suite tests plain pickle: give it back its table."""
    copyreg.dispatch_table.clear()
    copyreg.dispatch_table.update(_REDUCERS)


_forget_tblib()

from conftest import live_workers  # noqa: E402
from parallelbar_clone import (InitializerError, ProgressPool, TaskTimeoutError,  # noqa: E402
                               WorkerDiedError, progress_imap, progress_imapu, progress_map,
                               progress_starmap)
from parallelbar_clone.dask_backend import SLOTS_PER_THREAD  # noqa: E402

WORKERS = 2


# ------------------------------------------------------------------ tasks
def square(x):
    return x * x


def bad_seven(x):
    if x == 7:
        raise ValueError(f"task {x} is bad")
    return x * 10


def crash_at_five(x):
    if x == 5:
        os._exit(3)
    time.sleep(0.01)
    return x * 10


def segfault_at_five(x):
    if x == 5:
        ctypes.string_at(0)
    return x * 10


def hang_at_two(x):
    if x == 2:
        time.sleep(30)
    return x * 10


def flaky(path):
    """Fails the first time it runs on a path (on any worker), then succeeds."""
    if not os.path.exists(path):
        open(path, "w").close()
        raise ConnectionError(f"first try of {os.path.basename(path)}")
    return os.path.basename(path)


def set_greeting(word):
    os.environ["PB_DASK_GREETING"] = word


def greet(x):
    return f"{os.environ.get('PB_DASK_GREETING')} {x}"


def broken_initializer():
    raise RuntimeError("no database")


def worker_memory_limit(x):
    if x == 2:          # far past the limit: the nanny restarts the worker
        hog = bytearray(1_500_000_000)
        time.sleep(5)
        return len(hog)
    return distributed.get_worker().memory_manager.memory_limit


def slow_first(x):
    if x == 0:
        time.sleep(0.5)
    return x


# ------------------------------------------------------------------ fixtures
# allowed-failures 1: a crashing task costs two worker restarts, not four. connect 5 s: the
# scheduler gives up sooner on a result held by a worker that just died (30 s by default).
CONFIG = {"distributed.scheduler.allowed-failures": 1,
          "distributed.comm.timeouts.connect": "5s"}


@pytest.fixture(scope="module")
def client():
    with dask.config.set(CONFIG):
        cluster = distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1,
                                           processes=True, dashboard_address=":0")
        c = distributed.Client(cluster, set_as_default=False)
        try:
            yield c
        finally:
            c.close()
            cluster.close()
            _forget_tblib()


def _cluster_pids(c):
    c.wait_for_workers(WORKERS, timeout=30)
    return set(c.run(os.getpid).values())


@pytest.fixture(autouse=True)
def no_worker_outlives_the_test(client):
    """Overrides conftest's: the module's cluster stays up between tests."""
    yield
    deadline = time.monotonic() + 10
    while True:
        keep = _cluster_pids(client)
        left = [p for p in live_workers() if p.pid not in keep]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for proc in left:
        proc.kill()
    assert not left, f"processes outlived the test: {[p.pid for p in left]}"


# ------------------------------------------------------------------ results and errors
def test_map_results_in_order(client):
    assert progress_map(square, range(50), executor=client) == [x * x for x in range(50)]


def test_coerced_errors_carry_the_remote_traceback(client):
    out = progress_map(bad_seven, range(12), executor=client, error_behavior="coerce")
    assert out[:7] == [x * 10 for x in range(7)] and out[8:] == [x * 10 for x in range(8, 12)]
    assert isinstance(out[7], ValueError) and str(out[7]) == "task 7 is bad"
    assert "bad_seven" in out[7].traceback


def test_raise_and_ignore_and_failed_tasks(client):
    with pytest.raises(ValueError, match="task 7 is bad") as info:
        progress_map(bad_seven, range(12), executor=client)
    assert "bad_seven" in str(info.value.__cause__)
    assert progress_map(bad_seven, range(9), executor=client, error_behavior="ignore") == \
        [x * 10 for x in range(9) if x != 7]
    results, failed = progress_map(bad_seven, range(9), executor=client,
                                   error_behavior="coerce", set_error_value="x",
                                   return_failed_tasks=True)
    assert results[7] == "x" and failed == [7]


def test_lambda_closure_and_starmap(client):
    offset = 1000
    assert progress_map(lambda x: x + offset, range(20), executor=client) == \
        [x + 1000 for x in range(20)]
    assert progress_starmap(lambda a, b: a * b, [(i, 2) for i in range(5)],
                            executor=client) == [0, 2, 4, 6, 8]


def test_imap_in_order_and_imapu_in_completion_order(client):
    assert list(progress_imap(square, range(30), executor=client)) == \
        [x * x for x in range(30)]
    out = list(progress_imapu(slow_first, range(12), executor=client, chunk_size=1))
    assert sorted(out) == list(range(12)) and out[0] != 0


def test_generator_without_total(client):
    def numbers():
        for i in range(300):
            yield i

    with ProgressPool(executor=client) as pool:
        out = list(pool.imap(square, numbers()))
    assert out == [x * x for x in range(300)]


def test_endless_input_keeps_a_bounded_number_of_futures_in_flight(client):
    with ProgressPool(executor=client, disable=True) as pool:
        backend = pool._backend
        most = 0
        it = pool.imap_unordered(square, itertools.count())
        seen = 0
        for _ in it:
            seen += 1
            most = max(most, len(backend.futures))
            if seen == 20_000:
                break
        it.close()
    assert most <= 2 * SLOTS_PER_THREAD * WORKERS   # one or two chunks per slot


def test_tiny_tasks_are_batched(client):
    with ProgressPool(executor=client, disable=True) as pool:
        assert pool.map(square, range(20_000)) == [x * x for x in range(20_000)]
        submitted = next(pool._backend.keys)
    assert submitted < 2_000   # far fewer futures than tasks


# ------------------------------------------------------------------ guards
@pytest.mark.parametrize("task", [crash_at_five, segfault_at_five])
def test_a_dying_worker_fails_only_its_task(client, task):
    out = progress_map(task, range(12), executor=client, error_behavior="coerce")
    assert out[:5] == [x * 10 for x in range(5)] and out[6:] == [x * 10 for x in range(6, 12)]
    err = out[5]
    assert isinstance(err, WorkerDiedError), err
    assert err.task_position == 5 and "tcp://" in str(err) and err.worker_address in str(err)


def test_timeout_fills_the_slot_at_the_deadline(client):
    began = time.monotonic()
    out = progress_map(hang_at_two, range(6), executor=client, process_timeout=0.5,
                       error_behavior="coerce")
    assert time.monotonic() - began < 20      # against a 30 s hang
    assert isinstance(out[2], TaskTimeoutError) and isinstance(out[2], TimeoutError)
    assert out[2].task_position == 2
    assert [v for i, v in enumerate(out) if i != 2] == [0, 10, 30, 40, 50]


def test_retries(client, tmp_path):
    paths = [str(tmp_path / f"t{i}") for i in range(6)]
    assert progress_map(flaky, paths, executor=client, retries=1) == \
        [f"t{i}" for i in range(6)]


def fails_seven_until_fixed(task):
    x, fixed = task
    if os.path.exists(fixed):
        return -x        # (a task that ran again would show it)
    if x == 7:
        raise ValueError("task 7 is bad")
    return x * 10


def test_checkpoint_resume(client, tmp_path):
    journal, fixed = str(tmp_path / "run.sqlite"), str(tmp_path / "fixed")
    tasks = [(x, fixed) for x in range(10)]
    first = progress_map(fails_seven_until_fixed, tasks, executor=client, checkpoint=journal,
                         error_behavior="coerce")
    assert isinstance(first[7], ValueError)
    open(fixed, "w").close()
    again = progress_map(fails_seven_until_fixed, tasks, executor=client, checkpoint=journal,
                         error_behavior="coerce")
    assert again == [x * 10 for x in range(7)] + [-7] + [x * 10 for x in range(8, 10)]


def test_pool_reused_and_client_left_open(client):
    with ProgressPool(executor=client) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        assert sorted(pool.imap_unordered(square, range(10))) == sorted(x * x for x in range(10))
        assert pool.map(bad_seven, range(9), error_behavior="ignore") == \
            [x * 10 for x in range(9) if x != 7]
    assert client.status == "running"
    assert progress_map(square, range(3), executor=client) == [0, 1, 4]


def test_initializer_runs_once_per_dask_worker_process(client):
    assert progress_map(greet, range(4), executor=client, initializer=set_greeting,
                        initargs=("hello",)) == [f"hello {x}" for x in range(4)]
    with pytest.raises(InitializerError, match="no database"):
        progress_map(greet, range(4), executor=client, initializer=broken_initializer)


# ------------------------------------------------------------------ bad input
def test_closed_client_is_refused_at_once():
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=":0") as c:
        pass
    with pytest.raises(ValueError, match="not running"):
        progress_map(square, range(3), executor=c)


def test_client_closed_mid_run_fails_the_run(client):
    import threading
    from parallelbar_clone import ParallelBarError
    own = distributed.Client(client.scheduler.address, set_as_default=False)
    closer = threading.Timer(1.0, own.close)
    closer.start()
    try:
        with pytest.raises(ParallelBarError, match="client"):
            progress_map(time.sleep, [0.2] * 100, executor=own, chunk_size=1)
    finally:
        closer.join()
        own.close()


def test_unreachable_scheduler_fails_within_seconds():
    began = time.monotonic()
    with pytest.raises(ConnectionError, match="could not reach the dask scheduler"):
        progress_map(square, range(3), executor="tcp://127.0.0.1:9")
    assert time.monotonic() - began < 30      # a guard against hanging, not a timing test


def test_options_that_dask_cannot_honour(client):
    with pytest.raises(ValueError, match="memory_limit can only be enforced"):
        progress_map(square, range(3), executor=client, memory_limit="1GB")
    with pytest.raises(ValueError, match="maxtasksperchild"):
        progress_map(square, range(3), executor="dask", maxtasksperchild=5)
    with pytest.raises(ValueError, match="executor="):
        progress_map(square, range(3), executor="dask-cluster")


def test_missing_distributed_names_the_extra(monkeypatch):
    from parallelbar_clone.dask_backend import import_distributed
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"parallelbar_clone\[dask\]"):
        import_distributed()
    with pytest.raises(ImportError, match=r"parallelbar_clone\[dask\]"):
        progress_map(square, range(3), executor="dask")


# ------------------------------------------------------------------ executor='dask'
def test_dask_string_starts_and_stops_its_own_cluster():
    before = {p.pid for p in live_workers()}
    with dask.config.set(CONFIG):
        limits = progress_map(worker_memory_limit, range(5), executor="dask", n_cpu=2,
                              memory_limit="500MB", chunk_size=1, error_behavior="coerce")
    assert limits[:2] + limits[3:] == [500 * 10 ** 6] * 4   # the workers' memory limit...
    assert isinstance(limits[2], WorkerDiedError)            # ...enforced by their nannies
    deadline = time.monotonic() + 10
    while {p.pid for p in live_workers()} - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not {p.pid for p in live_workers()} - before


def test_dask_string_uses_the_default_client(client):
    with distributed.Client(client.scheduler.address) as default:
        assert progress_map(square, range(5), executor="dask") == [0, 1, 4, 9, 16]
        assert default.status == "running"
        with pytest.raises(ValueError, match="memory_limit can only be enforced"):
            progress_map(square, range(3), executor="dask", memory_limit="1GB")


# -- a result lost with its worker while it was fetched ---------------------------------
class _FlakyClient:
    """gather() fails like a connection to a worker that just died, ``fails`` times."""
    status = "running"

    def __init__(self, fails):
        self.fails = fails
        self.calls = 0

    async def gather(self, future, asynchronous=True):
        self.calls += 1
        if self.calls <= self.fails:
            raise distributed.comm.core.CommClosedError("in <TCP (closed)>: Stream is closed")
        return ("pieces", [future])


def _backend_with(client, closing=False):
    from parallelbar_clone.dask_backend import DaskBackend
    backend = DaskBackend.__new__(DaskBackend)   # only what _gather reads
    backend.client, backend.closing = client, closing
    return backend


def test_a_result_lost_in_transfer_is_fetched_again(monkeypatch):
    """The CI saw it: a worker segfaulted while its finished chunk was being gathered;
    dask computes the chunk again, and the run must wait for it, not fail."""
    import asyncio
    from parallelbar_clone import dask_backend
    monkeypatch.setattr(dask_backend, "GATHER_PAUSE", 0.001)
    job = type("Job", (), {"future": "the future"})()
    client = _FlakyClient(fails=3)
    assert asyncio.run(_backend_with(client)._gather(job)) == ("pieces", ["the future"])
    assert client.calls == 4
    hopeless = _FlakyClient(fails=10 ** 6)          # gives up after GATHER_RETRIES
    with pytest.raises(OSError, match="Stream is closed"):
        asyncio.run(_backend_with(hopeless)._gather(job))
    assert hopeless.calls == dask_backend.GATHER_RETRIES + 1
    closing = _FlakyClient(fails=1)                 # a pool being closed does not wait
    with pytest.raises(OSError):
        asyncio.run(_backend_with(closing, closing=True)._gather(job))
    assert closing.calls == 1
    gone = _FlakyClient(fails=1)
    gone.status = "closed"
    with pytest.raises(OSError):
        asyncio.run(_backend_with(gone)._gather(job))
    assert gone.calls == 1
