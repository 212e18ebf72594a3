"""One calling convention for every library under test.

Each :class:`Lib` turns ``(func, tasks, workers)`` into one complete call, the
way a user of that library writes it: pool start, the work, and pool shutdown,
unless the entry is marked ``reused`` (then the pool is opened once per
workload, warmed up, and only the calls are timed).

A peer that is not installed gets ``missing`` set (the reason) and is reported
as ``n/a``; nothing here imports a peer at module import time.
"""
from __future__ import annotations

import importlib
import math
import multiprocessing
from typing import Any, Callable, Dict, List, Optional, Sequence

__all__ = ["Lib", "all_libs", "versions", "pool_chunksize"]


def pool_chunksize(n: int, workers: int) -> int:
    """``multiprocessing.Pool.map``'s own default: about 4 chunks per worker."""
    return max(1, math.ceil(n / (4 * workers)))


def tqdm_chunksize(n: int) -> int:
    """What tqdm users typically pass to ``process_map``: about N/200."""
    return max(1, n // 200)


class Lib:
    """A library call under test.

    key: short id (used by the workloads to pick entries); label: what the table
    shows; peer: False for ours; bars: draws a progress bar; reused: keeps one
    pool open across calls (``open``/``close`` around the timed calls);
    ordered: the result is in task order (else compared as a multiset).
    """

    def __init__(self, key: str, label: str, call: Callable[..., Any], *, peer: bool,
                 bars: bool, needs: Sequence[str] = (), note: str = "",
                 reused: Optional[Callable[[int], Any]] = None, ordered: bool = True,
                 start_method: str = "") -> None:
        self.key = key
        self.label = label
        self._call = call
        self.peer = peer
        self.bars = bars
        self.needs = tuple(needs)
        self.note = note
        self._opener = reused
        self.reused = reused is not None
        self.ordered = ordered
        self.start_method = start_method
        self.missing: Optional[str] = None
        self._pool: Any = None

    def check_installed(self) -> None:
        for module in self.needs:
            try:
                importlib.import_module(module)
            except Exception as exc:  # ImportError, or a broken install
                self.missing = f"{module} not installed: {type(exc).__name__}: {exc}"
                return

    def open(self, workers: int, warm: Callable[[], Any]) -> None:
        """For a reused pool: start it and run ``warm`` (untimed) once."""
        if self._opener is not None:
            self._pool = self._opener(workers)
            warm()

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            closer = getattr(pool, "close", None)
            if closer is not None:
                closer()
            joiner = getattr(pool, "join", None)
            if joiner is not None:
                joiner()

    def __call__(self, func: Callable[[Any], Any], tasks: Sequence[Any], workers: int) -> Any:
        if self.reused:
            return self._call(self._pool, func, tasks, workers)
        return self._call(func, tasks, workers)


# ------------------------------------------------------------------ the calls
def _pool_map(func, tasks, w):
    with multiprocessing.Pool(w) as pool:
        return pool.map(func, tasks)


def _pool_imap(func, tasks, w):
    with multiprocessing.Pool(w) as pool:
        return list(pool.imap(func, tasks, chunksize=pool_chunksize(len(tasks), w)))


def _pool_map_reused(pool, func, tasks, w):
    return pool.map(func, tasks)


def _ppe_map(func, tasks, w):
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(max_workers=w) as ex:
        return list(ex.map(func, tasks, chunksize=pool_chunksize(len(tasks), w)))


def _tqdm_process_map(func, tasks, w):
    from tqdm.contrib.concurrent import process_map
    return process_map(func, tasks, max_workers=w, chunksize=tqdm_chunksize(len(tasks)))


def _pb_progress_map(func, tasks, w):
    from parallelbar import progress_map
    return progress_map(func, tasks, n_cpu=w)


def _pb_progress_imap(func, tasks, w):
    from parallelbar import progress_imap
    return progress_imap(func, tasks, n_cpu=w)


def _mpire_map(func, tasks, w):
    from mpire import WorkerPool
    with WorkerPool(n_jobs=w) as pool:
        return pool.map(func, tasks, progress_bar=True)


def _pebble_map(func, tasks, w):
    from pebble import ProcessPool
    with ProcessPool(max_workers=w) as pool:
        future = pool.map(func, tasks, chunksize=pool_chunksize(len(tasks), w))
        return list(future.result())


def _joblib(func, tasks, w):
    from joblib import Parallel, delayed
    return Parallel(n_jobs=w)(delayed(func)(t) for t in tasks)


def _ours_map(func, tasks, w):
    from parallelbar_clone import progress_map
    return progress_map(func, tasks, n_cpu=w)


def _ours_map_forkserver(func, tasks, w):
    from parallelbar_clone import progress_map
    return progress_map(func, tasks, n_cpu=w, context="forkserver")


def _ours_imap(func, tasks, w):
    from parallelbar_clone import progress_imap
    return progress_imap(func, tasks, n_cpu=w)


def _ours_map_timeout(func, tasks, w):
    from parallelbar_clone import progress_map
    return progress_map(func, tasks, n_cpu=w, process_timeout=60)


def _ours_map_memory(func, tasks, w):
    from parallelbar_clone import progress_map
    return progress_map(func, tasks, n_cpu=w, memory_limit="1GB")


def _open_ours(w):
    from parallelbar_clone import ProgressPool
    return ProgressPool(n_cpu=w)


def _ours_reused_imapu(pool, func, tasks, w):
    return list(pool.imap_unordered(func, tasks))


def _ours_reused_map(pool, func, tasks, w):
    return pool.map(func, tasks)


def _open_pool(w):
    return multiprocessing.Pool(w)


def all_libs() -> Dict[str, Lib]:
    """Every entry, by key, in table order (baseline first, then peers, then ours)."""
    mp_default = multiprocessing.get_start_method()
    try:
        from parallelbar_clone.options import default_context
        ours_method = default_context()
    except Exception:
        ours_method = "?"
    libs: List[Lib] = [
        Lib("pool.map", "multiprocessing Pool.map", _pool_map, peer=False, bars=False,
            start_method=mp_default, note="default chunksize (~N/(4*workers))"),
        Lib("pool.imap", "multiprocessing Pool.imap", _pool_imap, peer=True, bars=False,
            start_method=mp_default, note="chunksize ~N/(4*workers)"),
        Lib("ppe.map", "ProcessPoolExecutor.map", _ppe_map, peer=True, bars=False,
            start_method=mp_default, note="chunksize ~N/(4*workers)"),
        Lib("tqdm.process_map", "tqdm process_map", _tqdm_process_map, peer=True, bars=True,
            needs=["tqdm.contrib.concurrent"], start_method=mp_default,
            note="chunksize N/200"),
        Lib("pb.progress_map", "parallelbar 2.5 progress_map", _pb_progress_map, peer=True,
            bars=True, needs=["parallelbar"], start_method=mp_default,
            note="default chunk_size"),
        Lib("pb.progress_imap", "parallelbar 2.5 progress_imap", _pb_progress_imap, peer=True,
            bars=True, needs=["parallelbar"], start_method=mp_default,
            note="default chunk_size=1"),
        Lib("mpire.map", "mpire WorkerPool.map", _mpire_map, peer=True, bars=True,
            needs=["mpire"], start_method="fork", note="progress_bar=True"),
        Lib("pebble.map", "pebble ProcessPool.map", _pebble_map, peer=True, bars=False,
            needs=["pebble"], start_method=mp_default, note="chunksize ~N/(4*workers)"),
        Lib("joblib", "joblib Parallel", _joblib, peer=True, bars=False, needs=["joblib"],
            start_method="loky",
            note="loky keeps its workers alive between calls"),
        Lib("ours.map", "ours progress_map", _ours_map, peer=False, bars=True,
            start_method=ours_method),
        Lib("ours.imap", "ours progress_imap", _ours_imap, peer=False, bars=True,
            start_method=ours_method),
        Lib("ours.reused.imapu", "ours ProgressPool.imap_unordered (reused pool)",
            _ours_reused_imapu, peer=False, bars=True, reused=_open_ours, ordered=False,
            start_method=ours_method, note="pool start not timed"),
        Lib("ours.map.timeout", "ours progress_map process_timeout=60", _ours_map_timeout,
            peer=False, bars=True, start_method=ours_method),
        Lib("ours.map.memory", "ours progress_map memory_limit='1GB'", _ours_map_memory,
            peer=False, bars=True, start_method=ours_method),
        # Start-up only:
        Lib("ours.map.forkserver", "ours progress_map context='forkserver'",
            _ours_map_forkserver, peer=False, bars=True, start_method="forkserver"),
        Lib("pool.map.reused", "multiprocessing Pool.map (reused pool)", _pool_map_reused,
            peer=False, bars=False, reused=_open_pool, start_method=mp_default,
            note="pool start not timed"),
        Lib("ours.reused.map", "ours ProgressPool.map (reused pool)", _ours_reused_map,
            peer=False, bars=True, reused=_open_ours, start_method=ours_method,
            note="pool start not timed"),
    ]
    for lib in libs:
        lib.check_installed()
    return {lib.key: lib for lib in libs}


def versions() -> Dict[str, str]:
    """Installed versions of ours and every peer (or 'not installed')."""
    from importlib import metadata
    out = {}
    for dist in ("parallelbar_clone", "parallelbar", "tqdm", "mpire", "pebble", "joblib",
                 "psutil", "dill", "distributed"):
        try:
            out[dist] = metadata.version(dist)
        except Exception:
            out[dist] = "not installed"
    return out
