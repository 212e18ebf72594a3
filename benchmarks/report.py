"""What the benchmark prints: Markdown tables, number formats, and the header that
makes every number traceable (the commit and whether the tree had changes, the
machine, the exact command, the load on the machine).

Nothing machine-specific beyond that goes into the output: paths are written
relative to the repository, and the host's name is not written at all.
"""
from __future__ import annotations

import datetime
import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

__all__ = ["md_table", "fmt_s", "fmt_ms", "fmt_ratio", "fmt_rate", "fmt_pct", "spread",
           "cpu_model", "usable_cpus", "load_average", "source_state", "command_line",
           "machine_lines", "REPO"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ tables
def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
             numbers: Optional[bool] = None) -> str:
    """A Markdown table; columns of numbers (judged by their heading, or all but the
    first when ``numbers`` is True) are right-aligned."""
    marks = ("median", "min–max", "×", "/s", "MB", "efficiency", "ms", "%", " s", "measured")
    align = ["---"] + ["--:" if (numbers if numbers is not None else
                                 any(m in h for m in marks) and "notes" not in h) else "---"
                       for h in headers[1:]]
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
    """Seconds shown as milliseconds."""
    if x is None:
        return "n/a"
    ms = x * 1000
    return f"{ms:.0f}" if abs(ms) >= 100 else f"{ms:.1f}" if abs(ms) >= 1 else f"{ms:.2f}"


def fmt_ratio(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}×"


def fmt_pct(x: Optional[float]) -> str:
    """A fraction shown as a percentage."""
    if x is None:
        return "n/a"
    return f"{x * 100:.2f} %" if x < 0.1 else f"{x * 100:.1f} %"


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def spread(values: Sequence[float], fmt=fmt_s) -> str:
    """``min–max`` of the samples ('' when there are none)."""
    return f"{fmt(min(values))}–{fmt(max(values))}" if values else ""


# ------------------------------------------------------------------ machine
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


def load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _git(*args: str) -> str:
    """Git's output, trailing newline removed (leading spaces matter in --porcelain)."""
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=10).stdout.rstrip("\n")


def source_state() -> str:
    """The commit checked out, and what differs from it (tracked changes and new
    files, by top folder). ``PB_BENCH_COMMIT``: the commit a copy without .git was
    made from (a lent machine gets the tree, not the repository)."""
    given = os.environ.get("PB_BENCH_COMMIT")
    if given:
        return f"`{given}` (PB_BENCH_COMMIT: a copy of that commit's tree, without .git)"
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        status = _git("status", "--porcelain")
    except Exception:
        return "unknown (no git)"
    if not commit:
        return "unknown (not a git checkout)"
    if not status:
        return f"`{commit}`, clean tree"
    folders: Dict[str, int] = {}
    for line in status.splitlines():
        path = line[3:].split(" -> ")[-1].strip('"')
        top = path.split("/", 1)[0] + ("/" if "/" in path else "")
        folders[top] = folders.get(top, 0) + 1
    parts = ", ".join(f"{k} {v}" for k, v in sorted(folders.items()))
    engine = " (including parallelbar_clone/: the engine measured is not the commit)" \
        if "parallelbar_clone/" in folders else ""
    return f"`{commit}` + uncommitted changes: {parts} file(s){engine}"


def _portable(arg: str) -> str:
    """An argument as it can be written down: absolute paths inside the repository
    become relative to it, other absolute paths keep only their file name."""
    for prefix in ("", "--markdown="):
        if arg.startswith(prefix) and os.path.isabs(arg[len(prefix):]):
            path = arg[len(prefix):]
            rel = os.path.relpath(path, REPO)
            return prefix + (rel if not rel.startswith("..") else os.path.basename(path))
    return arg


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """The command that produced this output, runnable from the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = _portable(os.path.abspath(argv[0])) if argv else "benchmarks/run.py"
    return shlex.join(["python", script] + [_portable(a) for a in argv[1:]])


def machine_lines(settings: str, command: str) -> List[str]:
    """The header: what ran, where, how."""
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
    try:
        import libraries
        vers = ", ".join(f"{k} {v}" for k, v in libraries.versions().items())
    except Exception:
        vers = "unknown"
    load = load_average()
    return [
        f"- Command: `{command}` (from the repository root)",
        f"- Commit: {source_state()}",
        f"- Machine: {cpu_model()}; {os.cpu_count()} logical CPUs ({usable_cpus()} usable); "
        f"{mem}; 1-minute load average at the start: "
        f"{'unknown' if load is None else f'{load:.2f}'}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.system()} {platform.release()}",
        f"- Start methods: multiprocessing default `{multiprocessing.get_start_method()}`, "
        f"parallelbar_clone default `{ours}`"
        + (" (first workers forked by the caller, later ones by the pool's zygote)" if ours == "fork" else ""),
        f"- Versions: {vers}",
        f"- Settings: {settings}; run at "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
    ]
