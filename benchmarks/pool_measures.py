"""Measures of the engine itself, each against ``multiprocessing`` (and peers
where they have the feature) in rotated rounds:

- :func:`pool_start`: how long until N workers all run a task, per start method;
- :func:`respawn`: how long after a task's timeout the next task starts;
- :func:`waiting`: each worker's time waiting for work between tasks, as a
  fraction of its busy time, read from the tasks' own clocks, and the parent's
  CPU time per 1 000 tasks;
- :func:`stream_rate`: items/s of ``imap_unordered`` over a finite range.

Adding a peer (dask, ...): each measure builds its contenders in a ``*_contenders``
function; append a :class:`harness.Contender` there with ``peer=True`` and
``needs=[module]``: its ``sample()`` makes one complete call the way that
library's users write it and returns the same numbers as the other rows.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import shutil
import statistics
import tempfile
from time import perf_counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import bench_tasks
from bench_tasks import arrive, busy_for, hang_or_report, invert, now, spin_timed
from checks import ResultError, StreamCheck, expect
from harness import Contender, rotate
from report import fmt_ms, fmt_pct, fmt_rate, fmt_ratio, fmt_s, md_table, spread

__all__ = ["pool_start", "respawn", "waiting", "stream_rate", "gaps_by_worker"]

OUR_METHODS = [m for m in ("fork", "forkserver", "spawn")
               if m in multiprocessing.get_all_start_methods()]


def _ours_label(method: str) -> str:
    try:
        from parallelbar_clone.options import default_context
        default = default_context()
    except Exception:
        default = None
    if method == default:
        return f"ours, default (`{method}`" + (": first workers forked by the caller and "
                                                 "later ones by the zygote)" if method == "fork"
                                                 else ")")   # (no comma: see respawn)
    return f"ours, context='{method}'"


def _drop_peers(contenders: List[Contender], args: argparse.Namespace) -> List[Contender]:
    return [c for c in contenders if not (args.skip_peers and c.peer)]


# ====================================================================== a. pool start
def _check_arrivals(result: Any, tasks: Sequence[Any], workers: int) -> List[float]:
    """The start times of the barrier tasks; ResultError unless every worker
    ran exactly one of them."""
    expect(tasks, [~t[2] for t in tasks], ordered=True,
           same=lambda got, want: got[0] == want)(result)
    if any(start is None for _, _, start in result):
        raise ResultError("a task waited 30 s for the other workers: not every worker got "
                          "one task")
    pids = {pid for _, pid, _ in result}
    if len(pids) != workers or os.getpid() in pids:
        raise ResultError(f"{len(pids)} worker pids for {workers} workers")
    return [start for _, _, start in result]


def _start_sample(call: Callable[[List[Any], int], Any], workers: int
                  ) -> Callable[[], Dict[str, float]]:
    def sample() -> Dict[str, float]:
        folder = tempfile.mkdtemp(prefix="bench-barrier-")
        tasks = [(folder, workers, i) for i in range(workers)]
        try:
            began = now()
            result = call(tasks, workers)
            ended = now()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        starts = _check_arrivals(result, tasks, workers)
        return {"ready": max(starts) - began, "first": min(starts) - began,
                "call": ended - began}
    return sample


def _ours_barrier(method: Optional[str]) -> Callable[[List[Any], int], Any]:
    def call(tasks: List[Any], workers: int) -> Any:
        from parallelbar_clone import ProgressPool
        with ProgressPool(n_cpu=workers, context=method) as pool:
            return pool.map(arrive, tasks, chunk_size=1)
    return call


def _mp_barrier(method: str) -> Callable[[List[Any], int], Any]:
    def call(tasks: List[Any], workers: int) -> Any:
        with multiprocessing.get_context(method).Pool(workers) as pool:
            return pool.map(arrive, tasks, chunksize=1)
    return call


def pool_start_contenders(workers: int) -> List[Contender]:
    out = [Contender(_ours_label(m), _start_sample(_ours_barrier(m), workers), start=m)
           for m in OUR_METHODS]
    out += [Contender(f"multiprocessing Pool, '{m}'", _start_sample(_mp_barrier(m), workers),
                      start=m)
            for m in ("fork", "forkserver", "spawn")
            if m in multiprocessing.get_all_start_methods()]
    # Peers: append Contender(label, _start_sample(call, workers), peer=True, needs=[...])
    # where call(tasks, workers) starts that library's pool and maps `arrive` over
    # `tasks` one task per worker.
    return out


def pool_start(args: argparse.Namespace) -> Tuple[str, List[str]]:
    w = args.workers
    contenders = _drop_peers(pool_start_contenders(w), args)
    reps = max(4, args.reps) if args.quick else max(6, 2 * args.reps)
    rotate(contenders, reps, args.call_timeout, "pool-start")
    base = next((c.median("ready") for c in contenders
                 if c.label == "multiprocessing Pool, 'fork'"), None)
    rows = []
    for c in contenders:
        ready = c.median("ready")
        if ready is None:
            rows.append([c.label, f"n/a ({c.error or 'no successful call'})", "", "", "", "",
                         ""])
            continue
        first = c.first.get("ready") if c.first else None
        rows.append([c.label, fmt_ms(ready), spread(c.values("ready"), fmt_ms),
                     fmt_ratio(ready / base) if base else "n/a",
                     fmt_ms(c.median("first")), fmt_ms(c.median("call")), fmt_ms(first)])
    head = ["pool", "all workers running: median ms", "min–max ms", "× Pool fork",
            "first worker running: median ms", "whole call incl. shutdown: median ms",
            "first use in this process ms (one sample)"]
    ours = {c.start: c.median("ready") for c in contenders[:len(OUR_METHODS)]}
    theirs = {c.start: c.median("ready") for c in contenders[len(OUR_METHODS):] if not c.peer}
    pairs = [f"`{m}` {fmt_ms(ours.get(m))} ms (Pool: {fmt_ms(theirs.get(m))} ms)"
             for m in OUR_METHODS]
    note = (f"Pool start-up, {w} workers, until all run a task (medians of {reps} rounds): "
            f"ours {', '.join(pairs)}.")
    return (f"## Pool start-up (`pool-start`): {w} workers, {reps} rotated rounds\n\n"
            f"From just before the pool is created until every one of the {w} workers has "
            f"started a task (a barrier: each of {w} tasks, chunk size 1, waits until all "
            f"{w} have started; start times read from `time.monotonic()` inside the tasks). "
            f"Each row is one complete `with` block as a user writes it; the last column is "
            f"its untimed warm-up call, the first of its kind in this process (the first "
            f"`forkserver` user also starts multiprocessing's fork server).\n\n"
            + md_table(head, rows)), [note]


# ====================================================================== b. respawn
def _is_timeout(value: Any) -> bool:
    return isinstance(value, (TimeoutError, concurrent.futures.TimeoutError))


def _respawn_sample(call: Callable[[List[Any], float], List[Any]], limit: float,
                    pairs: int, hang: int) -> Callable[[], Dict[str, Any]]:
    def sample() -> Dict[str, Any]:
        folder = tempfile.mkdtemp(prefix="bench-respawn-")
        tasks: List[Any] = []
        for k in range(pairs):
            tasks.append((2 * k, os.path.join(folder, f"{k}"), hang))
            tasks.append((2 * k + 1, None, 0))
        try:
            began = perf_counter()
            result = call(tasks, limit)
            elapsed = perf_counter() - began
            latencies = []
            if len(result) != len(tasks):
                raise ResultError(f"{len(result)} results for {len(tasks)} tasks")
            for k in range(pairs):
                hung, after = result[2 * k], result[2 * k + 1]
                if not _is_timeout(hung):
                    raise ResultError(f"the hanging task {2 * k} gave {hung!r}, "
                                      f"not a timeout error")
                if not (isinstance(after, tuple) and after[0] == ~(2 * k + 1)):
                    raise ResultError(f"task {2 * k + 1} gave {after!r}")
                with open(os.path.join(folder, f"{k}")) as f:
                    hung_start = float(f.read())
                latencies.append(after[1] - (hung_start + limit))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return {"latency": latencies, "call": elapsed}
    return sample


def _ours_respawn(method: Optional[str]) -> Callable[[List[Any], float], List[Any]]:
    def call(tasks: List[Any], limit: float) -> List[Any]:
        from parallelbar_clone import progress_map
        return progress_map(hang_or_report, tasks, n_cpu=1, chunk_size=1,
                            process_timeout=limit, error_behavior="coerce", context=method)
    return call


def _pebble_respawn(tasks: List[Any], limit: float) -> List[Any]:
    from pebble import ProcessPool
    with ProcessPool(max_workers=1) as pool:
        futures = [pool.schedule(hang_or_report, args=(t,), timeout=limit) for t in tasks]
        out: List[Any] = []
        for future in futures:
            try:
                out.append(future.result())
            except Exception as exc:
                out.append(exc)
        return out


def respawn_contenders(limit: float, pairs: int, hang: int) -> List[Contender]:
    out = [Contender(_ours_label(m), _respawn_sample(_ours_respawn(m), limit, pairs, hang),
                     start=m, note="progress_map, error_behavior='coerce'")
           for m in OUR_METHODS]
    out.append(Contender("pebble ProcessPool.schedule(timeout=T)",
                         _respawn_sample(_pebble_respawn, limit, pairs, hang),
                         peer=True, needs=["pebble"],
                         start=multiprocessing.get_start_method(),
                         note="one future per task"))
    # Peers: append Contender(label, _respawn_sample(call, limit, pairs, hang), peer=True,
    # needs=[...]) where call(tasks, limit) runs `hang_or_report` over `tasks` on ONE
    # worker with a per-task limit and returns the results in order, a timeout error
    # in the slot of each task that timed out.
    return out


def respawn(args: argparse.Namespace) -> Tuple[str, List[str]]:
    limit, pairs, hang = 0.2, 3, 10
    contenders = _drop_peers(respawn_contenders(limit, pairs, hang), args)
    rotate(contenders, args.reps, args.call_timeout, "respawn")
    rows = []
    said = []
    for c in contenders:
        lat = [v for s in c.samples for v in s["latency"]]
        if lat and not c.error:
            said.append(f"{c.label.split(',')[-1].strip()} {fmt_ms(statistics.median(lat))} ms "
                        f"({spread(lat, fmt_ms)})")
        if c.error or not lat:
            rows.append([c.label, c.start, f"n/a ({c.error or 'no successful call'})", "", "",
                         c.note])
            continue
        rows.append([c.label, c.start, fmt_ms(statistics.median(lat)), spread(lat, fmt_ms),
                     str(len(lat)), c.note])
    head = ["pool", "start", "latency: median ms", "min–max ms", "timeouts measured", "notes"]
    return (f"## Respawn after a timeout (`respawn`): 1 worker, chunk size 1, "
            f"T = process_timeout = {limit:g} s, {args.reps} rotated rounds\n\n"
            f"Each call runs {pairs} pairs of tasks: the first hangs in C (libc `sleep({hang})`) "
            f"and writes its start time to a file, the second returns its own start time. "
            f"Latency = start of the second − (start of the first + T): detecting the "
            f"overdue task, killing the worker, starting a new one and handing it the next "
            f"task. Times from `time.monotonic()` inside the tasks; all pairs of all rounds "
            f"pooled.\n\n" + md_table(head, rows)), [
                f"Respawn after a timeout (1 worker, T = {limit:g} s): the next task started "
                f"this long after the deadline, median (min–max) of {pairs} × {args.reps} "
                f"timeouts: " + "; ".join(said) + "."]


# ====================================================================== c. waiting
def gaps_by_worker(records: Sequence[Tuple[int, float, float]]
                   ) -> Tuple[float, float, List[float], int]:
    """From ``(pid, start, end)`` per task: (total time between consecutive tasks
    of the same worker, total time inside tasks, every such gap, workers seen).

    A gap is the time a worker spent between finishing one task and starting its
    next: waiting for work plus the per-task overhead (sending the result,
    receiving the next task). The time before a worker's first task (start-up)
    and after its last (the tail) are not gaps."""
    by_pid: Dict[int, List[Tuple[float, float]]] = {}
    for pid, start, end in records:
        by_pid.setdefault(pid, []).append((start, end))
    gaps: List[float] = []
    busy = 0.0
    for spans in by_pid.values():
        spans.sort()
        busy += sum(end - start for start, end in spans)
        gaps += [b[0] - a[1] for a, b in zip(spans, spans[1:])]
    return sum(gaps), busy, gaps, len(by_pid)


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all its threads (not its children)."""
    try:
        import resource
    except ImportError:   # Windows
        t = os.times()
        return t.user + t.system
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _waiting_sample(call: Callable[[Callable[[Any], Any], List[Any], int], Any],
                    func: Callable[[Any], Any], tasks: List[Any], workers: int,
                    check: Callable[[Any], None], width: int
                    ) -> Callable[[], Dict[str, float]]:
    def sample() -> Dict[str, float]:
        cpu = _cpu_seconds()
        began = perf_counter()
        result = call(func, tasks, workers)
        wall = perf_counter() - began
        cpu = _cpu_seconds() - cpu
        result = list(result)
        check(result)
        records = [(r[width - 3], r[width - 2], r[width - 1]) for r in result]
        waited, busy, gaps, _ = gaps_by_worker(records)
        return {"wall": wall, "wait": waited / busy if busy else None,
                "cpu_per_k": cpu / len(tasks) * 1000,
                "max_gap": max(gaps) if gaps else 0.0,
                "long_gaps_per_k": sum(g > 1e-4 for g in gaps) / len(tasks) * 1000}
    return sample


def _pool_map(func: Callable[[Any], Any], tasks: List[Any], w: int) -> Any:
    with multiprocessing.Pool(w) as pool:
        return pool.map(func, tasks)


def _ours_map(func: Callable[[Any], Any], tasks: List[Any], w: int) -> Any:
    from parallelbar_clone import progress_map
    return progress_map(func, tasks, n_cpu=w)


def _ours_imap(func: Callable[[Any], Any], tasks: List[Any], w: int) -> Any:
    from parallelbar_clone import progress_imap
    return progress_imap(func, tasks, n_cpu=w)


def waiting_contenders(func: Callable[[Any], Any], tasks: List[Any], workers: int,
                       check: Callable[[Any], None], width: int) -> List[Contender]:
    out = [Contender("multiprocessing Pool.map", _waiting_sample(
               _pool_map, func, tasks, workers, check, width),
               start=multiprocessing.get_start_method(), note="default chunksize"),
           Contender("ours progress_map", _waiting_sample(
               _ours_map, func, tasks, workers, check, width), start=OUR_METHODS[0]),
           Contender("ours progress_imap", _waiting_sample(
               _ours_imap, func, tasks, workers, check, width), start=OUR_METHODS[0])]
    # Peers: append Contender(label, _waiting_sample(call, func, tasks, workers, check,
    # width), peer=True, needs=[...]) where call(func, tasks, workers) is one complete
    # call returning the results in task order.
    return out


def waiting_loads(n: int) -> List[Tuple[str, Callable[[Any], Any], List[Any],
                                        Callable[[Any], None], int, float, str]]:
    """The two loads of the waiting measure (also ``ab.py``'s): (name, func, tasks,
    result check, result width, seconds a task, what it is). A result ends with
    (pid, start, end)."""
    iterations, per_spin = bench_tasks.calibrate_spin(0.0003)
    loads = [
        ("steady 1 ms", busy_for, [(i, 0.001) for i in range(n)], [~i for i in range(n)],
         lambda got, want: got[0] == want, 4, 0.001,
         "busy until 1 ms has passed (`busy_for`): steady whatever the CPU does"),
        (f"CPU {per_spin * 1000:.3f} ms", spin_timed, [(i, iterations) for i in range(n)],
         [(~i, bench_tasks.spin_total(iterations)) for i in range(n)],
         lambda got, want: got[:2] == want, 5, per_spin,
         f"`spin({iterations:,})`: a fixed amount of work, {per_spin * 1000:.3f} ms serially"),
    ]
    return [(name, func, tasks, expect(tasks, expected, ordered=True, same=same), width,
             per_task, what)
            for name, func, tasks, expected, same, width, per_task, what in loads]


def waiting(args: argparse.Namespace) -> Tuple[str, List[str]]:
    w = args.workers
    n = 1_000 if args.quick else 3_000
    sections = []
    notes = []
    for name, func, tasks, check, width, per_task, what in waiting_loads(n):
        contenders = _drop_peers(waiting_contenders(func, tasks, w, check, width), args)
        rotate(contenders, args.reps, args.call_timeout, f"waiting {name}")
        base = contenders[0].median("wall")
        ideal = n * per_task / w
        rows = []
        for c in contenders:
            wall = c.median("wall")
            if wall is None:
                rows.append([c.label, f"n/a ({c.error or 'no successful call'})"] + [""] * 7)
                continue
            rows.append([c.label, fmt_s(wall), spread(c.values("wall")),
                         fmt_ratio(wall / base) if base else "n/a", f"{ideal / wall:.2f}",
                         fmt_pct(c.median("wait")) + f" ({spread(c.values('wait'), fmt_pct)})",
                         f"{c.median('long_gaps_per_k'):.1f}", fmt_ms(c.median("max_gap")),
                         fmt_ms(c.median("cpu_per_k"))])
        said = [f"{c.label} {fmt_pct(c.median('wait'))} of busy time, "
                f"{fmt_ms(c.median('cpu_per_k'))} ms parent CPU per 1 000 tasks"
                + (f", {fmt_ratio(c.median('wall') / base)} Pool.map's time" if base else "")
                for c in contenders if c.median("wall") is not None]
        notes.append(f"Waiting between tasks, {n:,} tasks {name}, {w} workers: "
                     + "; ".join(said) + ".")
        head = ["call", "median s", "min–max s", "× Pool.map", "efficiency",
                "waiting % of busy: median (min–max)", "gaps > 0.1 ms per 1 000 tasks",
                "longest gap ms", "parent CPU ms per 1 000 tasks"]
        sections.append(f"### {n:,} tasks, {name}: {what}\n\nIdeal (N × task time / "
                        f"workers) {fmt_s(ideal)} s; efficiency = ideal / median.\n\n"
                        + md_table(head, rows))
    return (f"## Waiting for work between tasks, and the parent's CPU (`waiting`), "
            f"{w} workers, "
            f"{args.reps} rotated rounds\n\n"
            "Each task reports (pid, start, end) from `time.monotonic()`. Per worker, a gap "
            "is the time from the end of one task to the start of its next: waiting for "
            "work plus per-task overhead (sending the result, taking the next task); "
            "start-up before the first task and the tail after the last are not counted. "
            "*Waiting % of busy* = sum of gaps / sum of task durations, over all workers. "
            "*Parent CPU* = user + system time of the calling process (all its threads, "
            "not the workers) from `getrusage(RUSAGE_SELF)` around the call, per 1 000 "
            "tasks. Targets: waiting under 1 % of busy time on steady 1 ms tasks; the CPU "
            "tasks at most 1.00× Pool.map.\n\n" + "\n\n".join(sections)), notes


# ====================================================================== d. stream rate
POOL_STREAM = "multiprocessing Pool.imap_unordered(chunksize=1000)"


class _Held:
    """A pool kept open across the rounds of one contender."""

    def __init__(self, opener: Callable[[], Any]) -> None:
        self.opener = opener
        self.pool: Any = None

    def get(self) -> Any:
        if self.pool is None:
            self.pool = self.opener()
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            pool.close()
            join = getattr(pool, "join", None)
            if join is not None:
                join()


def _stream_sample(consume: Callable[[StreamCheck], None], n: int
                   ) -> Callable[[], Dict[str, float]]:
    def sample() -> Dict[str, float]:
        check = StreamCheck(n, ordered=False, finite=True)
        began = perf_counter()
        consume(check)
        elapsed = perf_counter() - began
        check.verify()
        return {"time": elapsed, "rate": n / elapsed}
    return sample


def stream_rate_contenders(n: int, workers: int) -> Tuple[List[Contender], List[_Held]]:
    def ours(check: StreamCheck) -> None:
        from parallelbar_clone import ProgressPool
        with ProgressPool(n_cpu=workers) as pool:
            check.consume(pool.imap_unordered(invert, range(n)))

    def pool(check: StreamCheck) -> None:
        with multiprocessing.Pool(workers) as p:
            check.consume(p.imap_unordered(invert, range(n), chunksize=1000))

    def _open_ours() -> Any:
        from parallelbar_clone import ProgressPool
        return ProgressPool(n_cpu=workers)

    held_ours = _Held(_open_ours)
    held_pool = _Held(lambda: multiprocessing.Pool(workers))

    def ours_reused(check: StreamCheck) -> None:
        check.consume(held_ours.get().imap_unordered(invert, range(n)))

    def pool_reused(check: StreamCheck) -> None:
        check.consume(held_pool.get().imap_unordered(invert, range(n), chunksize=1000))

    out = [
        Contender(POOL_STREAM,
                  _stream_sample(pool, n), note="one call: pool start and shutdown included"),
        Contender("ours ProgressPool.imap_unordered", _stream_sample(ours, n),
                  note="one call: pool start and shutdown included"),
        Contender(POOL_STREAM + ", reused pool",
                  _stream_sample(pool_reused, n), note="pool opened once, warmed up"),
        Contender("ours ProgressPool.imap_unordered, reused pool",
                  _stream_sample(ours_reused, n), note="pool opened once, warmed up"),
    ]
    # Peers: append Contender(label, _stream_sample(consume, n), peer=True, needs=[...])
    # where consume(check) calls check.consume(<that library's unordered iterator of
    # invert over range(n)>).
    return out, [held_ours, held_pool]


def stream_rate(args: argparse.Namespace) -> Tuple[str, List[str]]:
    n = args.stream_rate_n
    w = args.workers
    contenders, held = stream_rate_contenders(n, w)
    contenders = _drop_peers(contenders, args)
    try:
        rotate(contenders, args.reps, args.call_timeout, "stream-rate")
    finally:
        for h in held:
            h.close()
    base = next(c.median("rate") for c in contenders if c.label == POOL_STREAM)
    base_reused = next(c.median("rate") for c in contenders
                       if c.label == POOL_STREAM + ", reused pool")
    rows = []
    for c in contenders:
        rate = c.median("rate")
        if rate is None:
            rows.append([c.label, f"n/a ({c.error or 'no successful call'})", "", "", "",
                         c.note])
            continue
        ref = base_reused if "reused" in c.label else base
        rows.append([c.label, fmt_rate(rate) + "/s", spread(c.values("rate"), fmt_rate),
                     fmt_ratio(rate / ref) if ref else "n/a", fmt_s(c.median("time")),
                     c.note])
    said = [f"{c.label.replace('multiprocessing ', '')} {fmt_rate(c.median('rate'))}/s"
            for c in contenders if c.median("rate") is not None]
    note = (f"Streaming rate, `imap_unordered` over `range({n:,})`, {w} workers (medians of "
            f"{args.reps} rounds): " + "; ".join(said) + ".")
    head = ["call", "items/s: median", "min–max /s", "× Pool (rate; higher is faster)",
            "median s", "notes"]
    return (f"## Streaming rate (`stream-rate`): `imap_unordered(invert, range({n:,}))`, "
            f"{w} workers, {args.reps} rotated rounds\n\n"
            "Every result checked as it arrives (each `~x` exactly once); the same "
            "consumer loop for every row. Ratios: rate over the Pool row of the same kind "
            "(one call, or reused pool).\n\n" + md_table(head, rows)), [note]
