"""The engine under real streams and rare faults: each case a real program hits.

Exactly once at the deadline, per-task failures that stay per task, loops left
early, input that is slow or raises, bounded memory, nothing left behind, and a
``sys.exit`` in a task. Each runs under the default start method and spawn.
"""
import functools
import itertools
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import psutil
import pytest

import tasks
from conftest import live_workers
from parallelbar_clone import (MemoryLimitError, ParallelBarError, ProgressPool,
                               SerializationError, TaskExitError, TaskTimeoutError,
                               progress_imap, progress_map)
from parallelbar_clone.journal import CheckpointMismatchError
from parallelbar_clone.manager import Manager

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ["fork", "spawn"]


@pytest.fixture
def busy_caller_thread():
    """A Python thread of the caller's that never sleeps: it takes the GIL from our
    threads at the worst moments."""
    stop = threading.Event()

    def spin():
        n = 0
        while not stop.is_set():
            n += 1
    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


@pytest.mark.parametrize("context,count", [("fork", 600), ("spawn", 60)])
def test_every_task_is_delivered_once_at_its_deadline(context, count, busy_caller_thread):
    """Tasks that finish right at process_timeout: each slot gets its value or its
    TaskTimeoutError, never both, never neither (a double delivery showed as
    'RunTimeoutError (604 of 600 tasks done)', a missing one as a hang). And a worker
    is killed only for a task that gets its TaskTimeoutError: the guard reads what a
    worker sent and looks again before it kills (a kill for a task whose result was on
    its way costs a worker and sends its queued tasks elsewhere for nothing)."""
    sent, kills = [], []
    with ProgressPool(n_cpu=2, context=context) as pool:
        bars = pool._bars.get()
        original = bars.send
        bars.send = lambda event: (sent.append(event), original(event))
        kill = pool._backend.kill
        pool._backend.kill = lambda w: (kills.append(w.pid), kill(w))
        result = pool.map(tasks.sleep_a_hundredth, range(count), process_timeout=0.01,
                          error_behavior="coerce", chunk_size=1, timeout=120)
        killed = len(kills)   # (closing the pool kills the workers too)
    assert len(result) == count
    for i, r in enumerate(result):
        assert r == i or isinstance(r, TaskTimeoutError), (i, r)
    updates = [e for e in sent if e[0] == "update"]
    done, failed = sum(e[2] for e in updates), sum(e[3] for e in updates)
    timeouts = sum(isinstance(r, TaskTimeoutError) for r in result)
    assert (done, failed) == (count - timeouts, timeouts)
    assert killed == timeouts


@pytest.fixture
def plugin(tmp_path):
    (tmp_path / "pb_plugin.py").write_text(
        "class PluginError(Exception):\n    pass\n\n"
        "class PluginResult:\n    def __init__(self, v):\n        self.v = v\n")
    return str(tmp_path)


@pytest.mark.parametrize("context", METHODS)
def test_an_exception_the_caller_cannot_import_fails_only_its_slot(plugin, context):
    items = [(plugin, x) for x in (0, 1, "raise", 3)]
    result = progress_map(tasks.plugin_error, items, n_cpu=2, context=context,
                          error_behavior="coerce", disable=True)
    assert result[0] == 0 and result[1] == 1 and result[3] == 3
    err = result[2]
    assert isinstance(err, SerializationError)
    assert "pb_plugin.PluginError" in str(err) and "from the plugin" in str(err)
    assert "No module named 'pb_plugin'" in str(err)
    assert "raise pb_plugin.PluginError" in err.traceback   # the worker's traceback stays
    with pytest.raises(SerializationError, match="pb_plugin.PluginError"):
        progress_map(tasks.plugin_error, items, n_cpu=2, context=context, disable=True)


@pytest.mark.parametrize("context", METHODS)
def test_a_result_the_caller_cannot_import_fails_only_its_slot(plugin, context):
    items = [(plugin, x) for x in range(4)] + [(plugin, "return")] + \
        [(plugin, x) for x in range(5, 10)]
    result = progress_map(tasks.plugin_error, items, n_cpu=2, chunk_size=10, context=context,
                          error_behavior="coerce", disable=True)
    assert [r for i, r in enumerate(result) if i != 4] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert isinstance(result[4], SerializationError)
    assert "pb_plugin.PluginResult" in str(result[4]) and "task 4" in str(result[4])


@pytest.mark.parametrize("context", METHODS)
def test_an_exception_whose_str_raises_stays_in_its_slot(context):
    result = progress_map(tasks.raises_bad_str, range(12), retries=1, n_cpu=2,
                          context=context, error_behavior="coerce", disable=True)
    assert isinstance(result[tasks.FAULT_AT], tasks.BadStr)
    assert result[tasks.FAULT_AT].attempts == 2
    assert [r for i, r in enumerate(result) if i != tasks.FAULT_AT] == \
        [x * 10 for x in range(12) if x != tasks.FAULT_AT]


@pytest.mark.parametrize("context,how", [("fork", "break"), ("spawn", "break"),
                                         ("fork", "next-then-dropped"),
                                         ("fork", "dropped-unread")])
def test_leaving_an_imap_loop_cancels_its_work_at_once(context, how):
    """The abandoned tasks sleep 30 s each: a pool that waited for them could not
    answer the next call within 10 s. (A ``for`` loop iterates the generator that
    ``iter()`` of the iterator returns: its end, or its being dropped, cancels.)"""
    with ProgressPool(n_cpu=2, context=context, disable=True) as pool:
        pool.map(tasks.times_ten, range(4))   # workers up
        items = [100] + list(range(10))
        if how == "break":
            for r in pool.imap(tasks.slow_then, items, chunk_size=1):
                assert r == 100
                break
        elif how == "next-then-dropped":
            it = pool.imap(tasks.slow_then, items, chunk_size=1)
            assert next(it) == 100
            del it
        else:
            it = pool.imap(tasks.slow_then, items, chunk_size=1)
            del it
        started = time.monotonic()
        assert pool.map(tasks.times_ten, range(20)) == [x * 10 for x in range(20)]
        assert time.monotonic() - started < 10


BREAK_SCRIPT = """
import itertools, sys, time
sys.path.insert(0, {here!r})
import tasks
from parallelbar_clone import ProgressPool
pulled = itertools.count()
def endless():
    for i in itertools.count():
        next(pulled)
        yield i
started = time.monotonic()
with ProgressPool(n_cpu=2, context={context!r}, disable=True) as pool:
    for k, r in enumerate(pool.imap_unordered(tasks.times_ten, endless())):
        if k == 100_000:
            break
print("pulled", next(pulled), "exit", round(time.monotonic() - started, 2), flush=True)
"""


@pytest.mark.parametrize("context", METHODS)
def test_breaking_out_of_an_endless_stream_exits_cleanly(context):
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", BREAK_SCRIPT.format(here=HERE,
                                                                     context=context)],
                          capture_output=True, timeout=60)
    elapsed = time.monotonic() - started
    err = done.stderr.decode()
    assert done.returncode == 0, err[-2000:]
    assert "Exception ignored" not in err and "Traceback" not in err, err[-2000:]
    pulled = int(done.stdout.split()[1])
    # read ahead: a few chunks per worker (up to 100 000 trivial tasks each), not millions
    assert 100_000 < pulled < 1_000_000
    assert elapsed < 20                  # it used to take 12 s, or hang at exit


@pytest.mark.parametrize("context", METHODS)
def test_the_end_of_a_with_block_cancels_an_iterator_still_held(context):
    """`it = pool.imap_unordered(...)`, a `break`, then the end of the `with` block: the
    iterator still exists, so the break told it nothing, and no thread will consume
    it. The block's end cancels its run (the worker hanging in C is killed), and no
    process is left; the iterator then says why it stopped. (The pool's close waited
    for the run to end: 12 s, then it gave up and left the workers and the zygote.)"""
    started = time.monotonic()
    with ProgressPool(n_cpu=2, context=context, disable=True) as pool:
        it = pool.imap_unordered(tasks.c_hang_if_even, range(1000))
        for r in it:   # task 1 comes first: task 0 hangs (60 s, in C)
            break
    took = time.monotonic() - started
    assert r[0] % 2 == 1
    assert took < 6, f"the with block took {took:.1f} s to end"
    assert live_workers() == []
    with pytest.raises(ParallelBarError, match="shut down"):
        next(it)


def test_a_pool_dropped_without_close_stops_its_workers():
    """`pool = ProgressPool()` in a notebook cell run again, or in a function that
    returns without closing it: once nothing holds the pool, its workers, zygote and
    threads stop, as a multiprocessing Pool's do (they ran till the interpreter
    exited). An iterator of the pool's keeps it alive while it is held."""
    def use():
        pool = ProgressPool(n_cpu=2, disable=True)
        assert pool.map(tasks.times_ten, range(10)) == [x * 10 for x in range(10)]
        kept = pool.imap(tasks.times_ten, range(10))
        assert len(live_workers()) >= 2
        return kept, pool._manager.thread

    kept, manager = use()
    assert list(kept) == [x * 10 for x in range(10)]   # (its pool is still there)
    assert manager.is_alive()
    del kept
    manager.join(3)
    assert not manager.is_alive()
    deadline = time.monotonic() + 3
    while live_workers() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert live_workers() == []


def _raising_input(n_ok):
    for i in range(n_ok):
        yield i
    raise LookupError(f"input broke after {n_ok}")


@pytest.mark.parametrize("context", METHODS)
@pytest.mark.parametrize("ordered", [True, False])
def test_an_input_error_comes_after_the_results_before_it(context, ordered):
    with ProgressPool(n_cpu=2, context=context, disable=True) as pool:
        call = pool.imap if ordered else pool.imap_unordered
        got = []
        with pytest.raises(LookupError, match="input broke after 50"):
            for r in call(tasks.times_ten, _raising_input(50)):
                got.append(r)
        assert sorted(got) == [x * 10 for x in range(50)]
        if ordered:
            assert got == [x * 10 for x in range(50)]
        with pytest.raises(LookupError):   # map: raised too (no partial list)
            pool.map(tasks.times_ten, _raising_input(50))


def _slow_input(stamps, n, hang_at=None):
    for i in range(n):
        time.sleep(0.05)
        stamps[i] = time.monotonic()
        yield i if i != hang_at else -1


@pytest.mark.parametrize("context", METHODS)
def test_results_of_a_slow_input_keep_pace_with_it(context):
    stamps, late = {}, []
    with ProgressPool(n_cpu=2, context=context, disable=True) as pool:
        pool.map(tasks.times_ten, range(4))   # workers up
        for r in pool.imap(tasks.times_ten, _slow_input(stamps, 30)):
            late.append(time.monotonic() - stamps[r // 10])
    assert len(late) == 30
    assert max(late[5:]) < 1.0     # about one item behind; it used to be seconds


@pytest.mark.parametrize("context", METHODS)
def test_a_task_is_sent_as_soon_as_it_is_encoded(context):
    """Tasks slow to pickle, quick to run: each goes to the idle worker the moment the
    caller's thread has encoded it. A wake-up decided before the encoding used to be
    lost when the manager emptied the queue meanwhile: the task then waited for the
    manager's idle tick (median 50 ms, up to 100 ms, against 0.4 ms)."""
    sent = {}
    with ProgressPool(n_cpu=2, context=context, disable=True) as pool:
        pool.map(tasks.times_ten, range(4))   # workers up
        out = pool.map(tasks.started_at, [tasks.SlowToSend(i, 0.003, sent) for i in range(60)],
                       chunk_size=1)
    delays = sorted(started - sent[i] for i, started in out)
    assert statistics.median(delays) < 0.02, delays


def test_the_first_chunks_go_over_together(monkeypatch):
    """Nothing measured yet, the caller's thread makes the first chunks (a task each,
    two a worker) and then hands them over at once: handing over the first alone and
    waiting for the manager's pass, it was queued behind a busy worker on its core,
    and the second worker got its first task 1.7 ms later (2 cores)."""
    from parallelbar_clone import backends
    steps = []
    encode, hand_over = backends.ProcessBackend.encode_chunk, Manager.hand_over
    monkeypatch.setattr(backends.ProcessBackend, "encode_chunk",
                        lambda self, *a: (steps.append("make"), encode(self, *a))[1])
    monkeypatch.setattr(Manager, "hand_over", lambda self: (steps.append("hand over"),
                                                            hand_over(self))[1])
    assert progress_map(functools.partial(tasks.sleep_then, seconds=0.002), range(40),
                        n_cpu=2, disable=True) == list(range(40))
    assert steps[:5] == ["make"] * 4 + ["hand over"], steps[:8]
    assert steps.count("hand over") >= 3, steps   # (later chunks: each as it is made)


def _spy_headers(monkeypatch, tails=None):
    """The kind of every message the pool sends its workers, in a list filled as they
    go; ``tails``, if given, gets (tasks, tail bytes) of each pickled chunk."""
    from parallelbar_clone import backends
    kinds = []
    send = backends.ProcessBackend.send

    def spy(self, w, header, tail=b""):
        kinds.append(header[0])
        if tails is not None and header[0] == "c":
            tails.append((header[3], len(tail)))
        return send(self, w, header, tail)

    monkeypatch.setattr(backends.ProcessBackend, "send", spy)
    return kinds


def _count_wakes(monkeypatch):
    """A list that grows by one at each wake of a consuming thread."""
    from parallelbar_clone import run as run_module
    wakes = []
    wake = run_module.Outbox.wake
    monkeypatch.setattr(run_module.Outbox, "wake", lambda self: (wakes.append(1), wake(self)))
    return wakes


@pytest.mark.parametrize("make", [list, tuple, lambda r: r])
def test_a_one_call_map_sends_positions_in_the_tasks_its_workers_inherited(monkeypatch, make):
    """progress_map and its kin under fork: the workers, forked after the tasks list
    was made, have it; chunks go as positions in it (no pickling in the caller, whose
    touch of each item would also copy the page the fork shares). Tasks that cannot be
    pickled (locks here) run, as the function itself does."""
    kinds = _spy_headers(monkeypatch)
    tasks_ = make(range(5000))
    assert progress_map(tasks.times_ten, tasks_, n_cpu=2, disable=True) == \
        [x * 10 for x in range(5000)]
    assert "ci" in kinds and "c" not in kinds, sorted(set(kinds))
    assert progress_imap(tasks.times_ten, tasks_, n_cpu=2, disable=True)[4321] == 43210
    locks = [threading.Lock() for _ in range(6)]
    assert progress_map(tasks.type_name, locks, n_cpu=2, disable=True) == ["lock"] * 6


def test_positions_in_inherited_tasks_survive_crashes_retries_and_failed_task_lists(
        monkeypatch):
    """A worker killed mid-chunk is replaced (forked by the zygote, which inherited the
    tasks too): its chunk's tasks go again as positions; retried and failed tasks are
    the caller's own objects."""
    kinds = _spy_headers(monkeypatch)
    result = progress_map(tasks.segfaults, list(range(300)), n_cpu=2, chunk_size=40,
                          error_behavior="coerce", disable=True)
    assert [r for i, r in enumerate(result) if i != tasks.FAULT_AT] == \
        [i * 10 for i in range(300) if i != tasks.FAULT_AT]
    assert isinstance(result[tasks.FAULT_AT], Exception)
    assert kinds.count("ci") >= 8 and "c" not in kinds, kinds
    items = list(range(1000, 1100))   # (ints above 256: each its own object)
    values, failed = progress_map(tasks.fails_on_odd, items, n_cpu=2, retries=1,
                                  error_behavior="coerce", return_failed_tasks=True,
                                  disable=True)
    assert values[::2] == items[::2]
    assert all(isinstance(v, ValueError) for v in values[1::2])
    assert failed == items[1::2] and all(f is items[f - 1000] for f in failed)


def test_a_tasks_list_grown_after_the_fork_is_sent_by_value(monkeypatch):
    """The caller's list changed length between the workers' fork and the map (another
    thread of the caller, say): a worker whose copy lacks the positions asked says so,
    and the run's tasks go by value from then on. Every task runs, none twice."""
    from parallelbar_clone import pool as pool_module
    kinds = _spy_headers(monkeypatch)
    submit = pool_module.ProgressPool._submit

    def grow_first(self, func, tasks_, mode, options, **how):
        tasks_.extend(range(1000, 1100))   # (the workers are forked already)
        return submit(self, func, tasks_, mode, options, **how)

    monkeypatch.setattr(pool_module.ProgressPool, "_submit", grow_first)
    items = list(range(1000))
    assert progress_map(tasks.times_ten, items, n_cpu=2, disable=True) == \
        [x * 10 for x in range(1100)]
    assert "ci" in kinds and "c" in kinds, sorted(set(kinds))


def test_positions_go_only_where_the_workers_have_the_tasks(monkeypatch):
    """spawn, or a pool started before the tasks existed: the tasks are pickled."""
    kinds = _spy_headers(monkeypatch)
    assert progress_map(tasks.times_ten, list(range(50)), n_cpu=2, context="spawn",
                        disable=True) == [x * 10 for x in range(50)]
    with ProgressPool(n_cpu=2, disable=True) as pool:
        assert pool.map(tasks.times_ten, list(range(50))) == [x * 10 for x in range(50)]
    assert "c" in kinds and "ci" not in kinds, sorted(set(kinds))


@pytest.mark.parametrize("context", METHODS)
def test_a_range_goes_to_the_workers_in_slices_not_item_by_item(monkeypatch, context):
    """A pool started before its tasks (no inheriting): a range is cut into ranges, a
    few dozen bytes a chunk whatever its length, each task once."""
    tails = []
    _spy_headers(monkeypatch, tails)
    with ProgressPool(n_cpu=2, context=context, disable=True) as pool:
        got = sorted(pool.imap_unordered(tasks.times_ten, range(7, 200_007)))
        assert pool.map(tasks.times_ten, range(30, 0, -3)) == list(range(300, 0, -30))
    assert got == [x * 10 for x in range(7, 200_007)]
    big = [nbytes for n, nbytes in tails if n >= 1000]
    assert big and max(big) < 100, sorted(tails)[-5:]


@pytest.mark.parametrize("call", [progress_map, progress_imap])
def test_results_gathered_into_a_list_wake_their_consumer_ten_times_a_second(monkeypatch,
                                                                             call):
    """Waking the caller's thread costs a worker its core on a busy machine: results
    that go into a list wait for it up to COLLECTED_WAIT (0.1 s), in progress_imap as
    in progress_map (it woke once per piece: here about 150)."""
    wakes = _count_wakes(monkeypatch)
    items = list(range(600))
    assert call(functools.partial(tasks.sleep_then, seconds=0.002), items, n_cpu=2,
                chunk_size=4, disable=True) == items
    assert len(wakes) < 40, len(wakes)    # 600 x 2 ms / 2 workers: 0.6 s, 150 pieces


def test_big_results_wake_their_consumer_at_once(monkeypatch):
    """...but results holding many bytes do not wait (WAKE_BYTES): until the consumer
    takes them, they count against the read-ahead, and decoding them is its work."""
    wakes = _count_wakes(monkeypatch)
    out = progress_map(tasks.megabytes, [9] * 6, n_cpu=2, chunk_size=1, disable=True)
    assert [len(b) for b in out] == [9 << 20] * 6
    assert len(wakes) >= 6, len(wakes)


def test_results_worth_decoding_wake_their_consumer_while_the_workers_run(monkeypatch):
    """...nor do pieces that together hold WAKE_BYTES (4 KB): decoding them is the
    consumer's work, to be done while the workers run, not all at the end (200 000
    trivial tasks on 2 cores took 1.7 times as long when it waited). 40 results of
    3 KB in 0.1 s: about 20 wakes by bytes, 2 by time."""
    wakes = _count_wakes(monkeypatch)
    items = [bytes([i]) * 3000 for i in range(40)]
    assert progress_map(functools.partial(tasks.sleep_then, seconds=0.005), items, n_cpu=2,
                        chunk_size=1, disable=True) == items
    assert len(wakes) >= 12, len(wakes)


@pytest.mark.parametrize("call", [progress_map, progress_imap])
def test_the_consumer_sleeps_until_the_manager_wakes_it(monkeypatch, call):
    """The consuming thread sleeps while the workers run: the manager wakes it when
    results are due or input runs low, and it looks on its own only after WAIT
    (0.25 s) without a wake. Looking every 50 ms it woke 12 to 24 times more per
    second of a run, each time to find nothing, taking a worker's core on 2 cores
    (parent CPU per 1 000 tasks of 1 ms: 10.0 -> 8.5 ms)."""
    from parallelbar_clone import run as run_module
    timeouts = []

    class Counting(threading.Event):
        def wait(self, timeout=None):
            woken = super().wait(timeout)
            if not woken:
                timeouts.append(timeout)
            return woken

    init = run_module.Outbox.__init__

    def counted(self, interval):
        init(self, interval)
        self.event = Counting()

    monkeypatch.setattr(run_module.Outbox, "__init__", counted)
    items = list(range(40))   # 40 x 50 ms / 2 workers: a second; 13 timeouts at 50 ms
    assert list(call(functools.partial(tasks.sleep_then, seconds=0.05), items, n_cpu=2,
                     disable=True)) == items
    assert len(timeouts) <= 3, timeouts


def _policies_seen(thread, stop):
    """The scheduling policies a thread of ours has, sampled every 0.5 ms until stop."""
    seen = set()

    def sample():
        while not stop.is_set():
            seen.add(os.sched_getscheduler(thread.native_id))
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    return seen, sampler


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="a Linux scheduling policy")
def test_the_manager_yields_to_workers_only_while_each_has_work_queued():
    """While every worker has FED_SECONDS (20 ms) of work queued behind its running
    chunk, the manager waits for a tick when a result wakes it (SCHED_BATCH) rather than
    take the sender's core between two of its tasks; during the first chunks and once
    the work runs out it answers at once (the normal policy)."""
    stop = threading.Event()
    with ProgressPool(2, disable=True) as pool:
        manager = pool._manager.thread
        seen, sampler = _policies_seen(manager, stop)
        try:   # chunks of 8 tasks of 5 ms: 40 ms queued behind each running one
            assert pool.map(functools.partial(tasks.sleep_then, seconds=0.005), range(200),
                            chunk_size=8) == list(range(200))
        finally:
            stop.set()
            sampler.join()
        time.sleep(0.15)   # (the manager's idle tick: it looks again)
        after = os.sched_getscheduler(manager.native_id)
    assert seen == {os.SCHED_OTHER, os.SCHED_BATCH}, seen
    assert after == os.SCHED_OTHER
    stop.clear()
    with ProgressPool(2, disable=True) as pool:   # 1 ms queued: never
        seen, sampler = _policies_seen(pool._manager.thread, stop)
        try:
            pool.map(functools.partial(tasks.sleep_then, seconds=0.001), range(200),
                     chunk_size=1)
        finally:
            stop.set()
            sampler.join()
    assert seen == {os.SCHED_OTHER}, seen


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="a Linux scheduling policy")
@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_workers_started_by_a_yielding_manager_run_with_their_makers_policy(
        monkeypatch, context):
    """A process inherits the policy of the thread that starts it: workers spawned by
    the manager while it yields (SCHED_BATCH) take back the pool maker's."""
    monkeypatch.setattr(Manager, "_fed", staticmethod(lambda w: True))  # (always yielding)
    stop = threading.Event()
    with ProgressPool(2, context=context, maxtasksperchild=1, disable=True) as pool:
        seen, sampler = _policies_seen(pool._manager.thread, stop)
        try:
            policies = pool.map(tasks.sched_policy, range(6))
        finally:
            stop.set()
            sampler.join()
    assert os.SCHED_BATCH in seen
    assert policies == [os.SCHED_OTHER] * 6


def test_concurrent_one_call_maps_each_use_their_own_tasks():
    out = {}

    def one(k):
        out[k] = progress_map(tasks.times_ten, [k] * 300 + list(range(300)), n_cpu=2,
                              disable=True)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {k: [k * 10] * 300 + [x * 10 for x in range(300)] for k in range(3)}


def test_the_bar_opens_after_the_first_chunks_are_sent(monkeypatch):
    """Opening a bar holds the GIL about 1 ms: the manager opens it once every worker
    has a chunk, so that none waits for it."""
    from parallelbar_clone import backends, bar
    order = []
    send_event, send_chunk = bar.BarThread.send, backends.ProcessBackend.send_chunk
    monkeypatch.setattr(bar.BarThread, "send",
                        lambda self, event: (order.append(event[0]), send_event(self, event))[1])
    monkeypatch.setattr(backends.ProcessBackend, "send_chunk",
                        lambda self, *a: (order.append("chunk"), send_chunk(self, *a))[1])
    assert progress_map(tasks.times_ten, range(100), n_cpu=2) == [x * 10 for x in range(100)]
    assert order[:2] == ["chunk", "chunk"] and order.index("open") < order.index("close"), \
        order[:8]


def test_the_bar_opens_once_each_worker_has_a_few_milliseconds_of_work(monkeypatch):
    """...and not while the first chunks hold a task each: a worker done with its one
    task waited for the manager (and the consumer), which waited for the GIL the bar's
    opening held. Tasks of 1 ms: each worker has had at least 4 sent by the time the bar
    opens (RAMPED_SECONDS, 5 ms of measured work queued); and no update comes before it."""
    from parallelbar_clone import backends, bar, manager, pool
    monkeypatch.setattr(pool, "BAR_OPEN_WAIT", 30.0)   # (only the ramp may open it early)
    monkeypatch.setattr(manager, "UPDATE_INTERVAL", 0.0)   # (counts flushed each pass)
    order, sent = [], {}
    send_event, send_chunk = bar.BarThread.send, backends.ProcessBackend.send_chunk

    def on_event(self, event):
        order.append((event[0], dict(sent)))
        send_event(self, event)

    def on_chunk(self, w, chunk, run):
        sent[w.index] = sent.get(w.index, 0) + len(chunk.items)
        return send_chunk(self, w, chunk, run)

    monkeypatch.setattr(bar.BarThread, "send", on_event)
    monkeypatch.setattr(backends.ProcessBackend, "send_chunk", on_chunk)
    assert progress_map(tasks.busy_ms, range(400), n_cpu=2) == list(range(400))
    kinds = [kind for kind, _ in order]
    assert kinds[0] == "open", kinds[:5]
    at_open = order[0][1]
    assert len(at_open) == 2 and min(at_open.values()) >= 4, at_open
    assert sum(at_open.values()) < 400, at_open    # (and not only at the end)


def test_the_bar_opens_before_a_slow_input_gives_its_first_task(monkeypatch):
    """...but no later than BAR_OPEN_WAIT (0.05 s) after the call: an input that takes
    1 s to give its first task shows an empty bar meanwhile."""
    from parallelbar_clone import bar
    opened, first = [], []
    send_event = bar.BarThread.send

    def send(self, event):
        if event[0] == "open":
            opened.append(time.monotonic())
        send_event(self, event)

    def slow():
        time.sleep(1.0)
        first.append(time.monotonic())
        yield from range(5)

    monkeypatch.setattr(bar.BarThread, "send", send)
    assert progress_map(tasks.times_ten, slow(), n_cpu=2) == [0, 10, 20, 30, 40]
    assert opened and opened[0] < first[0] - 0.5, (opened, first)


def test_a_consumer_lets_a_pass_of_the_manager_finish_first(monkeypatch):
    """The consuming thread, about to decode or encode, waits while the manager is in
    the middle of a pass (else the manager, which lets the GIL go in each system call,
    waits up to the switch interval, 5 ms, to get it back), and not when it is idle."""
    from parallelbar_clone import manager
    monkeypatch.setattr(manager, "HAND_OVER_WAIT", 10.0)
    m = manager.Manager.__new__(manager.Manager)
    m.busy, m.dispatched = False, threading.Event()
    began = time.monotonic()
    m.yield_pass()                       # idle: at once (else 10 s)
    assert time.monotonic() - began < 5
    ended = []

    def end_pass():
        time.sleep(0.2)
        ended.append(True)
        m.busy = False
        m.dispatched.set()

    m.busy = True
    threading.Thread(target=end_pass).start()
    m.yield_pass()
    assert ended
    # A real pool's manager is idle between passes.
    with ProgressPool(n_cpu=2, disable=True) as pool:
        pool.map(tasks.times_ten, range(10))
        deadline = time.monotonic() + 5
        while pool._manager.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pool._manager.busy and pool._manager.dispatched.is_set()


@pytest.mark.parametrize("context", METHODS)
def test_failures_inside_a_batch_of_quick_tasks_stay_in_their_slots(context):
    """A worker runs quick tasks as map() over batches of 1, 2, 4 ... of a chunk:
    a task that raises (or calls sys.exit) fails its own slot, and the tasks before
    and after it in the batch keep their results, in place: failures at a batch's
    first and last task, in runs, and at the chunk's ends."""
    failing = {0, 1, 7, 8, 9, 64, 130, 254, 255, 256, 399}
    xs = [-1000 if x == 130 else (-x - 1 if x in failing else x) for x in range(400)]
    out = progress_map(tasks.ten_times_or_fails, xs, n_cpu=2, context=context,
                       chunk_size=400, error_behavior="coerce", disable=True)
    assert len(out) == 400
    for x, got in enumerate(out):
        if x == 130:
            assert isinstance(got, TaskExitError) and got.code == 3, (x, got)
        elif x in failing:
            assert isinstance(got, ValueError) and got.args == (-x - 1,), (x, got)
        else:
            assert got == x * 10, (x, got)


@pytest.mark.parametrize("slow", ["task", "result"])
def test_chunks_are_sized_by_the_time_a_task_costs_its_worker(slow):
    """Loading a task and pickling its result are the worker's time too: a task that
    runs in microseconds but takes 4 ms to move in or out must get chunks of about
    TARGET_CHUNK_SECONDS / 4 ms = 50 tasks. Timing only the call measured microseconds,
    and a chunk grew to 223 of the 300 tasks. (The input is a generator: with a known
    length chunks are capped at 300 / 8 = 38, which would hide that.)"""
    if slow == "task":
        func, items = tasks.identity, [tasks.SlowToLoad(i, 0.004) for i in range(300)]
    else:
        func, items = tasks.slow_to_return, list(range(300))
    with ProgressPool(n_cpu=2, disable=True) as pool:
        assert pool.map(func, (x for x in items)) == list(range(300))
        sizes = [c.n_tasks for c in pool.last_summary.chunks]
    assert max(sizes) <= 70, sizes


def _hangs_on_minus_one(x):
    if x == -1:
        tasks.ctypes.CDLL(None).sleep(60)
    return x


@pytest.mark.parametrize("context", METHODS)
def test_deadlines_hold_while_the_input_is_slow(context):
    stamps, seen = {}, {}
    with ProgressPool(n_cpu=2, context=context, disable=True) as pool:
        pool.map(tasks.times_ten, range(4))
        for i, r in enumerate(pool.imap(_hangs_on_minus_one, _slow_input(stamps, 30, 10),
                                        process_timeout=0.5, error_behavior="coerce")):
            seen[i] = (r, time.monotonic())
    r, at = seen[10]
    assert isinstance(r, TaskTimeoutError)
    assert at - stamps[10] < 2.0    # ~0.5 s; it used to be 3.7 s
    assert [seen[i][0] for i in range(30) if i != 10] == [i for i in range(30) if i != 10]


SLOW_INPUT_SCRIPT = """
import sys, time
sys.path.insert(0, {here!r})
import tasks
from parallelbar_clone import progress_map
def slow():
    for i in range(10_000):
        time.sleep(0.05)
        if i == 5:
            print("going", flush=True)
        yield i
progress_map(tasks.times_ten, slow(), n_cpu=2, context={context!r}, disable=True)
"""


@pytest.mark.parametrize("context", METHODS)
def test_ctrl_c_stops_a_run_over_a_slow_input_at_once(context):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_INPUT_SCRIPT.format(
        here=HERE, context=context)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    assert proc.stdout.readline().strip() == b"going"
    family = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)
    started = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 2.0, "Ctrl-C took more than a second or two"
    assert b"KeyboardInterrupt" in err
    gone, alive = psutil.wait_procs(family, timeout=5)
    assert not alive


def _big_items(pulled, n=100_000):
    for i in itertools.count():
        pulled.append(i)
        yield ("%07d" % i) * (n // 7)


def _rss():
    return psutil.Process().memory_info().rss


@pytest.mark.parametrize("context", METHODS)
@pytest.mark.parametrize("func", [tasks.identity, tasks.length], ids=["big-results",
                                                                     "small-results"])
def test_a_slow_consumer_keeps_memory_flat_whatever_the_item_size(context, func):
    """100 KB items, a consumer slower than the workers: what is read ahead is
    bounded in bytes, tasks sent and results waiting (it used to be in tasks:
    gigabytes)."""
    pulled = []
    with ProgressPool(n_cpu=2, context=context, disable=True) as pool:
        results = pool.imap(func, _big_items(pulled))
        before = _rss()
        peak = before
        for k, r in enumerate(results):
            if k % 20 == 0:
                time.sleep(0.05)
                peak = max(peak, _rss())
            if k == 400:
                break
            if func is tasks.identity:   # 16 MB each way: some 300 items of 100 KB
                assert len(pulled) - k < 400
        results.close()
    assert peak - before < 80e6, f"parent grew by {(peak - before) / 1e6:.0f} MB"


def _same_big_items(pulled, n):
    item = "x" * n          # (quick to pull and to pickle: the input is never the brake)
    for i in itertools.count():
        pulled.append(i)
        yield item


def test_results_waiting_for_a_slow_consumer_count_in_the_byte_bound():
    """1 MB items that come back as 1 MB results, a consumer slower than the workers:
    tasks sent and results waiting are some 16 MB in all, so about 17 items are read
    ahead (without the results in the count, 65 and growing after 200 items)."""
    pulled = []
    with ProgressPool(n_cpu=2, disable=True) as pool:
        results = pool.imap(tasks.identity, _same_big_items(pulled, 1_000_000))
        for k, r in enumerate(results):
            time.sleep(0.005)
            assert len(pulled) - k < 40, f"{len(pulled) - k} items of 1 MB read ahead"
            if k == 400:
                break
        results.close()


EXIT_SCRIPT = """
import sys
sys.path.insert(0, {here!r})
import tasks
from parallelbar_clone import progress_map
progress_map(tasks.exits_zero, range(8), n_cpu=2, context={context!r}, disable=True)
print("not reached")
"""


@pytest.mark.parametrize("context", METHODS)
def test_sys_exit_in_a_task_is_a_visible_failure(context):
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT.format(here=HERE, context=context)],
                          capture_output=True, timeout=60)
    assert done.returncode == 1 and b"not reached" not in done.stdout
    assert b"TaskExitError" in done.stderr and b"sys.exit(0)" in done.stderr
    coerced = progress_map(tasks.exits_zero, range(8), n_cpu=2, context=context,
                           error_behavior="coerce", disable=True)
    assert isinstance(coerced[3], TaskExitError) and coerced[3].code == 0
    assert [r for i, r in enumerate(coerced) if i != 3] == [0, 1, 2, 4, 5, 6, 7]


def test_memory_limit_says_what_it_measured():
    result = progress_map(tasks.hold_then_grow, range(2), n_cpu=1, chunk_size=1,
                          memory_limit="400MB", error_behavior="coerce", disable=True)
    assert result[0] == 0
    err = result[1]
    assert isinstance(err, MemoryLimitError) and err.limit == 400_000_000
    text = str(err)
    assert "while running task 1" in text and "memory_limit=400 MB" in text
    added = int(text.split("about ")[1].split(" MB")[0])
    assert 60 <= added <= 200, text      # what task 1 added (150 MB), not all 450
    assert "stayed from earlier tasks" in text


def test_a_damaged_checkpoint_is_refused_by_name(tmp_path):
    path = tmp_path / "damaged.sqlite"
    progress_map(tasks.times_ten, range(3000), checkpoint=str(path), n_cpu=2, disable=True)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = os.urandom(4096)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointMismatchError, match="damaged.sqlite"):
        progress_map(tasks.times_ten, range(3000), checkpoint=str(path), n_cpu=2, disable=True)


@pytest.mark.slow
@pytest.mark.parametrize("context,count", [("fork", 300), ("spawn", 30)])
def test_respawn_storm_never_lets_a_late_task_succeed(context, count):
    """Every 50 ms task must time out at 1 ms, also while replacement workers start
    (deadlines used to go unchecked then, and a task or two came back a success)."""
    result = progress_map(tasks.sleep_then, range(count), n_cpu=2, chunk_size=1,
                          process_timeout=0.001, error_behavior="coerce", context=context,
                          disable=True)
    assert all(isinstance(r, TaskTimeoutError) for r in result), \
        [i for i, r in enumerate(result) if not isinstance(r, TaskTimeoutError)]


@pytest.mark.parametrize("ordered", [True, False], ids=["imap", "imap_unordered"])
def test_raise_mode_raises_an_unloadable_result_in_imap_too(plugin, ordered):
    """A result the caller cannot load is raised in 'raise' mode by the lazy iterators
    as by map, never yielded as a value."""
    items = [(plugin, x) for x in range(4)] + [(plugin, "return")] + \
        [(plugin, x) for x in range(5, 8)]
    with ProgressPool(n_cpu=2, disable=True) as pool:
        call = pool.imap if ordered else pool.imap_unordered
        with pytest.raises(SerializationError, match="pb_plugin.PluginResult"):
            for r in call(tasks.plugin_error, items):
                assert isinstance(r, int)


_ballast = None


def _hold_ballast(n_mb):
    global _ballast
    _ballast = bytearray(n_mb * 1_000_000)   # written: resident


def test_memory_limit_counts_growth_over_the_idle_footprint():
    """A worker that holds 250 MB before its first task (here from its initializer) may
    still grow by memory_limit while it runs one: total resident memory is not the
    measure (that failed every task)."""
    result = progress_map(tasks.sleep_then, range(6), n_cpu=1, chunk_size=1,
                          memory_limit="100MB", initializer=_hold_ballast, initargs=(250,),
                          error_behavior="coerce", disable=True)
    assert result == list(range(6))


def test_a_result_that_arrives_while_the_guard_looks_saves_its_worker():
    """The guard finds a task over its limit, reads what the worker sent and looks
    again before it kills. Here the read is made slow (0.3 s), and the task ends 10 ms
    after its limit: its result is there at the second look, so its worker lives and
    its value stands (killed on the first look, as the race below does 1 time in 3)."""
    kills = []
    with ProgressPool(n_cpu=1, disable=True) as pool:
        backend = pool._backend
        kill, drain = backend.kill, backend.drain
        backend.kill = lambda w: (kills.append(w.pid), kill(w))

        def slow_drain(w, block_first=False):
            if not block_first:   # (the guard's read; waiting for messages blocks first)
                time.sleep(0.3)
            return drain(w, block_first)

        backend.drain = slow_drain
        result = pool.map(functools.partial(tasks.sleep_then, seconds=0.06), range(3),
                          process_timeout=0.05, error_behavior="coerce", chunk_size=1)
    assert result == [0, 1, 2] and kills == [], (result, kills)


def test_a_worker_is_killed_only_for_a_task_that_times_out(busy_caller_thread):
    """Tasks that finish right at process_timeout: the guard reads what a worker sent
    and looks again before it kills, so every kill is a task's TaskTimeoutError (a kill
    for a task whose result was on its way costs a worker and requeues its work)."""
    kills = []
    with ProgressPool(n_cpu=2, disable=True) as pool:
        original = pool._backend.kill
        pool._backend.kill = lambda w: (kills.append(w.pid), original(w))
        result = pool.map(tasks.sleep_a_hundredth, range(600), process_timeout=0.01,
                          error_behavior="coerce", chunk_size=1, timeout=120)
        killed = len(kills)
    timeouts = sum(isinstance(r, TaskTimeoutError) for r in result)
    assert killed == timeouts
