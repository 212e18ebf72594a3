"""Cost of checkpoint=: the same calls with and without a journal, in rotated rounds.

    python benchmarks/checkpoint_overhead.py [--tasks 1000000] [--reps 5] [--task-us 0 6]
    python benchmarks/run.py --only checkpoint          # the same, inside the full run

One pool (2 workers, bars off) runs every call. For each task size it times
``pool.map`` over N tasks without and with ``checkpoint=``, and the same on 10
tasks, which gives the fixed cost of a journal (creating the SQLite file and
closing it) apart from the cost per task. Every result is checked, and so is
every journal: ``load_checkpoint`` must give back each task's result.
``--task-us 0`` is the trivial task (``~x``), the worst case for a journal: all
its cost is overhead; ``--task-us 6`` a busy loop calibrated to about 6 µs.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from time import perf_counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_tasks  # noqa: E402
from bench_tasks import invert, spin, spin_total  # noqa: E402
from checks import ResultError, expect  # noqa: E402
from harness import Contender, rotate  # noqa: E402
from report import fmt_ratio, fmt_s, md_table, spread  # noqa: E402

SMALL = 10


def _workload(n: int, task_us: float) -> Tuple[str, Callable[[Any], Any], List[Any], List[Any]]:
    if not task_us:
        tasks = list(range(n))
        return "trivial (`~x`)", invert, tasks, [invert(x) for x in tasks]
    iterations, per_task = bench_tasks.calibrate_spin(task_us / 1e6)
    tasks = [iterations] * n
    return (f"`spin({iterations})`, {per_task * 1e6:.1f} µs serially", spin, tasks,
            [spin_total(iterations)] * n)


def _remove_journal(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except OSError:
            pass


def _sample(pool_of: Callable[[], Any], func: Callable[[Any], Any], tasks: List[Any],
            expected: List[Any], folder: str, journal: bool) -> Callable[[], Dict[str, float]]:
    check = expect(tasks, expected, ordered=True)
    counter = [0]

    def sample() -> Dict[str, float]:
        from parallelbar_clone import load_checkpoint
        pool = pool_of()
        counter[0] += 1
        path = os.path.join(folder, f"j{id(check)}-{counter[0]}.sqlite") if journal else None
        options = {"checkpoint": path} if journal else {}
        try:
            began = perf_counter()
            result = pool.map(func, tasks, **options)
            elapsed = perf_counter() - began
            check(result)
            out = {"time": elapsed}
            if path is not None:
                out["size"] = os.path.getsize(path)
                saved = load_checkpoint(path)
                if saved.failures or len(saved.results) != len(tasks):
                    raise ResultError(f"the journal holds {len(saved.results)} results and "
                                      f"{len(saved.failures)} failures for {len(tasks)} tasks")
                wrong = next((i for i, want in enumerate(expected)
                              if saved.results.get(i) != want), None)
                if wrong is not None:
                    raise ResultError(f"the journal's result {wrong} is "
                                      f"{saved.results.get(wrong)!r}, expected "
                                      f"{expected[wrong]!r}")
            return out
        finally:
            if path is not None:
                _remove_journal(path)
    return sample


def measure(n: int, reps: int, workers: int, timeout: Optional[float],
            task_us: Sequence[float] = (0, 6)) -> Tuple[str, Optional[str]]:
    """Markdown tables of the overhead, and a one-line summary for the README."""
    from parallelbar_clone import ProgressPool

    held: List[Any] = []

    def pool_of() -> Any:
        if not held:
            held.append(ProgressPool(n_cpu=workers, disable=True))
            held[0].map(invert, range(1000))   # start the workers
        return held[0]

    tables = []
    notes = []
    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as folder:
        try:
            for us in task_us:
                what, func, tasks, expected = _workload(n, us)
                small_tasks, small_expected = tasks[:SMALL], expected[:SMALL]
                contenders = [
                    Contender(f"{n:,} tasks, without checkpoint",
                              _sample(pool_of, func, tasks, expected, folder, False)),
                    Contender(f"{n:,} tasks, with checkpoint",
                              _sample(pool_of, func, tasks, expected, folder, True)),
                    Contender(f"{SMALL} tasks, without checkpoint",
                              _sample(pool_of, func, small_tasks, small_expected, folder,
                                      False)),
                    Contender(f"{SMALL} tasks, with checkpoint",
                              _sample(pool_of, func, small_tasks, small_expected, folder,
                                      True)),
                ]
                rotate(contenders, reps, timeout, f"checkpoint {us:g} us")
                plain, journal, plain_small, journal_small = (c.median("time")
                                                              for c in contenders)
                rows = []
                for c, base in zip(contenders, (plain, plain, plain_small, plain_small)):
                    med = c.median("time")
                    if med is None:
                        rows.append([c.label, f"n/a ({c.error or 'no successful call'})",
                                     "", "", ""])
                        continue
                    size = c.median("size")
                    rows.append([c.label, fmt_s(med), spread(c.values("time")),
                                 fmt_ratio(med / base) if base else "n/a",
                                 "" if size is None else f"{size / 1e6:.2f}"])
                text = (f"### {what}\n\n"
                        + md_table(["call", "median s", "min–max s", "× without",
                                    "journal MB"], rows))
                if None not in (plain, journal, plain_small, journal_small):
                    fixed = journal_small - plain_small
                    extra = journal - plain
                    text += (f"\n\nWith a checkpoint, the {n:,}-task call took "
                             f"{extra * 1000:+.1f} ms ({fmt_ratio(journal / plain)}); the "
                             f"{SMALL}-task call took {fixed * 1000:+.1f} ms, which is the "
                             f"fixed cost of a journal (creating, committing and closing it) "
                             f"whatever the number of tasks.")
                    notes.append(f"{n:,} {what.split(',')[0]} tasks: {fmt_ratio(journal / plain)} "
                                 f"with a checkpoint ({fmt_s(journal)} s against "
                                 f"{fmt_s(plain)} s); a 10-task call takes {fixed * 1000:+.1f} "
                                 f"ms with one")
                tables.append(text)
        finally:
            for pool in held:
                pool.close()
    section = (f"## Checkpoint overhead (`checkpoint`): `ProgressPool.map` with and without "
               f"`checkpoint=`, {workers} workers, bars off, one pool, {reps} rotated rounds\n\n"
               "Every result is checked, and every journal read back with "
               "`load_checkpoint` (outside the timed call).\n\n" + "\n\n".join(tables))
    note = ("Checkpoint overhead: " + "; ".join(notes) + ".") if notes else None
    return section, note


def main(argv: Optional[Sequence[str]] = None) -> int:
    from harness import PROBLEMS
    from report import command_line, machine_lines
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--task-us", type=float, nargs="+", default=[0, 6],
                        help="task sizes in µs (0: trivial); default 0 6")
    parser.add_argument("--call-timeout", type=float, default=300)
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    args = parser.parse_args(argv)
    command = command_line([sys.argv[0]] + list(sys.argv[1:] if argv is None else argv))
    header = "\n".join(machine_lines(f"tasks={args.tasks}, reps={args.reps}, "
                                     f"workers={args.workers}", command))
    print(header + "\n", flush=True)
    text, note = measure(args.tasks, args.reps, args.workers, args.call_timeout,
                         args.task_us)
    if PROBLEMS:
        text += "\n\n## Problems seen\n\n" + "\n".join(f"- {p}" for p in PROBLEMS)
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(header + "\n\n" + text + "\n")
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main())
