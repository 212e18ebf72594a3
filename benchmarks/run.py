#!/usr/bin/env python3
"""Benchmark parallelbar_clone against its peers on the same workloads, in one run.

Every repetition runs each library once, in a rotated order (A B C, B C A, ...),
so slow drift of the machine (turbo, cache, other load) is shared by all of
them instead of landing on whoever ran last. stderr is sent to /dev/null during
every timed call, so drawing progress bars costs its CPU time but not the
terminal's speed. Results are checked against the expected values after each
call (outside the timed region); a library that raises, times out, returns a
wrong result or is not installed is reported as ``n/a (reason)`` and the run
goes on.

    python benchmarks/run.py                  # everything, about 5-10 minutes on 2 cores
    python benchmarks/run.py --quick          # under about 2 minutes
    python benchmarks/run.py --only trivial,skewed --reps 3 --markdown out.md

See benchmarks/README.md for what each workload measures.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import itertools
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import threading
import traceback
from time import perf_counter
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # so `python -m benchmarks.run` and workers can import bench_tasks
    sys.path.insert(0, HERE)

import bench_tasks  # noqa: E402
import libraries  # noqa: E402
from bench_tasks import fibonacci, spin, square  # noqa: E402

WORKLOADS = ("startup", "trivial", "cpu", "skewed", "stream", "scaling")

# Table order of the entries timed in workloads 1-3.
MAIN_KEYS = ("pool.map", "pool.imap", "ppe.map", "tqdm.process_map", "pb.progress_map",
             "pb.progress_imap", "mpire.map", "pebble.map", "joblib",
             "ours.map", "ours.imap", "ours.reused.imapu", "ours.map.timeout",
             "ours.map.memory")
STARTUP_KEYS = ("pool.map", "pool.map.reused", "ppe.map", "tqdm.process_map",
                "pb.progress_map", "pb.progress_imap", "mpire.map", "pebble.map", "joblib",
                "ours.map", "ours.imap", "ours.map.fork", "ours.reused.map",
                "ours.reused.imapu")
SCALING_KEYS = ("pool.map", "ours.map", "ours.imap")

PROBLEMS: List[str] = []
VERBOSE = False


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ====================================================================== guards
class CallTimeout(Exception):
    pass


@contextlib.contextmanager
def call_limit(seconds: Optional[float]) -> Iterator[None]:
    """Raise CallTimeout in the main thread if the block runs past ``seconds``."""
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CallTimeout(f"no result after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """fd 2 -> /dev/null for the block (bars are drawn, but not to a terminal)."""
    try:
        sys.stderr.flush()
    except Exception:
        pass
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except Exception:
            pass
        os.dup2(saved, 2)
        os.close(saved)


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ").replace("|", "/")
    return text if len(text) <= 140 else text[:137] + "..."


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


def checker(expected: Sequence[Any], ordered: bool) -> Callable[[Any], None]:
    expected = list(expected)
    sorted_expected: List[Any] = []

    def check(result: Any) -> None:
        got = list(result)
        if len(got) != len(expected):
            raise AssertionError(f"{len(got)} results for {len(expected)} tasks")
        if ordered:
            if got != expected:
                i = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
                raise AssertionError(f"result[{i}] is {got[i]!r}, expected {expected[i]!r}")
        else:
            if not sorted_expected:
                sorted_expected.extend(sorted(expected))
            if sorted(got) != sorted_expected:
                raise AssertionError("results are not the expected multiset")
    return check


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
    except KeyboardInterrupt:
        raise
    except CallTimeout as exc:
        case.fail(f"hung: {exc}", section)
        return None
    except BaseException as exc:
        if VERBOSE:
            traceback.print_exc()
        case.fail(describe(exc), section)
        return None
    try:
        case.check(result)
    except AssertionError as exc:
        case.fail(f"wrong result: {exc}", section)
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
def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    numeric = ("median", "min–max", "×", "/s", "MB", "efficiency")
    align = ["---"] + ["--:" if any(m in h for m in numeric) else "---" for h in headers[1:]]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_s(x: Optional[float]) -> str:
    if x is None:
        return "n/a"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}" if x >= 0.1 else f"{x:.4f}"


def fmt_ms(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x * 1000:.1f}"


def fmt_ratio(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}×"


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


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
        spread = f"{fmt(min(case.times))}–{fmt(max(case.times))}"
        row = [who, bar, case.lib.start_method, fmt(med), spread,
               fmt_ratio(med / baseline) if baseline else "n/a"]
        if ideal is not None:
            row.append(fmt_ratio(med / ideal))
        if n_tasks is not None:
            row.append(fmt_rate(n_tasks / med))
        notes = "; ".join(x for x in (case.lib.note, case.note) if x)
        row.append(notes)
        rows.append(row)
    return rows


def baseline_of(cases: List[Case], key: str = "pool.map") -> Optional[float]:
    for case in cases:
        if case.lib.key == key:
            return case.median()
    return None


# ====================================================================== machine
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def source_state() -> str:
    """The commit of parallelbar_clone's source, and whether it has local changes."""
    import subprocess
    root = os.path.dirname(HERE)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "parallelbar_clone"],
                               cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except Exception:
        return "unknown (no git)"
    if not commit:
        return "unknown (not a git checkout)"
    return commit + (" + uncommitted changes in parallelbar_clone/" if dirty else "")


def machine_lines(args: argparse.Namespace) -> List[str]:
    try:
        import psutil
        mem = f"{psutil.virtual_memory().total / 2 ** 30:.1f} GiB RAM"
    except Exception:
        mem = "RAM unknown"
    try:
        from parallelbar_clone.options import default_context
        ours = default_context()
    except Exception:
        ours = "?"
    vers = libraries.versions()
    return [
        f"- Machine: {cpu_model()}; {os.cpu_count()} logical CPUs ({usable_cpus()} usable); {mem}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.system()} {platform.release()}",
        f"- Start methods: multiprocessing default `{multiprocessing.get_start_method()}`, "
        f"parallelbar_clone default `{ours}`",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        f"- parallelbar_clone source: {source_state()}",
        f"- Settings: workers={args.workers}, reps={args.reps}"
        f"{' (--quick)' if args.quick else ''}, per-call limit {args.call_timeout:g} s, "
        f"run at {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "- Times are medians over the repetitions (wall clock, pool start and shutdown "
        "included unless the row says 'reused'); every round runs each library once, "
        "in a rotated order; stderr goes to /dev/null during each timed call.",
    ]


# ====================================================================== workloads
def pick(libs: Dict[str, libraries.Lib], keys: Sequence[str], skip_peers: bool
         ) -> List[libraries.Lib]:
    return [libs[k] for k in keys if not (skip_peers and libs[k].peer)]


def wl_startup(args: argparse.Namespace, libs: Dict[str, libraries.Lib],
               cold: List[Tuple[str, str, Optional[float], str]]) -> str:
    tasks = list(range(10))
    check = checker([square(x) for x in tasks], ordered=True)
    check_u = checker([square(x) for x in tasks], ordered=False)
    cases = [Case(lib, square, tasks, args.workers, check if lib.ordered else check_u)
             for lib in pick(libs, STARTUP_KEYS, args.skip_peers)]
    reps = max(6, 2 * args.reps) if not args.quick else max(4, args.reps)
    run_cases(cases, reps, args.call_timeout, "startup")
    base = baseline_of(cases)
    rows = time_rows(cases, base, ms=True)
    for label, method, value, note in cold:
        rows.append([label, "yes" if "ours" in label else "no", method, fmt_ms(value), "",
                     fmt_ratio(value / base) if value and base else "n/a", note])
    head = ["library / call", "bar", "start", "median ms", "min–max ms", "× Pool.map", "notes"]
    return (f"## Start-up: one call on 10 trivial tasks, {args.workers} workers, "
            f"{reps} rounds\n\n" + md_table(head, rows))


def wl_trivial(args: argparse.Namespace, libs: Dict[str, libraries.Lib]) -> str:
    n = 50_000 if args.quick else 200_000
    small = 5_000 if args.quick else 10_000  # its chunk_size=1 costs ~1 ms a task
    tasks = list(range(n))
    expected = [square(x) for x in tasks]
    cases = []
    for lib in pick(libs, MAIN_KEYS, args.skip_peers):
        if lib.key == "pb.progress_imap":
            cases.append(Case(lib, square, tasks[:small], args.workers,
                              checker(expected[:small], True), scale=n / small,
                              note=f"measured on {small:,} tasks, time ×{n / small:g}"))
        else:
            cases.append(Case(lib, square, tasks, args.workers, checker(expected, lib.ordered)))
    run_cases(cases, args.reps, args.call_timeout, "trivial")
    head = ["library / call", "bar", "start", "median s", "min–max s", "× Pool.map",
            "tasks/s", "notes"]
    rows = time_rows(cases, baseline_of(cases), n_tasks=n)
    return (f"## 1. Trivial tasks: {n:,} × `x*x`, {args.workers} workers\n\n"
            + md_table(head, rows))


def wl_cpu(args: argparse.Namespace, libs: Dict[str, libraries.Lib]) -> str:
    n = 1_000 if args.quick else 3_000
    iterations, per_task = bench_tasks.calibrate_spin(0.001)
    tasks = [iterations] * n
    ideal = n * per_task / args.workers
    cases = [Case(lib, spin, tasks, args.workers, checker(tasks, lib.ordered))
             for lib in pick(libs, MAIN_KEYS, args.skip_peers)]
    run_cases(cases, args.reps, args.call_timeout, "cpu")
    head = ["library / call", "bar", "start", "median s", "min–max s", "× Pool.map",
            "× ideal", "notes"]
    rows = time_rows(cases, baseline_of(cases), ideal=ideal)
    return (f"## 2. CPU-bound tasks: {n:,} × busy loop of {per_task * 1000:.3f} ms "
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
    cases = [Case(lib, fibonacci, tasks, args.workers, checker(expected, lib.ordered))
             for lib in pick(libs, MAIN_KEYS, args.skip_peers)]
    run_cases(cases, args.reps, args.call_timeout, "skewed")
    head = ["library / call", "bar", "start", "median s", "min–max s", "× Pool.map",
            "× ideal", "notes"]
    rows = time_rows(cases, baseline_of(cases), ideal=ideal)
    return (f"## 3. Skewed tasks: fibonacci(30), then {k} × each of fibonacci(20)…(27) in "
            f"ascending order ({len(tasks)} tasks, the heaviest last), {args.workers} workers\n\n"
            f"Each task timed serially once: sum {fmt_s(serial)} s, longest "
            f"{fmt_s(max(durations))} s (fibonacci(30)); ideal = max(longest, sum / workers) "
            f"= {fmt_s(ideal)} s.\n\n" + md_table(head, rows))


# ---------------------------------------------------------------- 4. streaming
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


def _consume(iterator: Any, n: int) -> Tuple[int, int]:
    count = total = 0
    for value in iterator:
        count += 1
        total += value
        if count >= n:
            break
    return count, total


def stream_ours(n: int, workers: int, ordered: bool) -> Tuple[int, int]:
    from parallelbar_clone import ProgressPool
    with ProgressPool(n_cpu=workers) as pool:
        method = pool.imap if ordered else pool.imap_unordered
        it = method(square, itertools.count())
        try:
            return _consume(it, n)
        finally:
            it.close()


def stream_pool(n: int, workers: int) -> Tuple[int, int]:
    with multiprocessing.Pool(workers) as pool:
        it = pool.imap_unordered(square, itertools.count(), chunksize=1000)
        return _consume(it, n)


def wl_stream(args: argparse.Namespace, libs: Dict[str, libraries.Lib]) -> str:
    n = args.stream_n
    expected_sum = (n - 1) * n * (2 * n - 1) // 6  # 0² + ... + (n-1)²
    entries: List[Dict[str, Any]] = [
        dict(label="ours ProgressPool.imap_unordered", peer=False, ordered=False,
             call=lambda: stream_ours(n, args.workers, False),
             note="input: endless itertools.count(); stop after N results", exact=False),
        dict(label="ours ProgressPool.imap (ordered)", peer=False, ordered=True,
             call=lambda: stream_ours(n, args.workers, True),
             note="input: endless itertools.count(); stop after N results", exact=True),
        dict(label="multiprocessing Pool.imap_unordered", peer=False, ordered=False,
             call=lambda: stream_pool(n, args.workers),
             note="input: endless itertools.count(); stop after N results; chunksize=1000",
             exact=False),
    ]
    if args.skip_peers:
        entries = [e for e in entries if not e["peer"]]
    for e in entries:
        e.update(times=[], peaks=[], ends=[], error=None)
    reps = max(1, min(args.reps, 3))
    for rep in range(reps):
        log(f"  stream: round {rep + 1}/{reps}")
        shift = rep % len(entries)
        for e in entries[shift:] + entries[:shift]:
            if e["error"]:
                continue
            gc.collect()
            sampler = RssSampler()
            sampler.start()
            try:
                with quiet_stderr(), call_limit(args.call_timeout):
                    start = perf_counter()
                    count, total = e["call"]()
                    elapsed = perf_counter() - start
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                if VERBOSE:
                    traceback.print_exc()
                reason = (f"hung: {exc}" if isinstance(exc, CallTimeout) else describe(exc))
                e["error"] = reason
                PROBLEMS.append(f"[stream] {e['label']}: {reason}")
                log(f"    !! {e['label']}: {reason}")
                continue
            finally:
                peak, end = sampler.finish()
            ok = count == n and (total == expected_sum if e["exact"] else total >= expected_sum)
            if not ok:
                e["error"] = f"wrong result: {count:,} results, sum {total} (expected " \
                             f"{'' if e['exact'] else '>= '}{expected_sum})"
                PROBLEMS.append(f"[stream] {e['label']}: {e['error']}")
                continue
            e["times"].append(elapsed)
            e["peaks"].append(peak)
            e["ends"].append(end)
    rows = []
    for e in entries:
        if e["error"] or not e["times"]:
            rows.append([e["label"], f"n/a ({e['error'] or 'no successful call'})", "", "",
                         "", "", e["note"]])
            continue
        med = statistics.median(e["times"])
        rows.append([e["label"], fmt_s(med), f"{fmt_s(min(e['times']))}–{fmt_s(max(e['times']))}",
                     fmt_rate(n / med) + "/s",
                     f"{statistics.median(e['peaks']) / 2 ** 20:.1f}",
                     f"{statistics.median(e['ends']) / 2 ** 20:.1f}", e["note"]])
    head = ["library / call", "median s", "min–max s", "items/s", "peak RSS growth MB",
            "RSS growth at end MB", "notes"]
    return (f"## 4. Streaming: {n:,} trivial items through one pool, {args.workers} workers, "
            f"{reps} rounds\n\nParent RSS sampled every 20 ms during each call, growth over "
            f"the RSS just before it (median over rounds). Time includes pool start and "
            f"shutdown.\n\n" + md_table(head, rows))


# ---------------------------------------------------------------- 5. scaling
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
            for lib in pick(libs, SCALING_KEYS, False):
                cases.append(Case(lib, spin, tasks, w, checker(tasks, lib.ordered),
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
                               f"{fmt_s(min(case.times))}–{fmt_s(max(case.times))})")
            rows.append(row)
    sizes_text = "; ".join(f"{name}: " + ", ".join(f"w={w}: {ideals[(name, w)][0]:,} tasks"
                                                    for w in counts)
                           for name, _, _ in sizes)
    capped = "" if cpus >= 16 else f" (capped at os.cpu_count() = {cpus})"
    return (f"## 5. Scaling: efficiency = ideal / actual, ideal = N × task time / workers"
            f"{capped}\n\nN grows with the workers so the ideal is {target:g} s per call "
            f"({sizes_text}).\n\n" + md_table(head, rows))


# ====================================================================== main
def cold_calls(args: argparse.Namespace, libs: Dict[str, libraries.Lib]
               ) -> List[Tuple[str, str, Optional[float], str]]:
    """The very first call in this process (ours starts its forkserver here)."""
    out = []
    tasks = list(range(10))
    for key, label in (("ours.map", "ours progress_map, first call in the process"),
                       ("pool.map", "multiprocessing Pool.map, first call in the process")):
        lib = libs[key]
        case = Case(lib, square, tasks, args.workers, checker([x * x for x in tasks], True))
        elapsed = one_call(case, args.call_timeout, "startup")
        note = "one sample; starts the forkserver" if lib.start_method == "forkserver" \
            else "one sample"
        out.append((label, lib.start_method, elapsed, note))
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions and smaller N (the whole run in about 2 minutes)")
    p.add_argument("--reps", type=int, default=None,
                   help="repetitions per library and workload (default 5, --quick 2)")
    p.add_argument("--only", default="",
                   help="comma-separated workloads to run: " + ",".join(WORKLOADS))
    p.add_argument("--skip-peers", action="store_true",
                   help="only ours and the multiprocessing.Pool.map baseline")
    p.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    p.add_argument("--workers", type=int, default=2,
                   help="workers for workloads 1-4 and start-up (default 2)")
    p.add_argument("--stream-n", type=int, default=None,
                   help="items for the streaming workload (default 2,000,000; --quick 500,000)")
    p.add_argument("--stream-10m", action="store_true",
                   help="stream 10,000,000 items (same as --stream-n 10000000)")
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
    if args.call_timeout is None:
        args.call_timeout = 60.0 if args.quick else 120.0
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in only if x not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    args.workloads = [w for w in WORKLOADS if not only or w in only]
    return args


def load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    global VERBOSE
    args = parse_args(argv)
    VERBOSE = args.verbose
    began = perf_counter()
    libs = libraries.all_libs()
    header = "# parallelbar_clone benchmarks\n\n" + "\n".join(machine_lines(args))
    print(header + "\n", flush=True)
    sections = [header]
    missing = sorted({lib.missing for lib in libs.values() if lib.missing})
    if missing and not args.skip_peers:
        note = "Not installed (rows show n/a): " + "; ".join(missing)
        print(note + "\n", flush=True)
        sections.append(note)
    log("warming up: first calls in this process")
    cold = cold_calls(args, libs)
    runners = {"startup": lambda: wl_startup(args, libs, cold),
               "trivial": lambda: wl_trivial(args, libs),
               "cpu": lambda: wl_cpu(args, libs),
               "skewed": lambda: wl_skewed(args, libs),
               "stream": lambda: wl_stream(args, libs),
               "scaling": lambda: wl_scaling(args, libs)}
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
                         f"{load_before:.2f} before, {load_after:.2f} after (this benchmark "
                         f"alone adds up to about workers + 1 = {args.workers + 1}; more means "
                         f"other processes competed for the CPUs)._")
            print(text + "\n", flush=True)
            sections.append(text)
    except KeyboardInterrupt:
        log("interrupted: writing what was measured so far")
        sections.append("_Interrupted._")
    footer = [f"Total benchmark time: {perf_counter() - began:.0f} s."]
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
