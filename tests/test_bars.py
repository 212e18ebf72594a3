"""What the bars show: DONE counts successes, ERROR appears on the first failure.

Read from captured stderr, and from the screen a terminal would show for it."""
import io
import re
import threading
import time

import tasks
from parallelbar_clone import ProgressPool, progress_imap, progress_map
from parallelbar_clone.bar import BarThread


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
        bars = pool._bars.get()
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


# -- what a terminal shows -------------------------------------------------------------
_CSI = re.compile(r"\x1b\[(\d*)([A-Za-z])")


def screen(stream):
    """The lines a terminal shows after receiving ``stream``: enough of a VT100 for
    tqdm (carriage return, newline, cursor up; colours dropped)."""
    lines, row, col = [[]], 0, 0
    i = 0
    while i < len(stream):
        ch = stream[i]
        match = _CSI.match(stream, i)
        if match:
            if match.group(2) == "A":
                row = max(0, row - int(match.group(1) or 1))
            i = match.end()
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
        else:
            while len(lines) <= row:
                lines.append([])
            line = lines[row]
            while len(line) <= col:
                line.append(" ")
            line[col] = ch
            col += 1
        i += 1
    return ["".join(line).rstrip() for line in lines if "".join(line).strip()]


def test_screen_shows_done_above_error_with_counts_and_rates(capsys):
    progress_map(tasks.raises, range(40), n_cpu=2, error_behavior="coerce")
    err = capsys.readouterr().err
    shown = screen(err)
    assert [line.split(":")[0] for line in shown] == ["DONE", "ERROR", "1 of 40 tasks failed"], \
        shown   # the bars, then the run's summary line
    done, error, summary = shown
    assert summary.startswith("1 of 40 tasks failed: ValueError 1; slowest: task ")
    assert re.search(r"\b39/40\b", done) and re.search(r"\b1/40\b", error)
    assert re.search(r"(it/s|s/it)\]$", done) and re.search(r"(it/s|s/it)\]$", error)
    # one layout: the bars start and end in the same columns
    assert done.index("|") == error.index("|") and done.rindex("|") == error.rindex("|")


def test_error_bar_first_drawn_with_its_first_count(capsys):
    progress_map(tasks.raises, range(40), n_cpu=2, error_behavior="coerce")
    err = capsys.readouterr().err
    counts = re.findall(r"ERROR:\s+\d+%\|[^|]*\|\s*(\d+)/40", err)
    assert counts and "0" not in counts, counts


def test_done_is_not_100_percent_while_a_task_failed():
    from parallelbar_clone.bar import _classes, bar_format
    out = io.StringIO()
    bar = _classes()["terminal"](total=3000, file=out, bar_format=bar_format("DONE", 3000, width=5))
    bar.update(2994)
    assert " 99%|" in str(bar) and "2994/3000" in str(bar)
    bar.update(6)
    assert "100%|" in str(bar)
    bar.close()


def test_summary_line_drawn_under_the_bars(capsys):
    bars = BarThread()
    closed = threading.Event()
    bars.send(("open", 1, 10, "DONE", 0, None, time.monotonic()))
    bars.send(("update", 1, 8, 2, None))
    bars.send(("summary", 1, "2 of 10 tasks failed: ValueError x2"))
    bars.send(("close", 1, closed))
    assert closed.wait(10)
    bars.stop()
    shown = screen(capsys.readouterr().err)
    assert [line.split(":")[0] for line in shown] == ["DONE", "ERROR", "2 of 10 tasks failed"]


def test_a_bar_opened_late_keeps_the_run_clock(capsys):
    # The manager opens a run's bar once work is sent: its elapsed time and first rate
    # count from the submission, not from the (later) opening.
    bars = BarThread()
    closed = threading.Event()
    bars.send(("open", 1, 100, "DONE", 0, None, time.monotonic() - 20))
    bars.send(("update", 1, 100, 0, None))
    bars.send(("close", 1, closed))
    assert closed.wait(10)
    bars.stop()
    last = screen(capsys.readouterr().err)[-1]
    assert "100/100 [00:2" in last, last          # 20 s, not 00:00
    rate = float(re.search(r"([0-9.]+)it/s", last).group(1))
    assert 3 < rate < 6, last                      # 100 tasks in 20 s: 5/s, not thousands


def test_summary_for_a_closed_run_is_drawn_at_once(capsys):
    bars = BarThread()
    bars.send(("summary", 7, "workers replaced: 1"))
    bars.stop()
    assert screen(capsys.readouterr().err) == ["workers replaced: 1"]


def test_unknown_total_both_bars_count(capsys):
    progress_map(tasks.raises, (i for i in range(20)), n_cpu=2, error_behavior="coerce")
    shown = screen(capsys.readouterr().err)
    assert [line.split(":")[0] for line in shown] == ["DONE", "ERROR", "1 of 20 tasks failed"], \
        shown
    assert re.match(r"DONE:\s+19it \[", shown[0]) and re.match(r"ERROR:\s+1it \[", shown[1])


def test_bars_in_a_terminal_import_no_notebook_machinery():
    """The widget bar's classes (tqdm.notebook: IPython, ipywidgets, traitlets) are
    imported only where widgets are drawn: importing them took a script's first
    progress_map from 40 ms to 140 ms wherever IPython is installed (as in the test
    extra, which installs ipykernel)."""
    import subprocess
    import sys
    code = ("import sys\nimport parallelbar_clone as pb\n"
            "pb.progress_map(abs, range(10), n_cpu=2)\n"
            "print(sorted(m for m in ('IPython', 'ipywidgets', 'traitlets', 'tqdm.notebook')"
            " if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().strip() == "[]"
