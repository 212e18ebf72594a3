"""How every measurement is taken: rotated rounds, guards, and the list of problems.

Every measure is a list of contenders (ours and the peers) run in rounds: each
round runs every contender once, in an order rotated by one per round (A B C,
B C A, C A B, ...), so drift of the machine is shared by all of them instead of
landing on whoever runs last. During each sample fd 2 points at /dev/null (bars
are drawn, the terminal's speed is not timed) and a SIGALRM timer turns a hung
call into a reported failure. A contender that raises, hangs or returns a wrong
result is marked ``n/a (reason)``, skipped for the rest of that measure, and
listed under *Problems seen*.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
import statistics
import sys
import traceback
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from checks import ResultError

__all__ = ["PROBLEMS", "CallTimeout", "call_limit", "quiet_stderr", "describe", "log",
           "Contender", "rotate", "settings"]

PROBLEMS: List[str] = []


class _Settings:
    verbose = False


settings = _Settings()


def log(msg: str) -> None:
    """Progress of the benchmark: stderr (the tables go to stdout)."""
    print(msg, file=sys.stderr, flush=True)


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


def failure_reason(exc: BaseException) -> str:
    """What a table cell says about a failed sample."""
    if isinstance(exc, CallTimeout):
        return f"hung: {exc}"
    if isinstance(exc, ResultError):
        return f"wrong result: {exc}"
    return describe(exc)


class Contender:
    """One entry of a measure.

    ``sample()`` runs one complete measurement and returns its numbers by name
    (seconds, rates, fractions: whatever the measure reports); it raises
    :class:`checks.ResultError` when the result was wrong. ``needs``: modules that
    must import (a peer that is not installed shows ``n/a``). ``peer``: not ours
    (``--skip-peers`` drops it).
    """

    def __init__(self, label: str, sample: Callable[[], Dict[str, float]], *,
                 note: str = "", peer: bool = False, needs: Sequence[str] = (),
                 start: str = "") -> None:
        self.label = label
        self.sample = sample
        self.note = note
        self.peer = peer
        self.start = start
        self.samples: List[Dict[str, float]] = []
        self.first: Optional[Dict[str, float]] = None   # the untimed warm-up sample
        self.error: Optional[str] = None
        for module in needs:
            try:
                importlib.import_module(module)
            except Exception as exc:  # ImportError, or a broken install
                self.error = f"{module} not installed: {type(exc).__name__}: {exc}"
                break

    def values(self, key: str) -> List[float]:
        return [s[key] for s in self.samples if s.get(key) is not None]

    def median(self, key: str) -> Optional[float]:
        if self.error:
            return None
        vals = self.values(key)
        return statistics.median(vals) if vals else None

    def fail(self, reason: str, section: str) -> None:
        self.error = reason
        PROBLEMS.append(f"[{section}] {self.label}: {reason}")
        log(f"    !! {self.label}: {reason}")


def guarded(contender: Contender, timeout: Optional[float], section: str
            ) -> Optional[Dict[str, float]]:
    """One sample of ``contender``, quiet and time-limited; None when it failed."""
    try:
        gc.collect()
        with quiet_stderr(), call_limit(timeout):
            return contender.sample()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        if settings.verbose:
            traceback.print_exc()
        contender.fail(failure_reason(exc), section)
        return None


def rotate(contenders: Sequence[Contender], reps: int, timeout: Optional[float],
           section: str, *, warm_up: bool = True) -> None:
    """``reps`` rounds of every contender, the order rotated by one per round.

    ``warm_up``: first run each contender once, untimed (imports, a forkserver's
    first start, page cache), and keep that sample as ``first``."""
    live = [c for c in contenders if not c.error]
    if warm_up:
        log(f"  {section}: warm-up")
        for c in live:
            c.first = guarded(c, timeout, section)
    for rep in range(reps):
        log(f"  {section}: round {rep + 1}/{reps}")
        shift = rep % max(1, len(live))
        for c in live[shift:] + live[:shift]:
            if c.error:
                continue
            result = guarded(c, timeout, section)
            if result is not None:
                c.samples.append(result)
