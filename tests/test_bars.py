"""What the bars show: DONE counts successes, ERROR appears on the first failure."""
import re

import tasks
from parallelbar_clone import ProgressPool, progress_imap, progress_map


def final_counts(err, desc):
    """The last 'n/total' drawn on the bar called desc."""
    found = re.findall(desc + r":\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)", err)
    return tuple(map(int, found[-1])) if found else None


def test_done_and_error_bars(capsys):
    result = progress_map(tasks.raises, range(20), n_cpu=2, error_behavior="coerce")
    err = capsys.readouterr().err
    assert isinstance(result[tasks.FAULT_AT], ValueError)
    assert final_counts(err, "DONE") == (19, 20)
    assert final_counts(err, "ERROR") == (1, 20)
    last_done = [line for line in err.replace("\r", "\n").split("\n") if "DONE" in line][-1]
    assert "\x1b[33m" in last_done  # a run with failures ends in the warning colour


def test_no_error_bar_without_failures(capsys):
    progress_map(tasks.times_ten, range(20), n_cpu=2)
    err = capsys.readouterr().err
    assert final_counts(err, "DONE") == (20, 20)
    assert "ERROR" not in err and "\x1b[33m" not in err


def test_two_crashes_counted_live(capsys):
    def crash_two(x):
        import os
        if x in (3, 11):
            os._exit(1)
        return x
    progress_map(crash_two, range(20), n_cpu=2, error_behavior="ignore")
    err = capsys.readouterr().err
    assert final_counts(err, "ERROR") == (2, 20)
    assert final_counts(err, "DONE") == (18, 20)


def test_disable_shows_nothing(capsys):
    progress_map(tasks.raises, range(20), n_cpu=2, error_behavior="coerce", disable=True)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_add_progress_counts_inner_calls(capsys, start_method):
    # 4 tasks calling a decorated function 25 times each: 100/100, on every start method
    result = progress_map(tasks.calls_inner_25_times, range(4), n_cpu=2, total=100,
                          used_add_progress_decorator=True, context=start_method)
    assert result == [sum(range(25))] * 4
    assert final_counts(capsys.readouterr().err, "DONE") == (100, 100)


def test_add_progress_coerce_counts_errors_and_failed_args(capsys):
    results, failed = progress_imap(tasks.calls_inner_failing, range(3), n_cpu=2, total=30,
                                    used_add_progress_decorator=True, return_failed_tasks=True)
    assert results[0] == [0, 1, 2, -1, 4, 5, 6, 7, 8, 9]
    assert sorted(failed) == [3, 13, 23]
    err = capsys.readouterr().err
    assert final_counts(err, "DONE") == (27, 30)
    assert final_counts(err, "ERROR") == (3, 30)


def test_progress_costs_o_workers_not_o_tasks():
    """Bar events are batched: a 200 000-task run sends a handful of updates."""
    sent = []
    with ProgressPool(n_cpu=2) as pool:
        bars = pool._bar_thread()
        original = bars.send
        bars.send = lambda event: (sent.append(event), original(event))
        pool.map(tasks.times_ten, range(200_000))
    updates = [e for e in sent if e[0] == "update"]
    assert sum(e[2] for e in updates) == 200_000
    assert len(updates) < 200


def _odd_raises(x):
    if x % 2:
        raise ValueError(x)
    return x


def test_error_bar_counts_every_failure_of_a_piece(capsys):
    """Chunks of 50 tasks, half of them failing: every failure counts, not one per piece
    of results."""
    result = progress_map(_odd_raises, range(200), n_cpu=2, chunk_size=50,
                          error_behavior="coerce")
    assert sum(isinstance(r, ValueError) for r in result) == 100
    err = capsys.readouterr().err
    assert final_counts(err, "ERROR") == (100, 200)
    assert final_counts(err, "DONE") == (100, 200)
