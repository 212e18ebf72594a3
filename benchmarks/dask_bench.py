"""The `dask` workload: our dask.distributed backend against our process pool on the same
tasks, in the same rotated rounds, and what each task costs on top of its own work.

Contenders (``--workers`` W, default 2), each one complete call unless it says reused:

- ours ``progress_map``, processes (the default engine);
- ours ``progress_map(executor='dask')``: starts a LocalCluster of W single-threaded
  worker processes, runs, closes it;
- ours ``progress_map(executor=client)`` on a LocalCluster started once (untimed), as a
  dask user who keeps a client calls it, against ours ``ProgressPool.map``, processes,
  on a pool opened once;
- ``client.map`` + ``client.gather`` on that cluster: dask alone, one future per task,
  no bars (what batching saves); on the first 2,000 trivial tasks only (its row is
  compared with the processes row scaled to as many tasks).

Workloads: trivial tasks (``invert``) and CPU tasks calibrated to 1 ms. Per-task
overhead = (median wall time - N x task time / W) x W / N: worker time each task costs
beyond its own work (start-up included for one-call rows). Also runs on its own:
``python benchmarks/dask_bench.py --quick``.
"""
from __future__ import annotations

import argparse
import os
import sys
from time import perf_counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_tasks  # noqa: E402
from bench_tasks import invert, spin, spin_total  # noqa: E402
from checks import expect  # noqa: E402
from harness import Contender, log, rotate  # noqa: E402
from report import fmt_ratio, fmt_s, md_table, spread  # noqa: E402

__all__ = ["measure"]


class _Cluster:
    """A LocalCluster and its client, started on first use and kept for the rounds."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.cluster: Any = None
        self.client: Any = None

    def get(self) -> Any:
        if self.client is None:
            import distributed
            self.cluster = distributed.LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True,
                dashboard_address=":0")
            self.client = distributed.Client(self.cluster, set_as_default=False)
        return self.client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.cluster.close()
            self.client = self.cluster = None


class _Pool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: Any = None

    def get(self) -> Any:
        if self.pool is None:
            from parallelbar_clone import ProgressPool
            self.pool = ProgressPool(n_cpu=self.workers)
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


def _sample(call: Callable[[], Any], check: Callable[[Any], None]
            ) -> Callable[[], Dict[str, float]]:
    def sample() -> Dict[str, float]:
        began = perf_counter()
        result = call()
        elapsed = perf_counter() - began
        check(result)
        return {"time": elapsed}
    return sample


def contenders(func: Callable[[Any], Any], tasks: List[Any], expected: List[Any],
               workers: int, cluster: _Cluster, pool: _Pool, alone: int) -> List[Contender]:
    """``alone``: how many of the tasks the dask-alone row runs (a future per task costs
    milliseconds: on every task it would dominate the run)."""
    from parallelbar_clone import progress_map
    check = expect(tasks, expected, ordered=True)
    few = tasks[:alone]

    def dask_alone() -> Any:
        client = cluster.get()
        return client.gather(client.map(func, few, pure=False))

    return [
        Contender("ours progress_map, processes",
                  _sample(lambda: progress_map(func, tasks, n_cpu=workers), check),
                  note="one call: pool start included", start="fork"),
        Contender("ours progress_map(executor='dask')",
                  _sample(lambda: progress_map(func, tasks, n_cpu=workers, executor="dask"),
                          check),
                  note="one call: starts and closes its LocalCluster", needs=["distributed"]),
        Contender("ours ProgressPool.map, processes, reused pool",
                  _sample(lambda: pool.get().map(func, tasks), check),
                  note="pool opened once"),
        Contender("ours progress_map(executor=client), reused cluster",
                  _sample(lambda: progress_map(func, tasks, executor=cluster.get()), check),
                  note="LocalCluster started once", needs=["distributed"]),
        Contender("dask client.map + gather, reused cluster",
                  _sample(dask_alone, expect(few, expected[:alone], ordered=True)),
                  note="one future per task, no bar"
                  + (f"; on the first {alone:,} tasks only" if alone < len(tasks) else ""),
                  peer=True, needs=["distributed"]),
    ]


def _overhead_us(seconds: Optional[float], ideal: float, n: int, workers: int
                 ) -> Optional[float]:
    if seconds is None:
        return None
    return (seconds - ideal) * workers / n * 1e6


def _fmt_us(x: Optional[float]) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"


def _section(title: str, func: Callable[[Any], Any], tasks: List[Any], expected: List[Any],
             per_task: float, args: argparse.Namespace, cluster: _Cluster, pool: _Pool,
             tag: str, alone: int) -> Tuple[str, Dict[str, Optional[float]]]:
    w = args.workers
    cs = contenders(func, tasks, expected, w, cluster, pool, min(alone, len(tasks)))
    cs = [c for c in cs if not (getattr(args, "skip_peers", False) and c.peer)]
    rotate(cs, args.reps, args.call_timeout, f"dask {tag}")
    base = {c.label: c.median("time") for c in cs}
    ref = {"ours progress_map(executor='dask')": "ours progress_map, processes",
           "ours progress_map(executor=client), reused cluster":
               "ours ProgressPool.map, processes, reused pool",
           "dask client.map + gather, reused cluster":
               "ours ProgressPool.map, processes, reused pool"}
    rows = []
    for c in cs:
        med = c.median("time")
        n = min(alone, len(tasks)) if c.label.startswith("dask ") else len(tasks)
        ideal = n * per_task / w
        if med is None:
            rows.append([c.label, f"n/a ({c.error or 'no successful call'})", "", "", "", "",
                         c.note])
            continue
        other = base.get(ref.get(c.label, ""))
        if other and n != len(tasks):
            other = other * n / len(tasks)   # the processes row, scaled to these tasks
        extra = ((med - other) * w / n * 1e6) if other else None
        rows.append([c.label, fmt_s(med), spread(c.values("time")),
                     _fmt_us(_overhead_us(med, ideal, n, w)),
                     fmt_ratio(med / other) if other else "",
                     _fmt_us(extra) if other else "", c.note])
    head = ["call", "median s", "min–max s", "overhead µs/task", "× processes row",
            "+ µs/task vs processes row", "notes"]
    ideal = len(tasks) * per_task / w
    text = (f"### {title}\n\nIdeal (N × task time / workers): {fmt_s(ideal)} s. "
            f"'× processes row': against ours with processes of the same kind (one call, or "
            f"reused).\n\n" + md_table(head, rows))
    return text, {c.label: c.median("time") for c in cs}


def measure(args: argparse.Namespace) -> Tuple[str, List[str]]:
    w = args.workers
    n_trivial = 5_000 if args.quick else 20_000
    n_cpu = 300 if args.quick else 1_000
    cluster, pool = _Cluster(w), _Pool(w)
    notes: List[str] = []
    try:
        t_tasks = list(range(n_trivial))
        text1, m1 = _section(f"{n_trivial:,} trivial tasks (`invert`)", invert, t_tasks,
                             [invert(x) for x in t_tasks], 0.0, args, cluster, pool, "trivial",
                             alone=1_000 if args.quick else 2_000)
        iterations, per_task = bench_tasks.calibrate_spin(0.001)
        c_tasks = [iterations] * n_cpu
        text2, m2 = _section(f"{n_cpu:,} CPU tasks of {per_task * 1000:.2f} ms", spin,
                             c_tasks, [spin_total(iterations)] * n_cpu, per_task, args,
                             cluster, pool, "cpu", alone=n_cpu)
    finally:
        cluster.close()
        pool.close()
    for label, m, n, per in (("trivial", m1, n_trivial, 0.0), ("1 ms", m2, n_cpu, per_task)):
        ideal = n * per / w
        dask_reused = m.get("ours progress_map(executor=client), reused cluster")
        proc_reused = m.get("ours ProgressPool.map, processes, reused pool")
        dask_one = m.get("ours progress_map(executor='dask')")
        proc_one = m.get("ours progress_map, processes")
        if dask_reused and proc_reused:
            notes.append(
                f"dask backend, {n:,} {label} tasks, {w} workers: "
                f"{_fmt_us(_overhead_us(dask_reused, ideal, n, w))} µs/task of overhead on a "
                f"running cluster against {_fmt_us(_overhead_us(proc_reused, ideal, n, w))} "
                f"µs/task for a reused process pool ({fmt_ratio(dask_reused / proc_reused)} "
                f"the time); one call with its own LocalCluster "
                f"{fmt_s(dask_one)} s against {fmt_s(proc_one)} s with processes.")
    text = (f"## dask backend (`dask`): ours on a LocalCluster against ours with processes, "
            f"{w} workers, {args.reps} rotated rounds\n\n"
            "The same tasks and checks for every row. Overhead per task: (median − ideal) × "
            "workers / N, in worker-µs; one-call rows include starting and stopping the "
            "pool or cluster.\n\n" + text1 + "\n\n" + text2)
    return text, notes


def _main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="the dask workload of benchmarks/run.py, alone")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--call-timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    args.reps = args.reps or (2 if args.quick else 5)
    text, notes = measure(args)
    print(text + "\n\n" + "\n".join(f"- {n}" for n in notes))
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
