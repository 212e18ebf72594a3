"""The one thread that owns the tqdm bars.

The pool's manager thread sends it small events (batched counts, at most every
``UPDATE_INTERVAL`` per run), never one per task; nothing else in the library
writes to the terminal. ``tqdm.auto`` gives widgets in Jupyter, text elsewhere.

Events, on a ``queue.SimpleQueue``::

    ('open', run_id, total, desc, initial, postfix)  show the DONE bar
    ('update', run_id, done, failed, postfix)  add to DONE / ERROR (ERROR appears on the first failure)
    ('close', run_id, threading.Event)         final state, warning style if anything failed
    None                                       stop the thread
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Dict, Optional

from .zygote import FORK_GATE

log = logging.getLogger("parallelbar_clone")

UPDATE_INTERVAL = 0.05


_BAR_CLASS = None


def _tqdm():
    """tqdm.auto's bar, without tqdm's monitor thread: our bar thread refreshes the bars
    itself, and a thread that lingers after the run would make every later fork (a
    new pool's zygote) a fork of a multi-threaded process."""
    global _BAR_CLASS
    if _BAR_CLASS is None:
        from tqdm.auto import tqdm

        class Bar(tqdm):  # type: ignore[misc,valid-type]
            monitor_interval = 0

        _BAR_CLASS = Bar
    return _BAR_CLASS


class _Bars:
    __slots__ = ("done", "error", "total")

    def __init__(self, done: Any, total: Optional[int]) -> None:
        self.done = done
        self.error: Any = None
        self.total = total


class BarThread:
    """Owns the bars of every run of one pool."""

    def __init__(self) -> None:
        self._events: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="parallelbar-bars", daemon=True)
        self._thread.start()

    def send(self, event: Any) -> None:
        self._events.put(event)

    def stop(self, timeout: float = 2.0) -> None:
        self._events.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        FORK_GATE.register()
        try:
            self._serve()
        finally:
            FORK_GATE.unregister()

    def _serve(self) -> None:
        bars: Dict[int, _Bars] = {}
        while True:
            event = self._events.get()
            with FORK_GATE.working():  # (a zygote is forked only while we wait)
                if event is None:
                    for run_id in list(bars):
                        self._close(bars.pop(run_id))
                    return
                try:
                    self._handle(bars, event)
                except Exception:  # a broken terminal must not break the run
                    log.exception("progress bar update failed")
                    if event[0] == "close":
                        event[2].set()

    def _handle(self, bars: Dict[int, _Bars], event: Any) -> None:
        kind, run_id = event[0], event[1]
        if kind == "open":
            _, _, total, desc, initial, postfix = event
            bar = _tqdm()(total=total, desc=desc, initial=initial, postfix=postfix)
            bars[run_id] = _Bars(bar, total)
        elif kind == "update":
            _, _, done, failed, postfix = event
            entry = bars.get(run_id)
            if entry is None:
                return
            if failed:
                if entry.error is None:
                    fmt = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}"
                           if entry.total else "{desc}: {n_fmt}")
                    entry.error = _tqdm()(total=entry.total, desc="ERROR", colour="red",
                                          bar_format=fmt)
                entry.error.update(failed)
            if postfix:
                entry.done.set_postfix_str(postfix, refresh=False)
            if done:
                entry.done.update(done)
            elif postfix:
                entry.done.refresh()
        elif kind == "close":
            entry = bars.pop(run_id, None)
            try:
                if entry is not None:
                    self._close(entry)
            finally:
                event[2].set()

    @staticmethod
    def _close(entry: _Bars) -> None:
        failed = entry.error is not None
        if failed:
            entry.error.close()
            entry.done.colour = "yellow"
        entry.done.close()
        if failed and hasattr(entry.done, "container"):  # tqdm.notebook: a widget
            entry.done.disp(bar_style="warning")
