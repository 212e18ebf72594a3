#!/usr/bin/env python3
"""Benchmark parallelbar_clone against its peers on the same workloads, in one run.

Every repetition runs each library once, in a rotated order (A B C, B C A, ...),
so slow drift of the machine (turbo, cache, other load) is shared by all of
them instead of landing on whoever ran last. stderr is sent to /dev/null during
every timed call, so drawing progress bars costs its CPU time but not the
terminal's speed. Results are checked after each call (outside the timed
region): every task's output differs from its input, the order is checked for
ordered calls, duplicates and missing results for unordered ones. A library that
raises, times out, returns a wrong result or is not installed is reported as
``n/a (reason)`` and the run goes on.

    python benchmarks/run.py                  # everything: 27 minutes on a busy 2-core VM
    python benchmarks/run.py --quick          # about 4 minutes
    python benchmarks/run.py --only trivial,skewed --reps 3 --markdown out.md

The output starts with the command, the commit and the machine, and ends with a
summary in the layout of the README's tables. See benchmarks/README.md for what
each workload measures.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import multiprocessing
import os
import statistics
import sys
import threading
import traceback
from time import perf_counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # so `python -m benchmarks.run` and workers can import bench_tasks
    sys.path.insert(0, HERE)

import bench_tasks  # noqa: E402
import checkpoint_overhead  # noqa: E402
import dask_bench  # noqa: E402
import libraries  # noqa: E402
import pool_measures  # noqa: E402
from bench_tasks import fibonacci, invert, spin, spin_total  # noqa: E402
from checks import ResultError, StreamCheck, expect  # noqa: E402
from harness import (PROBLEMS, CallTimeout, Contender, call_limit, describe,  # noqa: E402
                     failure_reason, log, quiet_stderr, rotate, settings)
from report import (command_line, fmt_ms, fmt_rate, fmt_ratio, fmt_s,  # noqa: E402
                    load_average, machine_lines, md_table, spread)

WORKLOADS = ("startup", "pool-start", "respawn", "trivial", "cpu", "waiting", "skewed",
             "stream", "stream-rate", "scaling", "checkpoint", "dask")

# Table order of the entries timed in workloads 1-3.
MAIN_KEYS = ("pool.map", "pool.imap", "ppe.map", "tqdm.process_map", "pb.progress_map",
             "pb.progress_imap", "mpire.map", "pebble.map", "joblib",
             "ours.map", "ours.imap", "ours.reused.imapu", "ours.map.timeout",
             "ours.map.memory")
STARTUP_KEYS = ("pool.map", "pool.map.reused", "ppe.map", "tqdm.process_map",
                "pb.progress_map", "pb.progress_imap", "mpire.map", "pebble.map", "joblib",
                "ours.map", "ours.imap", "ours.map.forkserver", "ours.reused.map",
                "ours.reused.imapu")
SCALING_KEYS = ("pool.map", "ours.map", "ours.imap")

# The README's speed table, filled in by the workloads as they run: row -> column -> cell.
SUMMARY_COLUMNS = (("pool.map", "Pool.map"), ("ours.map", "ours progress_map"),
                   ("ours.imap", "ours progress_imap"),
                   ("pb", "parallelbar 2.5 map / imap"), ("tqdm.process_map", "tqdm process_map"),
                   ("pebble.map", "pebble"), ("joblib", "joblib"), ("mpire.map", "mpire"))
SUMMARY: Dict[str, Dict[str, str]] = {}
SUMMARY_NOTES: List[str] = []


# ====================================================================== cases
class Case:
    """One library on one workload configuration; collects its timings."""

    def __init__(self, lib: libraries.Lib, func: Callable[[Any], Any], tasks: Sequence[Any],
                 workers: int, check: Callable[[Any], None], *, scale: float = 1.0,
                 note: str = "", tag: str = "") -> None:
        self.lib = lib
        self.func = func
        self.tasks = tasks
        self.workers = workers
        self.check = check
        self.scale = scale
        self.note = note
        self.tag = tag
        self.times: List[float] = []
        self.error: Optional[str] = lib.missing

    @property
    def label(self) -> str:
        return self.lib.label

    def median(self) -> Optional[float]:
        return statistics.median(self.times) if self.times and not self.error else None

    def fail(self, reason: str, section: str) -> None:
        self.error = reason
        PROBLEMS.append(f"[{section}] {self.label}{' ' + self.tag if self.tag else ''}: "
                        f"{reason}")
        log(f"    !! {self.label} {self.tag}: {reason}")


def one_call(case: Case, timeout: Optional[float], section: str) -> Optional[float]:
    """Time one call of ``case``; on failure mark it and return None."""
    result: Any = None
    try:
        gc.collect()
        with quiet_stderr():
            with call_limit(timeout):
                start = perf_counter()
                result = case.lib(case.func, case.tasks, case.workers)
                elapsed = perf_counter() - start
        case.check(result)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        if settings.verbose and not isinstance(exc, (CallTimeout, ResultError)):
            traceback.print_exc()
        case.fail(failure_reason(exc), section)
        return None
    finally:
        del result
    return elapsed


def run_cases(cases: List[Case], reps: int, timeout: Optional[float], section: str) -> None:
    """Run every case ``reps`` times, one of each per round, rotating the order."""
    opened: List[Case] = []
    try:
        for case in cases:
            if case.lib.reused and not case.error:
                warm = case.tasks[:max(1, min(len(case.tasks), 4 * case.workers))]
                try:
                    with quiet_stderr(), call_limit(timeout):
                        case.lib.open(case.workers,
                                      lambda c=case, w=warm: c.lib(c.func, w, c.workers))
                    opened.append(case)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:
                    case.fail(f"could not open the pool: {describe(exc)}", section)
        for rep in range(reps):
            shift = rep % len(cases)
            order = cases[shift:] + cases[:shift]
            log(f"  {section}: round {rep + 1}/{reps}")
            for case in order:
                if case.error:
                    continue
                elapsed = one_call(case, timeout, section)
                if elapsed is not None:
                    case.times.append(elapsed * case.scale)
    finally:
        for case in opened:
            try:
                with quiet_stderr(), call_limit(timeout):
                    case.lib.close()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                PROBLEMS.append(f"[{section}] {case.label}: closing the reused pool failed: "
                                f"{describe(exc)}")


# ====================================================================== output
def time_rows(cases: List[Case], baseline: Optional[float], *, ideal: Optional[float] = None,
              n_tasks: Optional[int] = None, ms: bool = False) -> List[List[str]]:
    fmt = fmt_ms if ms else fmt_s
    rows = []
    for case in cases:
        med = case.median()
        bar = "yes" if case.lib.bars else "no"
        who = case.label
        if med is None:
            reason = case.error or "no successful call"
            row = [who, bar, case.lib.start_method, f"n/a ({reason})", "", ""]
            if ideal is not None:
                row.append("")
            if n_tasks is not None:
                row.append("")
            row.append(case.note or case.lib.note)
            rows.append(row)
            continue
        row = [who, bar, case.lib.start_method, fmt(med), spread(case.times, fmt),
               fmt_ratio(med / baseline) if baseline else "n/a"]
        if ideal is not None:
            row.append(fmt_ratio(med / ideal))
        if n_tasks is not None:
            row.append(fmt_rate(n_tasks / med))
        notes = "; ".join(x for x in (case.lib.note, case.note) if x)
        row.append(notes)
        rows.append(row)
    return rows


def baseline_of(cases: List[Case], key: str = "pool.map", tag: str = "") -> Optional[float]:
    for case in cases:
        if case.lib.key == key and case.tag == tag:
            return case.median()
    return None


# ====================================================================== workloads
def pick(libs: Dict[str, libraries.Lib], keys: Sequence[str], skip_peers: bool
         ) -> List[libraries.Lib]:
    return [libs[k] for k in keys if not (skip_peers and libs[k].peer)]


def summary_row(row: str, cases: List[Case], cell: Callable[[Case], str]) -> None:
    """Fill one row of the README-layout summary from ``cases``."""
    def find(key: str) -> Optional[Case]:
        found = [c for c in cases if c.lib.key == key]
        return found[0] if found else None

    out: Dict[str, str] = {}
    for key, _ in SUMMARY_COLUMNS:
        keys = ("pb.progress_map", "pb.progress_imap") if key == "pb" else (key,)
        cells = []
        for k in keys:
            case = find(k)
            cells.append("" if case is None else "n/a" if case.median() is None else cell(case))
        out[key] = " / ".join(cells) if any(cells) else ""
    SUMMARY[row] = out


def wl_startup(args: argparse.Namespace, libs: Dict[str, libraries.Lib],
               cold: List[Tuple[str, str, Optional[float], str]]) -> str:
    tasks = list(range(10))
    check = expect(tasks, [invert(x) for x in tasks], ordered=True)
    check_u = expect(tasks, [invert(x) for x in tasks], ordered=False)
    cases = [Case(lib, invert, tasks, args.workers, check if lib.ordered else check_u)
             for lib in pick(libs, STARTUP_KEYS, args.skip_peers)]
    reps = max(6, 2 * args.reps) if not args.quick else max(4, args.reps)
    run_cases(cases, reps, args.call_timeout, "startup")
    base = baseline_of(cases)
    rows = time_rows(cases, base, ms=True)
    for label, method, value, note in cold:
        rows.append([label, "yes" if "ours" in label else "no", method, fmt_ms(value), "",
                     fmt_ratio(value / base) if value and base else "n/a", note])
    summary_row("one call on 10 tasks (start-up)", cases,
                lambda c: f"{fmt_ms(c.median())} ms")
    reused = {c.lib.key: c.median() for c in cases
              if c.lib.key in ("ours.reused.map", "pool.map.reused")}
    if reused.get("ours.reused.map") and reused.get("pool.map.reused"):
        SUMMARY_NOTES.append(
            f"A reused pool answers a 10-task call in {fmt_ms(reused['ours.reused.map'])} ms "
            f"(ours `ProgressPool.map`) against {fmt_ms(reused['pool.map.reused'])} ms "
            f"(`Pool.map`); the first call in the process: "
            + ", ".join(f"{label.split(',')[0]} {fmt_ms(value)} ms"
                        for label, _, value, _ in cold) + " (one sample each).")
    head = ["library / call", "bar", "start", "median ms", "min–max ms", "× Pool.map", "notes"]
    return (f"## Start-up (`startup`): one call on 10 trivial tasks, {args.workers} workers, "
            f"{reps} rounds\n\n" + md_table(head, rows))


def wl_trivial(args: argparse.Namespace, libs: Dict[str, libraries.Lib]) -> str:
    n = 50_000 if args.quick else 200_000
    small = 5_000 if args.quick else 10_000  # published progress_imap's chunk_size=1: ~1 ms a task
    tasks = list(range(n))
    expected = [invert(x) for x in tasks]
    cases = []
    for lib in pick(libs, MAIN_KEYS, args.skip_peers):
        if lib.key == "pb.progress_imap":
            cases.append(Case(lib, invert, tasks[:small], args.workers,
                              expect(tasks[:small], expected[:small], True), tag="small",
                              note=f"measured on {small:,} tasks only"))
        else:
            cases.append(Case(lib, invert, tasks, args.workers,
                              expect(tasks, expected, lib.ordered)))
        if lib.key == "pool.map":   # the same baseline on the small N, for a measured ratio
            base_small = Case(lib, invert, tasks[:small], args.workers,
                              expect(tasks[:small], expected[:small], True), tag="small",
                              note=f"on {small:,} tasks")
    if "pb.progress_imap" in [c.lib.key for c in cases]:
        cases.append(base_small)
    run_cases(cases, args.reps, args.call_timeout, "trivial")
    base = baseline_of(cases)
    main = [c for c in cases if c.tag != "small"]
    rows = time_rows(main, base, n_tasks=n)
    head = ["library / call", "bar", "start", "median s", "min–max s", "× Pool.map",
            "tasks/s", "notes"]
    text = (f"## Trivial tasks (`trivial`): {n:,} × `invert` (`~x`), {args.workers} workers\n\n"
            + md_table(head, rows))
    small_cases = [c for c in cases if c.tag == "small"]
    small_base = baseline_of(cases, tag="small")
    if small_cases:
        text += (f"\n\nPublished `progress_imap` sends one task at a time (chunk_size=1), so it "
                 f"runs on the first {small:,} tasks only, in the same rounds, against "
                 f"`Pool.map` on those {small:,} tasks (measured, not scaled):\n\n"
                 + md_table(head, time_rows(small_cases, small_base, n_tasks=small)))

    def cell(case: Case) -> str:
        if case.tag == "small":
            return (f"{fmt_ratio(case.median() / small_base) if small_base else 'n/a'} "
                    f"(on {small:,} tasks, {fmt_rate(small / case.median())} tasks/s)")
        return fmt_s(case.median()) + " s" if case.lib.key == "pool.map" \
            else fmt_ratio(case.median() / base) if base else "n/a"
    summary_row(f"{n:,} trivial tasks", cases, cell)
    extra = {c.lib.key: c.median() for c in cases
             if c.lib.key in ("ours.map.timeout", "ours.map.memory")}
    if base and all(extra.get(k) for k in ("ours.map.timeout", "ours.map.memory")):
        SUMMARY["same, `process_timeout=60` / `memory_limit='1GB'`"] = {
            "ours.map": f"{fmt_ratio(extra['ours.map.timeout'] / base)} / "
                        f"{fmt_ratio(extra['ours.map.memory'] / base)}"}
    return text


def wl_cpu(args: argparse.Namespace, libs: Dict[str, libraries.Lib]) -> str:
    n = 1_000 if args.quick else 3_000
    iterations, per_task = bench_tasks.calibrate_spin(0.001)
    tasks = [iterations] * n
    expected = [spin_total(iterations)] * n
    ideal = n * per_task / args.workers
    cases = [Case(lib, spin, tasks, args.workers, expect(tasks, expected, lib.ordered))
             for lib in pick(libs, MAIN_KEYS, args.skip_peers)]
    run_cases(cases, args.reps, args.call_timeout, "cpu")
    head = ["library / call", "bar", "start", "median s", "min–max s", "× Pool.map",
            "× ideal", "notes"]
    base = baseline_of(cases)
    rows = time_rows(cases, base, ideal=ideal)
    summary_row(f"{n:,} tasks of {per_task * 1000:.2f} ms", cases,
                lambda c: fmt_s(c.median()) + " s" if c.lib.key == "pool.map"
                else fmt_ratio(c.median() / base) if base else "n/a")
    return (f"## CPU-bound tasks (`cpu`): {n:,} × busy loop of {per_task * 1000:.3f} ms "
            f"(measured serially), {args.workers} workers\n\n"
            f"Ideal (N × task time / workers): {fmt_s(ideal)} s.\n\n" + md_table(head, rows))


def wl_skewed(args: argparse.Namespace, libs: Dict[str, libraries.Lib]) -> str:
    k = 25 if args.quick else 80
    tasks = [30] + [size for size in range(20, 28) for _ in range(k)]
    log(f"  skewed: timing {len(tasks)} tasks serially once")
    durations = []
    expected = []
    for t in tasks:
        start = perf_counter()
        expected.append(fibonacci(t))
        durations.append(perf_counter() - start)
    serial = sum(durations)
    ideal = max(max(durations), serial / args.workers)
    cases = [Case(lib, fibonacci, tasks, args.workers, expect(tasks, expected, lib.ordered))
             for lib in pick(libs, MAIN_KEYS, args.skip_peers)]
    run_cases(cases, args.reps, args.call_timeout, "skewed")
    head = ["library / call", "bar", "start", "median s", "min–max s", "× Pool.map",
            "× ideal", "notes"]
    rows = time_rows(cases, baseline_of(cases), ideal=ideal)
    summary_row(f"skewed (fib(30), then {len(tasks) - 1} rising), × ideal", cases,
                lambda c: fmt_ratio(c.median() / ideal))
    return (f"## Skewed tasks (`skewed`): fibonacci(30), then {k} × each of fibonacci(20)…(27) in "
            f"ascending order ({len(tasks)} tasks, the heaviest last), {args.workers} workers\n\n"
            f"Each task timed serially once: sum {fmt_s(serial)} s, longest "
            f"{fmt_s(max(durations))} s (fibonacci(30)); ideal = max(longest, sum / workers) "
            f"= {fmt_s(ideal)} s.\n\n" + md_table(head, rows))


# ---------------------------------------------------------------- streaming
def _rss_reader() -> Callable[[], int]:
    try:
        import psutil
        proc = psutil.Process()
        return lambda: proc.memory_info().rss
    except Exception:
        page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

        def read() -> int:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page
        return read


class RssSampler(threading.Thread):
    """Samples this process's RSS every ``interval`` seconds; keeps the peak."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.read = _rss_reader()
        self.interval = interval
        self.baseline = self.read()
        self.peak = self.baseline
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            rss = self.read()
            self.samples += 1
            if rss > self.peak:
                self.peak = rss

    def finish(self) -> Tuple[int, int]:
        """(peak growth, growth now) in bytes."""
        self._stop_event.set()
        self.join()
        now = self.read()
        self.peak = max(self.peak, now)
        return self.peak - self.baseline, now - self.baseline


def stream_ours(check: StreamCheck, workers: int, ordered: bool) -> None:
    from parallelbar_clone import ProgressPool
    with ProgressPool(n_cpu=workers) as pool:
        method = pool.imap if ordered else pool.imap_unordered
        it = method(invert, itertools.count())
        try:
            check.consume(it)
        finally:
            it.close()


def stream_pool(check: StreamCheck, workers: int) -> None:
    with multiprocessing.Pool(workers) as pool:
        check.consume(pool.imap_unordered(invert, itertools.count(), chunksize=1000))


def _stream_sample(n: int, ordered: bool, run: Callable[[StreamCheck], None]
                   ) -> Callable[[], Dict[str, float]]:
    def sample() -> Dict[str, float]:
        check = StreamCheck(n, ordered=ordered, finite=False)   # before the RSS baseline
        gc.collect()
        sampler = RssSampler()
        sampler.start()
        try:
            start = perf_counter()
            run(check)
            elapsed = perf_counter() - start
        finally:
            peak, end = sampler.finish()
        check.verify()
        return {"time": elapsed, "peak": peak, "end": end}
    return sample


def wl_stream(args: argparse.Namespace, libs: Dict[str, libraries.Lib]) -> str:
    n, w = args.stream_n, args.workers
    note = "input: endless itertools.count(); stop after N results"
    contenders = [
        Contender("ours ProgressPool.imap_unordered",
                  _stream_sample(n, False, lambda c: stream_ours(c, w, False)), note=note),
        Contender("ours ProgressPool.imap (ordered)",
                  _stream_sample(n, True, lambda c: stream_ours(c, w, True)), note=note),
        Contender("multiprocessing Pool.imap_unordered",
                  _stream_sample(n, False, lambda c: stream_pool(c, w)),
                  note=note + "; chunksize=1000"),
    ]
    reps = max(1, min(args.reps, 3))
    rotate(contenders, reps, args.call_timeout, "stream", warm_up=False)
    rows = []
    mb = 2 ** 20
    for c in contenders:
        med = c.median("time")
        if med is None:
            rows.append([c.label, f"n/a ({c.error or 'no successful call'})", "", "", "", "",
                         c.note])
            continue
        rows.append([c.label, fmt_s(med), spread(c.values("time")), fmt_rate(n / med) + "/s",
                     f"{c.median('peak') / mb:.1f} ({max(c.values('peak')) / mb:.1f})",
                     f"{c.median('end') / mb:.1f}", c.note])
    ours, pool = contenders[0], contenders[2]
    if ours.median("time") and pool.median("time"):
        SUMMARY_NOTES.append(
            f"Streaming {n:,} items through `ProgressPool.imap_unordered` from an endless "
            f"generator ({w} workers, {reps} rounds): {fmt_rate(n / ours.median('time'))} "
            f"items/s (`Pool.imap_unordered(chunksize=1000)`: "
            f"{fmt_rate(n / pool.median('time'))}/s); the parent's RSS grew by "
            f"{max(ours.values('peak')) / mb:.1f} MB at most (median of the peaks "
            f"{ours.median('peak') / mb:.1f} MB).")
    head = ["library / call", "median s", "min–max s", "items/s",
            "peak RSS growth MB: median (max)", "RSS growth at end MB", "notes"]
    return (f"## Streaming (`stream`): {n:,} trivial items through one pool, {w} workers, "
            f"{reps} rotated rounds\n\nParent RSS sampled every 20 ms during each call, growth "
            f"over the RSS just before it. Every result is checked as it arrives (ordered: "
            f"result k is `~k`; unordered: no result twice, each the result of a task that "
            f"was sent); the check's {n:,}-byte table is allocated before the baseline. "
            f"Time includes pool start and shutdown.\n\n" + md_table(head, rows))


# ---------------------------------------------------------------- scaling
def wl_scaling(args: argparse.Namespace, libs: Dict[str, libraries.Lib]) -> str:
    cpus = os.cpu_count() or 1
    counts = [w for w in (1, 2, 4, 8, 16) if w <= cpus]
    target = 0.3 if args.quick else 1.0   # ideal seconds per call
    sizes = []
    for seconds, name in ((0.001, "1 ms"), (0.010, "10 ms")):
        iterations, per_task = bench_tasks.calibrate_spin(seconds)
        sizes.append((name, iterations, per_task))
    cases: List[Case] = []
    ideals: Dict[Tuple[str, int], Tuple[int, float]] = {}
    for name, iterations, per_task in sizes:
        for w in counts:
            n = max(w, int(round(target * w / per_task)))
            ideals[(name, w)] = (n, n * per_task / w)
            tasks = [iterations] * n
            expected = [spin_total(iterations)] * n
            for lib in pick(libs, SCALING_KEYS, False):
                cases.append(Case(lib, spin, tasks, w, expect(tasks, expected, lib.ordered),
                                  tag=f"{name} w={w}"))
    run_cases(cases, args.reps, args.call_timeout, "scaling")
    head = ["task", "library / call"] + [f"w={w}: efficiency (median s; min–max s)"
                                         for w in counts]
    rows = []
    for name, _, per_task in sizes:
        for lib in pick(libs, SCALING_KEYS, False):
            row = [f"{name} ({per_task * 1000:.2f} ms)", lib.label]
            for w in counts:
                case = next(c for c in cases if c.lib is lib and c.tag == f"{name} w={w}")
                med = case.median()
                if med is None:
                    row.append(f"n/a ({case.error or 'no successful call'})")
                else:
                    row.append(f"{ideals[(name, w)][1] / med:.2f} ({fmt_s(med)}; "
                               f"{spread(case.times)})")
            rows.append(row)
    per_size = [(name, ", ".join(f"w={w}: {ideals[(name, w)][0]:,} tasks" for w in counts))
                for name, _, _ in sizes]
    sizes_text = "; ".join(f"{name}: {counts_text}" for name, counts_text in per_size)
    capped = "" if cpus >= 16 else f" (capped at os.cpu_count() = {cpus})"
    return (f"## Scaling (`scaling`): efficiency = ideal / actual, ideal = N × task time / workers"
            f"{capped}\n\nN grows with the workers so the ideal is {target:g} s per call "
            f"({sizes_text}).\n\n" + md_table(head, rows))


# ---------------------------------------------------------------- engine measures
def engine_measure(measure: Callable[[argparse.Namespace], Tuple[str, List[str]]],
                   args: argparse.Namespace) -> str:
    """One of pool_measures' sections; its one-line results go to the summary."""
    text, notes = measure(args)
    SUMMARY_NOTES.extend(notes)
    return text


def wl_checkpoint(args: argparse.Namespace, libs: Dict[str, libraries.Lib]) -> str:
    text, note = checkpoint_overhead.measure(args.checkpoint_n, args.reps, args.workers,
                                             args.call_timeout)
    if note:
        SUMMARY_NOTES.append(note)
    return text


# ====================================================================== main
def cold_calls(args: argparse.Namespace, libs: Dict[str, libraries.Lib]
               ) -> List[Tuple[str, str, Optional[float], str]]:
    """The very first call in this process."""
    out = []
    tasks = list(range(10))
    for key, label in (("ours.map", "ours progress_map, first call in the process"),
                       ("pool.map", "multiprocessing Pool.map, first call in the process")):
        lib = libs[key]
        case = Case(lib, invert, tasks, args.workers,
                    expect(tasks, [invert(x) for x in tasks], True))
        elapsed = one_call(case, args.call_timeout, "startup")
        note = "one sample; starts the forkserver" if lib.start_method == "forkserver" \
            else "one sample"
        out.append((label, lib.start_method, elapsed, note))
    return out


def summary_text() -> str:
    """The README's speed table, from this run's numbers."""
    if not SUMMARY and not SUMMARY_NOTES:
        return ""
    head = ["workload"] + [label for _, label in SUMMARY_COLUMNS]
    rows = [[row] + [cells.get(key, "") for key, _ in SUMMARY_COLUMNS]
            for row, cells in SUMMARY.items()]
    parts = ["## Summary in the README's layout\n\nMedians of this run, each taken from "
             "the detailed table of its workload."]
    if rows:
        parts[0] += (" In the table, ratios are × `Pool.map` (lower is faster) except in "
                     "the skewed row, which is × ideal.")
        parts.append(md_table(head, rows, numbers=True))
    parts += [f"- {note}" for note in SUMMARY_NOTES]
    return "\n\n".join(parts)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions and smaller N (the whole run in about 4 minutes)")
    p.add_argument("--reps", type=int, default=None,
                   help="repetitions per library and workload (default 5, --quick 2)")
    p.add_argument("--only", default="",
                   help="comma-separated workloads to run: " + ",".join(WORKLOADS))
    p.add_argument("--skip-peers", action="store_true",
                   help="only ours and the multiprocessing baselines")
    p.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    p.add_argument("--workers", type=int, default=2,
                   help="workers for every workload but scaling and respawn (default 2)")
    p.add_argument("--stream-n", type=int, default=None,
                   help="items for the streaming workload (default 2,000,000; --quick 500,000)")
    p.add_argument("--stream-10m", action="store_true",
                   help="stream 10,000,000 items (same as --stream-n 10000000)")
    p.add_argument("--stream-rate-n", type=int, default=500_000,
                   help="items of range(N) for the stream-rate workload (default 500,000)")
    p.add_argument("--checkpoint-n", type=int, default=None,
                   help="trivial tasks for the checkpoint workload (default 1,000,000; "
                        "--quick 200,000)")
    p.add_argument("--call-timeout", type=float, default=None,
                   help="seconds one call may take before it counts as hung (default 120, "
                        "--quick 60)")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    if args.reps < 1:
        p.error("--reps must be at least 1")
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.stream_10m:
        args.stream_n = 10_000_000
    if args.stream_n is None:
        args.stream_n = 500_000 if args.quick else 2_000_000
    if args.checkpoint_n is None:
        args.checkpoint_n = 200_000 if args.quick else 1_000_000
    if min(args.stream_n, args.stream_rate_n, args.checkpoint_n) < 1:
        p.error("item counts must be at least 1")
    if args.call_timeout is None:
        args.call_timeout = 60.0 if args.quick else 120.0
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in only if x not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    args.workloads = [w for w in WORKLOADS if not only or w in only]
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    settings.verbose = args.verbose
    began = perf_counter()
    libs = libraries.all_libs()
    command = command_line([sys.argv[0]] + list(sys.argv[1:] if argv is None else argv))
    described = (f"workers={args.workers}, reps={args.reps}"
                 f"{' (--quick)' if args.quick else ''}, per-call limit "
                 f"{args.call_timeout:g} s, workloads: {', '.join(args.workloads)}")
    header = ("# parallelbar_clone benchmarks\n\n" + "\n".join(machine_lines(described, command))
              + "\n- Times are medians over the repetitions (wall clock, pool start and "
              "shutdown included unless the row says 'reused'); every round runs each "
              "contender once, in a rotated order; stderr goes to /dev/null during each "
              "timed call. Each section ends with the load average around it: this "
              f"benchmark alone accounts for about workers + 1 = {args.workers + 1}; more "
              "means other processes competed for the CPUs.")
    print(header + "\n", flush=True)
    sections = [header]
    missing = sorted({lib.missing for lib in libs.values() if lib.missing})
    if missing and not args.skip_peers:
        note = "Not installed (rows show n/a): " + "; ".join(missing)
        print(note + "\n", flush=True)
        sections.append(note)
    cold: List[Tuple[str, str, Optional[float], str]] = []
    if "startup" in args.workloads:
        log("warming up: first calls in this process")
        cold = cold_calls(args, libs)
    runners = {"startup": lambda: wl_startup(args, libs, cold),
               "pool-start": lambda: engine_measure(pool_measures.pool_start, args),
               "respawn": lambda: engine_measure(pool_measures.respawn, args),
               "trivial": lambda: wl_trivial(args, libs),
               "cpu": lambda: wl_cpu(args, libs),
               "waiting": lambda: engine_measure(pool_measures.waiting, args),
               "skewed": lambda: wl_skewed(args, libs),
               "stream": lambda: wl_stream(args, libs),
               "stream-rate": lambda: engine_measure(pool_measures.stream_rate, args),
               "scaling": lambda: wl_scaling(args, libs),
               "checkpoint": lambda: wl_checkpoint(args, libs),
               "dask": lambda: engine_measure(dask_bench.measure, args)}
    try:
        for name in args.workloads:
            log(f"== {name}")
            t0 = perf_counter()
            load_before = load_average()
            try:
                text = runners[name]()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a bug in a workload must not lose the others
                traceback.print_exc()
                text = f"## {name}\n\nn/a (the workload itself failed: {describe(exc)})"
                PROBLEMS.append(f"[{name}] workload failed: {describe(exc)}")
            log(f"   {name} took {perf_counter() - t0:.0f} s")
            load_after = load_average()
            if load_before is not None and load_after is not None:
                text += (f"\n\n_Took {perf_counter() - t0:.0f} s. 1-minute load average "
                         f"{load_before:.2f} before, {load_after:.2f} after._")
            print(text + "\n", flush=True)
            sections.append(text)
    except KeyboardInterrupt:
        log("interrupted: writing what was measured so far")
        sections.append("_Interrupted._")
    summary = summary_text()
    if summary:
        print(summary + "\n", flush=True)
        sections.insert(1, summary)   # in the file: right after the header
    load = load_average()
    footer = [f"Total benchmark time: {perf_counter() - began:.0f} s; 1-minute load average "
              f"at the end: {'unknown' if load is None else f'{load:.2f}'}."]
    if PROBLEMS:
        footer.append("\n## Problems seen\n\n" + "\n".join(f"- {p}" for p in PROBLEMS))
    text = "\n".join(footer)
    print(text, flush=True)
    sections.append(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write("\n\n".join(sections) + "\n")
        log(f"tables written to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
