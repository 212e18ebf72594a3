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


# ------------------------------------------------------------------ from a real run

def test_a_run_leaves_its_summary(capsys):
    import tasks
    from parallelbar_clone import ProgressPool, TaskTimeoutError, last_summary, progress_map
    result = progress_map(tasks.c_hang, range(12), n_cpu=2, process_timeout=0.3,
                          error_behavior="coerce", retries=1, chunk_size=1)
    assert isinstance(result[tasks.FAULT_AT], TaskTimeoutError)
    summary = last_summary()
    assert summary.n_done == 11 and summary.n_failed == 1
    assert summary.counts_by_type() == {"TaskTimeoutError": 1}
    failure = summary.failures[0]
    assert failure.position == tasks.FAULT_AT and failure.task == tasks.FAULT_AT
    assert isinstance(failure.exception, TaskTimeoutError)
    assert [r.position for r in summary.retries] == [tasks.FAULT_AT]
    assert [r.reason for r in summary.worker_restarts] == ["timeout", "timeout"]
    assert sum(c.n_tasks for c in summary.chunks) == 11    # the killed ones ran nothing
    assert set(summary.durations) == set(range(12)) - {tasks.FAULT_AT}
    assert summary.wall_time > 0.6                          # two attempts of 0.3 s
    line = summary.line()
    assert line.startswith("1 of 12 tasks failed: TaskTimeoutError 1")
    assert "2 workers replaced" in line and "1 retry" in line
    err = capsys.readouterr().err
    assert line in err                                      # under the bars
    with ProgressPool(n_cpu=2, disable=True) as pool:
        it = pool.imap(tasks.segfaults, range(12), error_behavior="coerce")
        list(it)
        assert it.summary is pool.last_summary is last_summary()
        assert it.summary.counts_by_type() == {"WorkerDiedError": 1}
        assert it.summary.worker_restarts[0].reason == "SIGSEGV"
        assert "SIGSEGV" in str(it.summary.failures[0].exception)
        assert "line" not in capsys.readouterr().err        # disabled bars print nothing


def test_a_clean_run_prints_no_summary_line(capsys):
    import tasks
    from parallelbar_clone import last_summary, progress_map
    progress_map(tasks.times_ten, range(20), n_cpu=2)
    assert last_summary().line().startswith("20 of 20 tasks done")
    assert "tasks done" not in capsys.readouterr().err


def test_records_stay_bounded_but_counts_exact():
    summary = RunSummary(max_records=10)
    summary.tasks_done(range(100), [0.001] * 99 + [5.0])
    for pos in range(100, 150):
        summary.task_failed(pos, pos, ValueError("x"))
        summary.retried(pos, type_name="ValueError", message="x")
    assert len(summary.durations) == 10 and summary.slowest_task == (99, 5.0)
    assert summary.n_failed == 50 and len(summary.failures) == 10
    assert summary.counts_by_type() == {"ValueError": 50}
    assert "50 retries" in summary.line() and len(summary.retries) == 10
