"""RunSummary on its own: recorded by hand with a fake clock, as the pool will record it."""
import sys
import threading

import pytest

from parallelbar_clone import RunSummary, TaskTimeoutError, WorkerDiedError
from parallelbar_clone.summary import PLOT_EXTRA


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def recorded():
    """A run of 10 tasks: 2 raise, 1 times out, 1 crashes its worker; one retry."""
    clock = Clock()
    s = RunSummary(total=10, name="parse", clock=clock)
    s.started()
    s.chunk_ran(11, 100.0, 101.0, 3)
    s.chunk_ran(12, 100.0, 102.5, 2)
    s.tasks_done(range(0, 3), [0.2, 0.3, 0.5])
    s.task_done(3, 0.1)
    s.task_done(4)                            # not measured
    clock.now = 101.0
    try:
        raise ValueError("bad row 5")
    except ValueError as exc:
        s.retried(5, exc)
        s.task_failed(5, "row-5", exc, duration=0.05)
    s.task_failed(6, "row-6", ValueError("bad row 6"))
    clock.now = 102.0
    s.task_failed(7, "row-7", TaskTimeoutError("took longer than 2 s"), duration=2.0)
    s.worker_replaced(12, "timeout")
    s.task_failed(8, "row-8", WorkerDiedError("killed by SIGSEGV"))
    s.worker_replaced(13, "SIGSEGV")
    s.chunk_ran(14, 102.0, 103.0, 1)
    s.task_done(9)
    clock.now = 103.5
    s.finished()
    return s


def test_counts_durations_and_wall_time():
    s = recorded()
    assert (s.n_done, s.n_failed) == (6, 4)
    assert s.durations == {0: 0.2, 1: 0.3, 2: 0.5, 3: 0.1, 5: 0.05, 7: 2.0}
    assert s.slowest_task == (7, 2.0)
    assert s.wall_time == pytest.approx(3.5)
    assert s.counts_by_type() == {"ValueError": 2, "TaskTimeoutError": 1, "WorkerDiedError": 1}
    assert list(s.counts_by_type())[0] == "ValueError"       # most frequent first


def test_failures_keep_task_exception_and_traceback():
    s = recorded()
    first = s.failures[0]
    assert (first.position, first.task, first.type_name) == (5, "row-5", "ValueError")
    assert "bad row 5" in first.traceback and "raise ValueError" in first.traceback
    assert first.at == 101.0 and first.duration == 0.05
    remote = ValueError("x")
    remote.traceback = "Traceback (most recent call last):\n  worker side\nValueError: x\n"
    s.task_failed(20, None, remote)
    assert s.failures[-1].traceback == remote.traceback      # the worker's, when it has one


def test_retries_restarts_and_chunks():
    s = recorded()
    assert [(r.position, r.type_name, r.message) for r in s.retries] == [(5, "ValueError",
                                                                          "bad row 5")]
    assert [(w.pid, w.reason, w.at) for w in s.worker_restarts] == [(12, "timeout", 102.0),
                                                                     (13, "SIGSEGV", 102.0)]
    assert [(c.worker_pid, c.n_tasks) for c in s.chunks] == [(11, 3), (12, 2), (14, 1)]


def test_one_line_for_a_run_with_failures():
    line = recorded().line()
    assert "\n" not in line
    assert line == ("4 of 10 tasks failed: ValueError 2, TaskTimeoutError 1, WorkerDiedError 1; "
                    "slowest: task 7 (2.00 s); 2 workers replaced; 1 retry; 3.50 s")
    assert str(recorded()) == line


def test_line_without_failures_or_measurements():
    s = RunSummary(clock=Clock())
    s.tasks_done(range(1000))
    s.tasks_done(iter(range(5)))
    assert s.line() == "1005 of 1005 tasks done"
    assert s.slowest_task is None and s.wall_time is None
    assert "1005 done, 0 failed" in repr(s)


def test_reading_while_recording_is_safe():
    s = RunSummary()
    stop = threading.Event()

    def record():
        i = 0
        while not stop.is_set():
            s.task_done(i, 0.001 * i)
            s.task_failed(i, i, ValueError(i))
            i += 1

    writer = threading.Thread(target=record)
    writer.start()
    try:
        for _ in range(200):
            s.counts_by_type(), s.durations, s.slowest_task, s.line(), s.failures
    finally:
        stop.set()
        writer.join()


def test_plot_timeline_without_matplotlib_names_the_extra(monkeypatch):
    for name in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)         # import fails as if absent
    with pytest.raises(ImportError, match=r"matplotlib.*parallelbar_clone\[plot\]"):
        recorded().plot_timeline()
    assert "parallelbar_clone[plot]" in PLOT_EXTRA


def test_plot_timeline_draws_a_row_per_worker():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ax = recorded().plot_timeline()
    try:
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels == ["pid 11", "pid 12", "pid 14", "pid 13", "failures"]
        assert len(ax.collections) == 5      # 3 workers' chunks, restarts, failures
    finally:
        plt.close(ax.figure)
