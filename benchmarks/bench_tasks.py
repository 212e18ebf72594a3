"""Task functions for the benchmarks.

They live at module level in an importable module so that workers started with
``spawn`` or ``forkserver`` (and joblib's loky) can import them by name.
``run.py`` puts this folder on ``sys.path``; child processes inherit that path.

Every task returns something that differs from its input (checked for every
workload by :func:`checks.expect`), so a library that skipped the call, or
returned the task instead of the result, fails the result check.
"""
from time import perf_counter

from parallelbar_clone.tools import fibonacci

__all__ = ["invert", "spin", "spin_total", "fibonacci", "calibrate_spin", "time_call"]


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
