"""Before/after: engine revisions side by side in one process, rotated rounds, paired ratios.

    python benchmarks/ab.py [--workers N] [--rounds R] [--workload W] REV [REV ...]

Each REV (a commit, or ``worktree`` for the files as they are) is copied with
``git archive`` into a temporary folder as its own package, ``pb_<rev>``, and all
are imported side by side. Every round runs ``multiprocessing.Pool.map`` and each
revision's ``progress_map`` (``--imap``: ``progress_imap``) once, in an order
rotated from round to round: a change of a few percent shows in the paired ratios
(this round's time over the first revision's, this round's over Pool's) where one
pass in a fixed order, or tables from different runs, have misled by 15 %.

Workloads: ``trivial`` (200 000 x ``~x``), ``steady`` (3 000 tasks busy for 1 ms,
with the workers' waiting as in ``run.py --only waiting``), ``cpu`` (3 000 CPU tasks
of 0.3 ms). Only the Linux default start method (fork) is meant: the copies are
imported under other names, which spawned workers could not find.
"""
from __future__ import annotations

import argparse
import importlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from multiprocessing import Pool
from operator import invert
from typing import Any, Callable, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from bench_tasks import busy_for, calibrate_spin, spin_timed  # noqa: E402
from pool_measures import gaps_by_worker  # noqa: E402


def copy_revision(rev: str, into: str) -> str:
    """The package at ``rev`` as ``into/pb_<rev>``; returns the package name."""
    name = "pb_" + "".join(c if c.isalnum() else "_" for c in rev)
    target = os.path.join(into, name)
    if rev == "worktree":
        shutil.copytree(os.path.join(ROOT, "parallelbar_clone"), target,
                        ignore=shutil.ignore_patterns("__pycache__"))
        return name
    blob = subprocess.run(["git", "archive", rev, "parallelbar_clone"], cwd=ROOT, check=True,
                          stdout=subprocess.PIPE).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(os.path.join(into, "x"), **safe)  # type: ignore[arg-type]
    os.rename(os.path.join(into, "x", "parallelbar_clone"), target)
    return name


def workload(kind: str) -> Tuple[Callable[[Any], Any], List[Any], Any]:
    """(function, tasks, how to get (pid, start, end) from a result, or None)."""
    if kind == "trivial":
        return invert, list(range(200_000)), None
    if kind == "steady":
        return busy_for, [(i, 0.001) for i in range(3000)], lambda r: r[1:]
    iterations = calibrate_spin(0.0003)[0]
    return spin_timed, [(i, iterations) for i in range(3000)], lambda r: r[2:]


def quartiles(values: List[float]) -> Tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("revs", nargs="+", metavar="REV")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workload", choices=["trivial", "steady", "cpu"], default="trivial")
    parser.add_argument("--imap", action="store_true", help="progress_imap, not progress_map")
    args = parser.parse_args()
    func, tasks, span = workload(args.workload)
    folder = tempfile.mkdtemp(prefix="pb-ab-")
    try:
        sys.path.insert(0, folder)
        engines = {rev: importlib.import_module(copy_revision(rev, folder)) for rev in args.revs}
        w = args.workers

        def pool() -> Any:
            with Pool(w) as p:
                return p.map(func, tasks)

        calls: List[Tuple[str, Callable[[], Any]]] = [("Pool.map", pool)]
        for rev, engine in engines.items():
            call = engine.progress_imap if args.imap else engine.progress_map
            calls.append((rev, (lambda c: lambda: c(func, tasks, n_cpu=w, disable=True))(call)))
        walls: Dict[str, List[float]] = {k: [] for k, _ in calls}
        waits: Dict[str, List[float]] = {k: [] for k, _ in calls}
        for _, call in calls:   # warm-up: imports, first forks
            call()
        for r in range(args.rounds):
            k = r % len(calls)
            for name, call in calls[k:] + calls[:k]:
                t = time.perf_counter()
                out = call()
                walls[name].append(time.perf_counter() - t)
                if span is not None:
                    waited, busy, _, _ = gaps_by_worker([span(o) for o in out])
                    waits[name].append(100 * waited / busy)
        first = args.revs[0]
        print(f"{args.workload}, {len(tasks):,} tasks, {w} workers, {args.rounds} rotated "
              f"rounds, {'progress_imap' if args.imap else 'progress_map'}")
        for name, _ in calls:
            lo, med, hi = quartiles(walls[name])
            line = f"  {name:>12}  {med * 1e3:8.1f} ms (IQR {lo * 1e3:.1f}-{hi * 1e3:.1f})"
            if name != "Pool.map":
                pr = quartiles([a / b for a, b in zip(walls[name], walls["Pool.map"])])
                line += f"  x Pool paired {pr[1]:.3f} ({pr[0]:.3f}-{pr[2]:.3f})"
                if name != first:
                    fr = quartiles([a / b for a, b in zip(walls[name], walls[first])])
                    line += f"  x {first} paired {fr[1]:.3f} ({fr[0]:.3f}-{fr[2]:.3f})"
            if waits[name]:
                wl, wm, wh = quartiles(waits[name])
                line += f"  waiting {wm:.2f} % ({wl:.2f}-{wh:.2f})"
                if name not in ("Pool.map", first):
                    dr = quartiles([a / b for a, b in zip(waits[name], waits[first]) if b])
                    line += f", x {first} paired {dr[1]:.3f} ({dr[0]:.3f}-{dr[2]:.3f})"
            print(line, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
