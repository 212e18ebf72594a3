"""Task functions for the benchmarks.

They live at module level in an importable module so that workers started with
``spawn`` or ``forkserver`` (and joblib's loky) can import them by name.
``run.py`` puts this folder on ``sys.path``; child processes inherit that path.
"""
from time import perf_counter

from parallelbar_clone.tools import fibonacci

__all__ = ["square", "spin", "fibonacci", "calibrate_spin", "time_call"]


def square(x):
    """The trivial task."""
    return x * x


def spin(iterations):
    """A CPU-bound busy loop of ``iterations`` additions; returns ``iterations``
    (a small int, so sending the result back costs nothing)."""
    total = 0
    for i in range(iterations):
        total += i
    return iterations


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
