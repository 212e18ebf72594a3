"""Task functions for the benchmarks.

They live at module level in an importable module so that workers started with
``spawn`` or ``forkserver`` (and joblib's loky) can import them by name.
``run.py`` puts this folder on ``sys.path``; child processes inherit that path.

Every task returns something that differs from its input (checked for every
workload by :func:`checks.expect`), so a library that skipped the call, or
returned the task instead of the result, fails the result check.

Clocks: the tasks that report when they ran use ``time.monotonic()``. On Linux
that is ``CLOCK_MONOTONIC``, one clock for the whole system, so times read in
different processes (the caller, the zygote's workers, a forkserver's) can be
subtracted from each other.
"""
import ctypes
import os
import time
from time import perf_counter

from parallelbar_clone.tools import fibonacci

__all__ = ["invert", "spin", "spin_total", "fibonacci", "calibrate_spin", "time_call",
           "arrive", "hang_or_report", "busy_for", "spin_timed"]

now = time.monotonic


def invert(x):
    """The trivial task: ``~x`` (= -x - 1), never equal to ``x`` and as cheap as
    ``x*x``; the inverse is the same operation, so a stream can be checked item by item."""
    return ~x


def spin_total(iterations):
    """What :func:`spin` returns for ``iterations``."""
    return iterations * (iterations - 1) // 2


def spin(iterations):
    """A CPU-bound busy loop of ``iterations`` additions; returns their sum
    (:func:`spin_total`), a small int, so sending the result back costs nothing."""
    total = 0
    for i in range(iterations):
        total += i
    return total


def time_call(func, arg):
    """Seconds one call of ``func(arg)`` takes in this process."""
    start = perf_counter()
    func(arg)
    return perf_counter() - start


def calibrate_spin(seconds, probe=200_000, rounds=15):
    """The ``spin`` argument that takes about ``seconds`` here, and the measured
    mean duration of one such call (timed over enough calls to be stable)."""
    per_iter = sorted(time_call(spin, probe) / probe for _ in range(rounds))[rounds // 2]
    iterations = max(1, int(round(seconds / per_iter)))
    calls = max(5, int(0.2 / seconds))
    measured = seconds
    for _ in range(3):  # a short probe and a full task do not run at quite the same speed
        start = perf_counter()
        for _ in range(calls):
            spin(iterations)
        measured = (perf_counter() - start) / calls
        if abs(measured / seconds - 1) < 0.02:
            break
        iterations = max(1, int(round(iterations * seconds / measured)))
    else:
        start = perf_counter()
        for _ in range(calls):
            spin(iterations)
        measured = (perf_counter() - start) / calls
    return iterations, measured


# ------------------------------------------------------------ pool start-up
def arrive(task):
    """A barrier for pool start-up: ``task = (folder, workers, i)``.

    Notes when it started, leaves a file named after this process in ``folder``,
    then waits until ``workers`` processes have done the same, so that each worker
    runs exactly one of the ``workers`` tasks (with ``chunk_size=1``) and the last
    start is the moment the whole pool was working. Returns ``(~i, pid, start)``;
    after 30 s alone it gives up and returns ``(~i, pid, None)``, which the check
    reports instead of hanging the benchmark."""
    folder, workers, i = task
    start = now()
    pid = os.getpid()
    with open(os.path.join(folder, str(pid)), "w"):
        pass
    deadline = start + 30
    while len(os.listdir(folder)) < workers:
        if now() > deadline:
            return ~i, pid, None
        time.sleep(0.0002)
    return ~i, pid, start


# ------------------------------------------------------------ respawn latency
def hang_or_report(task):
    """``task = (i, path, hang_s)``. With a ``path``: write the start time there,
    then hang ``hang_s`` seconds inside C (libc ``sleep``, which no Python-level
    timeout can interrupt), so only killing the worker ends it. Without: return
    ``(~i, start)``, the moment the task that follows a hang began."""
    i, path, hang_s = task
    start = now()
    if path is None:
        return ~i, start
    with open(path, "w") as f:
        f.write(repr(start))
    ctypes.CDLL(None).sleep(int(hang_s))
    return ~i, None   # not reached when the timeout works


# ------------------------------------------------------------ waiting between chunks
def busy_for(task):
    """A steady task: ``task = (i, seconds)``; busy until ``seconds`` have passed
    (whatever the CPU's speed, and even when the worker was descheduled in between).
    Returns ``(~i, pid, start, end)``."""
    i, seconds = task
    start = now()
    end = start + seconds
    t = start
    while t < end:
        t = now()
    return ~i, os.getpid(), start, t


def spin_timed(task):
    """``task = (i, iterations)``: :func:`spin`, timed from inside the task.
    Returns ``(~i, spin(iterations), pid, start, end)``."""
    i, iterations = task
    start = now()
    total = spin(iterations)
    return ~i, total, os.getpid(), start, now()
