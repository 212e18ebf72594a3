#!/usr/bin/env python3
"""df.pbar against pandarallel and the one-core pandas call, side by side in one run.

Two workloads on the same frame (300 000 rows by default):

- row-wise apply: ``df.apply(row_score, axis=1)`` / ``df.parallel_apply(...)`` /
  ``df.pbar.apply(...)``
- Series.map: ``df['text'].map(normalize)`` / ``.parallel_map(...)`` / ``.pbar.map(...)``

Every round runs each candidate once, in an order rotated by one each round, so slow
drift of the machine is shared by all. Bars are on where a library has them
(pandarallel ``progress_bar=True``, ours by default); stdout and stderr go to
/dev/null during each timed call, so drawing costs its CPU time and not the
terminal's. Each result is checked against pandas' own after the call, outside the
timed region. The functions are defined here, in the script's ``__main__``, as a
user's would be: pandarallel's forked workers inherit them, ours get them by value.

    python benchmarks/pandas_bench.py                 # 300 000 rows, 5 rounds
    python benchmarks/pandas_bench.py --rows 50000 --rounds 3
    make bench-pandas                                 # a venv with pandas 2 and pandarallel

pandarallel needs pandas 2 (it does not import with pandas 3); where it is missing
its rows say so and the rest runs.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import statistics
import subprocess
import sys
from time import perf_counter
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import pandas as pd

import parallelbar_clone.pandas  # noqa: F401  (registers .pbar)

WORDS = ["Alpha", "beta", "GAMMA", "delta", "epsilon", "zeta", "eta!", "theta,", "iota",
         "kappa", "lambda", "mu"]
_NON_WORD = re.compile(r"[^a-z0-9 ]+")


def row_score(row: pd.Series) -> float:
    """A typical feature row function: a few columns, some arithmetic, a string."""
    bonus = 1.5 if row["category"] in ("b", "d") else 1.0
    return (row["qty"] * row["price"] * bonus + len(row["text"]) ** 0.5) / (1 + row["rank"])


def normalize(text: str) -> str:
    """A typical text-cleaning step."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def make_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    text = [" ".join(words[rng.integers(0, len(WORDS), size=6)]) for _ in range(rows)]
    return pd.DataFrame({
        "qty": rng.integers(1, 50, size=rows),
        "price": rng.uniform(0.5, 99.0, size=rows).round(2),
        "rank": rng.integers(0, 10, size=rows),
        "category": rng.choice(list("abcde"), size=rows),
        "text": text,
    }, index=pd.Index([f"id{i}" for i in range(rows)], name="id"))


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Send fd 1 and 2 to /dev/null (bars cost their CPU, not the terminal's time)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def candidates(workers: int, use_pandarallel: bool) -> Dict[str, Dict[str, Any]]:
    """name -> {workload: callable(df) -> result}; a string instead says why it is n/a."""
    out: Dict[str, Dict[str, Any]] = {
        "pandas, one core": {
            "apply": lambda df: df.apply(row_score, axis=1),
            "map": lambda df: df["text"].map(normalize),
        },
        "pandarallel": {},
        "ours df.pbar": {
            "apply": lambda df: df.pbar.apply(row_score, axis=1, n_cpu=workers),
            "map": lambda df: df["text"].pbar.map(normalize, n_cpu=workers),
        },
    }
    if not use_pandarallel:
        out["pandarallel"] = {"apply": "n/a (--no-pandarallel)", "map": "n/a (--no-pandarallel)"}
        return out
    try:
        with quiet():
            from pandarallel import pandarallel
            pandarallel.initialize(nb_workers=workers, progress_bar=True, verbose=0)
        out["pandarallel"] = {
            "apply": lambda df: df.parallel_apply(row_score, axis=1),
            "map": lambda df: df["text"].parallel_map(normalize),
        }
    except Exception as exc:  # not installed, or pandas 3
        why = f"n/a ({type(exc).__name__}: {str(exc)[:60]})"
        out["pandarallel"] = {"apply": why, "map": why}
    return out


def timed(call: Callable[[pd.DataFrame], Any], df: pd.DataFrame) -> tuple:
    with quiet():
        started = perf_counter()
        result = call(df)
        elapsed = perf_counter() - started
    return elapsed, result


def load() -> str:
    try:
        return "%.2f" % os.getloadavg()[0]
    except OSError:
        return "?"


def commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", default="apply,map", help="apply, map or both")
    parser.add_argument("--no-pandarallel", action="store_true")
    args = parser.parse_args(argv)

    print(f"# df.pbar vs pandarallel vs one-core pandas: {args.rows:,} rows, {args.workers} "
          f"workers, {args.rounds} rounds (rotated)")
    print(f"parallelbar_clone {commit()}; pandas {pd.__version__}; Python "
          f"{platform.python_version()}; {os.cpu_count()} CPUs; {platform.machine()}")
    df = make_frame(args.rows)
    lineup = candidates(args.workers, not args.no_pandarallel)
    names = list(lineup)
    for workload in [w.strip() for w in args.only.split(",") if w.strip()]:
        expected = lineup[names[0]][workload](df)
        # ours: the first call in a process also pays one-time costs (imports in the
        # workers, the forkserver where that is the start method); measured apart
        first, _ = timed(lineup["ours df.pbar"][workload], df)
        times: Dict[str, List[float]] = {n: [] for n in names}
        problems: Dict[str, str] = {n: lineup[n][workload] for n in names
                                    if isinstance(lineup[n][workload], str)}
        before = load()
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                if name in problems:
                    continue
                try:
                    elapsed, result = timed(lineup[name][workload], df)
                    if isinstance(expected, pd.Series):
                        pd.testing.assert_series_equal(result, expected, check_names=False)
                except Exception as exc:
                    problems[name] = f"n/a ({type(exc).__name__}: {str(exc)[:80]})"
                    continue
                times[name].append(elapsed)
            print(f"  round {r + 1}: " + ", ".join(
                f"{n} {times[n][-1]:.3f} s" for n in names if n not in problems and times[n]),
                file=sys.stderr, flush=True)
        base = statistics.median(times[names[0]])
        title = {"apply": "row-wise apply: df.apply(row_score, axis=1)",
                 "map": "Series.map: df['text'].map(normalize)"}[workload]
        print(f"\n## {title}\n")
        print("| candidate | median | min - max | vs one-core pandas |")
        print("| --- | --: | --: | --: |")
        for name in names:
            if name in problems:
                print(f"| {name} | {problems[name]} | | |")
                continue
            med = statistics.median(times[name])
            print(f"| {name} | {med:.3f} s | {min(times[name]):.3f} - {max(times[name]):.3f} s "
                  f"| {med / base:.2f}x |")
        if "pandarallel" not in problems and times["ours df.pbar"]:
            ratio = statistics.median(times["ours df.pbar"]) / statistics.median(
                times["pandarallel"])
            print(f"\nours / pandarallel: {ratio:.2f}x (below 1: ours is faster)")
        print(f"ours, first call in the process (one-time costs): {first:.3f} s")
        print(f"1-minute load average before / after: {before} / {load()} (the benchmark "
              f"itself accounts for up to {args.workers + 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
