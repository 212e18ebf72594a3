"""Cost of checkpoint=: the same run with and without a journal, alternating.

    python benchmarks/checkpoint_overhead.py [--tasks 1000000] [--reps 5] [--spin 0]

Prints the medians and the ratio (with / without). With ``--spin 0`` tasks are
trivial (x*x), the worst case for a journal: all its cost is overhead;
``--spin N`` makes each task a busy loop of N additions instead.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_tasks import spin, square  # noqa: E402

from parallelbar_clone import ProgressPool  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--spin", type=int, default=0)
    args = parser.parse_args()
    func, tasks = (spin, [args.spin] * args.tasks) if args.spin else (square, range(args.tasks))
    plain, journalled = [], []
    with ProgressPool(n_cpu=2, disable=True) as pool, tempfile.TemporaryDirectory() as tmp:
        pool.map(square, range(1000))  # warm up the workers
        for rep in range(args.reps):
            started = time.perf_counter()
            pool.map(func, tasks)
            plain.append(time.perf_counter() - started)
            path = os.path.join(tmp, f"run{rep}.sqlite")
            started = time.perf_counter()
            pool.map(func, tasks, checkpoint=path)
            journalled.append(time.perf_counter() - started)
            size = os.path.getsize(path)
    a, b = statistics.median(plain), statistics.median(journalled)
    kind = f"spin({args.spin})" if args.spin else "trivial"
    print(f"{args.tasks} {kind} tasks, 2 workers, {args.reps} reps (medians)")
    print("| run | seconds |\n| --- | --- |")
    print(f"| without checkpoint | {a:.3f} |\n| with checkpoint | {b:.3f} |")
    print(f"ratio with/without: {b / a:.2f}x; journal size {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
