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
from time import perf_counter
from typing import Any, Callable, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from bench_tasks import invert  # noqa: E402
from checks import expect  # noqa: E402
from harness import Contender, rotate  # noqa: E402
from pool_measures import _pool_map, _waiting_sample, waiting_loads  # noqa: E402


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


def _timed(call: Callable[[Callable[[Any], Any], List[Any], int], Any],
           func: Callable[[Any], Any], tasks: List[Any], workers: int,
           check: Callable[[Any], None]) -> Callable[[], Dict[str, float]]:
    def sample() -> Dict[str, float]:
        began = perf_counter()
        result = call(func, tasks, workers)
        wall = perf_counter() - began
        check(list(result))
        return {"wall": wall}
    return sample


def quartiles(values: List[float]) -> Tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def paired(a: Contender, b: Contender, key: str) -> str:
    """Median (IQR) of a's sample over b's of the same round; n/a if a round failed."""
    if len(a.samples) != len(b.samples) or not a.samples:
        return "n/a"
    ratios = [x[key] / y[key] for x, y in zip(a.samples, b.samples) if y[key]]
    lo, med, hi = quartiles(ratios)
    return f"{med:.3f} ({lo:.3f}-{hi:.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("revs", nargs="+", metavar="REV")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workload", choices=["trivial", "steady", "cpu"], default="trivial")
    parser.add_argument("--imap", action="store_true", help="progress_imap, not progress_map")
    args = parser.parse_args()
    w = args.workers
    if args.workload == "trivial":
        func, tasks = invert, list(range(200_000))
        check, width = expect(tasks, [~x for x in tasks], ordered=True), None
    else:
        _, func, tasks, check, width, _, _ = waiting_loads(3000)[
            0 if args.workload == "steady" else 1]

    def contender(label: str, call: Callable[[Callable[[Any], Any], List[Any], int], Any]
                  ) -> Contender:
        if width is None:
            return Contender(label, _timed(call, func, tasks, w, check))
        return Contender(label, _waiting_sample(call, func, tasks, w, check, width))

    folder = tempfile.mkdtemp(prefix="pb-ab-")
    try:
        sys.path.insert(0, folder)
        contenders = [contender("Pool.map", _pool_map)]
        for rev in args.revs:
            engine = importlib.import_module(copy_revision(rev, folder))
            ours = engine.progress_imap if args.imap else engine.progress_map
            contenders.append(contender(rev, (lambda f: lambda fn, ts, n: f(
                fn, ts, n_cpu=n, disable=True))(ours)))
        rotate(contenders, args.rounds, None, "ab")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    pool, first = contenders[0], contenders[1]
    print(f"{args.workload}, {len(tasks):,} tasks, {w} workers, {args.rounds} rotated "
          f"rounds, {'progress_imap' if args.imap else 'progress_map'}")
    for c in contenders:
        if c.error or not c.samples:
            print(f"  {c.label:>12}  n/a ({c.error or 'no successful call'})")
            continue
        lo, med, hi = quartiles(c.values("wall"))
        line = f"  {c.label:>12}  {med * 1e3:8.1f} ms (IQR {lo * 1e3:.1f}-{hi * 1e3:.1f})"
        if c is not pool:
            line += f"  x Pool paired {paired(c, pool, 'wall')}"
            if c is not first:
                line += f"  x {first.label} paired {paired(c, first, 'wall')}"
        if width is not None:
            wl, wm, wh = quartiles([v * 100 for v in c.values("wait")])
            line += f"  waiting {wm:.2f} % ({wl:.2f}-{wh:.2f})"
            if c not in (pool, first):
                line += f", x {first.label} paired {paired(c, first, 'wait')}"
            cl, cm, ch = quartiles([v * 1e3 for v in c.values("cpu_per_k")])
            line += f"  parent CPU {cm:.1f} ms per 1 000 tasks ({cl:.1f}-{ch:.1f})"
            if c not in (pool, first):
                line += f", x {first.label} paired {paired(c, first, 'cpu_per_k')}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
