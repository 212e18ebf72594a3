"""Live demo: ``python -m parallelbar_clone.demo`` (or ``make demo``).

A run of 80 tasks where five misbehave the ways real jobs do at 3 a.m.: one
raises, one hangs inside C code, one eats memory, one segfaults, one calls
os._exit. Watch the DONE bar keep going and the red ERROR bar count them live;
then every outcome is in its own slot.
"""
from __future__ import annotations

import ctypes
import os
import random
import sys
import time
from collections import Counter

from parallelbar_clone import ProgressPool, progress_map
from parallelbar_clone.tools import cpu_bench

RAISES, HANGS, EATS_MEMORY, SEGFAULTS, EXITS = 7, 19, 31, 43, 52


def task(n: int) -> int:
    """Simulated work (0.1 to 0.4 s of CPU), except for five bad apples."""
    if n == RAISES:
        raise ValueError(f"row {n}: could not parse '3,14'")
    if n == HANGS:
        ctypes.CDLL(None).sleep(3600)                  # stuck in C: no signal gets it out
    if n == EATS_MEMORY:
        hog = [bytearray(10_000_000) for _ in range(300)]  # 3 GB, touched
        return len(hog)
    if n == SEGFAULTS:
        ctypes.string_at(0)                          # reads address 0: SIGSEGV
    if n == EXITS:
        os._exit(3)                                  # a library that calls exit()
    random.seed(n)
    return cpu_bench(random.randint(500_000, 2_000_000))


def square(x: int) -> int:
    return x * x


def main() -> None:
    out = sys.stdout
    print("parallelbar_clone demo: 80 tasks, 5 of them bad (raise, C hang, 3 GB, segfault, "
          "os._exit)\nprocess_timeout=2 s, memory_limit='500MB', error_behavior='coerce'\n",
          file=out, flush=True)
    started = time.monotonic()
    results = progress_map(task, range(80), process_timeout=2, memory_limit="500MB",
                           error_behavior="coerce")
    took = time.monotonic() - started
    failures = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
    print(f"\n{len(results) - len(failures)} of {len(results)} tasks succeeded in {took:.1f} s; "
          f"{len(failures)} failed, each in its own slot:", file=out)
    for i, exc in failures.items():
        print(f"  results[{i}] = {type(exc).__name__}: {exc}", file=out)
    kinds = Counter(type(e).__name__ for e in failures.values())
    print("  by kind: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())), file=out)
    print(f"\nThe remote traceback travels with the error (results[{RAISES}].traceback):",
          file=out)
    print("  " + results[RAISES].traceback.strip().splitlines()[-2].strip(), file=out)

    print("\nA ProgressPool keeps its workers: 1 000 000 tiny tasks, streamed lazily:",
          file=out, flush=True)
    with ProgressPool() as pool:
        started = time.monotonic()
        total = sum(pool.imap_unordered(square, range(1_000_000)))
        print(f"sum of squares = {total} in {time.monotonic() - started:.2f} s", file=out)


if __name__ == "__main__":
    main()
