"""Worker side: one short loop that runs chunks of tasks and reports back.

A process worker reads messages from its own task pipe and writes to its own
result pipe; no lock is shared with other workers, so a worker that dies (even
mid-write) cannot wedge the rest of the pool.

Parent -> worker (``task_conn``), each message ``serialize.dumps``-ed::

    ('f', run_id, func_payload, timing, durations)  a run's function (once per worker)
    ('c', run_id, start, n, items_bytes) tasks start .. start+n-1
    ('d', run_id)                        forget a finished run's function
    ('s',)                               stop

Worker -> parent (``result_conn``), each message a plain pickle::

    ('ready', pid)                       the initializer ran; tasks may start
    ('init_error', packed)               the initializer raised; the worker exits
    ('r', run_id, start, n, errors, busy, inner_failures, values_bytes, dilled, durations)
                                         results of tasks start .. start+n-1 (durations:
                                         seconds per task, when the run asked for them)
    ('bad', run_id, start, n, packed)    the chunk's tasks could not be unpickled
    ('func_error', run_id, packed)       the run's function could not be unpickled

A chunk reports in pieces: whenever ``FLUSH_INTERVAL`` passed since the last
piece, and at its end. So the bar moves, and a crash loses at most that much
finished work (those tasks are re-run).

The status slot (six doubles in shared memory per worker; a list for a thread
worker) is the only per-task bookkeeping, written without any IPC::

    [RUN] run id   [POS] task position   [START] monotonic start, 0 when idle
    [DONE] [ERR]   calls counted by the add_progress decorator
    [SPAN]         the running task is one of POS .. POS+SPAN-1

The parent reads it to enforce ``process_timeout`` and ``memory_limit`` and to
blame a crash on the task that was running. With guards on, SPAN is 1 and POS
is written before every task. Without, quick tasks are run in batches of up to
MAX_STRIDE between two writes (a write costs as much as a trivial task); after
a crash inside a batch the parent re-runs its tasks one by one to find the one
that crashes.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import traceback
from time import monotonic
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import serialize
from .errors import SerializationError

RUN, POS, START, DONE, ERR, SPAN = range(6)
SLOT_WIDTH = 6
MAX_STRIDE = 256
FLUSH_INTERVAL = 0.1

# The slot of the worker running in this thread, for the add_progress decorator:
# _local.slot = (sequence, base index); _local.inner_failures = [task args, ...]
_local = threading.local()

Packed = Tuple[BaseException, str]


def format_traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # e.g. MemoryError under a tight RLIMIT_AS
        return f"{type(exc).__name__}: (traceback unavailable)\n"


def pack_exception(exc: BaseException, *, check_pickle: bool) -> Packed:
    """(exception, traceback text); an exception that would not survive pickling is
    replaced by a :class:`SerializationError` that names its type and message."""
    tb = format_traceback(exc)
    exc.__traceback__ = None  # let go of the frames (and what they hold)
    if check_pickle:
        try:
            pickle.loads(pickle.dumps(exc, serialize.PROTOCOL))
        except BaseException as problem:
            try:
                text = str(exc)
            except BaseException:
                text = "<str() failed>"
            exc = SerializationError(
                f"the task raised {serialize.describe(exc)}: {text!r}, which cannot be sent back "
                f"to the main process ({type(problem).__name__}: {problem})")
    return exc, tb


def run_chunk(func: Callable[[Any], Any], run_id: int, start: int, items: List[Any],
              slot: Any, base: int, timing: bool, report: Callable[..., None],
              check_pickle: bool, durations: bool = False) -> None:
    """Run ``func`` on each item, writing the slot, reporting results in pieces."""
    slot[base + RUN] = run_id
    # per-task durations only where a task is long enough to matter (small chunks)
    if timing or (durations and len(items) <= 64):
        _run_timed(func, run_id, start, items, slot, base, timing, report, check_pickle,
                   durations and len(items) <= 64)
        return
    # The cheap path: the slot is written and the clock read once per batch of
    # `stride` tasks, a stride that doubles while batches take under a millisecond.
    values: List[Any] = []
    append = values.append
    errors: Optional[Dict[int, Packed]] = None
    piece_start = pos = start
    end = start + len(items)
    last = checked = monotonic()
    stride = 1
    where, span = base + POS, base + SPAN
    while pos < end:
        batch = items if len(items) == 1 else items[pos - start:pos - start + stride]
        slot[span] = len(batch)
        slot[where] = pos
        for item in batch:
            try:
                append(func(item))
            except BaseException as exc:  # SystemExit too: it is the task's outcome
                if errors is None:
                    errors = {}
                errors[piece_start + len(values)] = pack_exception(exc, check_pickle=check_pickle)
                append(None)
                del exc
        pos += len(batch)
        if pos < end:
            now = monotonic()
            if now - checked < 0.001:
                stride = min(stride * 2, MAX_STRIDE)
            elif now - checked > 0.01:
                stride = max(1, stride // 4)
            checked = now
            if now - last >= FLUSH_INTERVAL:
                report(run_id, piece_start, values, errors, now - last, None)
                values, errors, piece_start, last = [], None, pos, now
                append = values.append
    report(run_id, piece_start, values, errors, monotonic() - last, None)


def _run_timed(func: Callable[[Any], Any], run_id: int, start: int, items: List[Any],
               slot: Any, base: int, timing: bool, report: Callable[..., None],
               check_pickle: bool, durations: bool) -> None:
    """run_chunk's loop when each task's start time (guards) or duration (journal) counts."""
    values: List[Any] = []
    errors: Optional[Dict[int, Packed]] = None
    durs: Optional[List[float]] = [] if durations else None
    piece_start = pos = start
    end = start + len(items)
    last = began = monotonic()
    slot[base + SPAN] = 1
    for item in items:
        slot[base + POS] = pos
        if timing:
            slot[base + START] = began
        try:
            values.append(func(item))
        except BaseException as exc:
            values.append(None)
            if errors is None:
                errors = {}
            errors[pos] = pack_exception(exc, check_pickle=check_pickle)
            del exc
        if timing:
            slot[base + START] = 0.0
        pos += 1
        now = monotonic()
        if durs is not None:
            durs.append(now - began)
        began = now
        if now - last >= FLUSH_INTERVAL and pos < end:
            report(run_id, piece_start, values, errors, now - last, durs)
            values, errors, piece_start = [], None, pos
            durs = [] if durs is not None else None
            last = began = monotonic()  # the report's own time is no task's
    report(run_id, piece_start, values, errors, monotonic() - last, durs)


def take_inner_failures() -> list:
    failures = getattr(_local, "inner_failures", None)
    if failures:
        _local.inner_failures = []
        return failures
    return []


# --------------------------------------------------------------------------- processes

def adopt_main_names(func: Any) -> None:
    """Put the globals of a function sent by value from the caller's ``__main__`` into
    this worker's ``__main__``: a result that is an instance of a class defined there
    then pickles by name, and comes back as the caller's own class."""
    main = sys.modules.get("__main__")
    seen = 0
    while func is not None and seen < 5:
        found = getattr(func, "__globals__", None)
        if isinstance(found, dict) and found.get("__name__") == "__main__" and main is not None \
                and found is not vars(main):
            for name, value in found.items():
                if not name.startswith("__"):
                    vars(main).setdefault(name, value)
        func = getattr(func, "func", None) or getattr(func, "__wrapped__", None)
        seen += 1


def _adopt_main_classes(items: List[Any]) -> None:
    main = sys.modules.get("__main__")
    if main is None:
        return
    for kind in {type(item) for item in items}:
        if getattr(kind, "__module__", None) == "__main__" and "." not in kind.__qualname__:
            vars(main).setdefault(kind.__qualname__, kind)


def _silence_sigint() -> None:
    """Ctrl-C is the parent's business: it kills us. Workers start with SIGINT
    blocked (the parent's starting thread blocks it), so none slips in before this."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _watch_parent() -> None:
    """Exit at once if the main process dies, even in the middle of a long task."""
    import multiprocessing
    from multiprocessing.connection import wait
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(70)

    threading.Thread(target=watch, name="parallelbar-parent-watch", daemon=True).start()


def _encode_values(values: List[Any], start: int, errors: Optional[Dict[int, Packed]]
                   ) -> Tuple[bytes, bool, Optional[Dict[int, Packed]]]:
    try:
        return pickle.dumps(values, serialize.PROTOCOL), False, errors
    except Exception:
        pass
    dilled = False
    for i, value in enumerate(values):
        try:
            pickle.dumps(value, serialize.PROTOCOL)
            continue
        except Exception as problem:
            first = problem
        try:
            values[i] = serialize.Dilled(serialize.dill_dumps(value))
            dilled = True
        except Exception:
            values[i] = None
            errors = dict(errors or {})
            errors[start + i] = (SerializationError(
                f"the task returned a {serialize.describe(value)}, which cannot be sent back to "
                f"the main process by pickle or dill ({type(first).__name__}: {first})"), "")
    return pickle.dumps(values, serialize.PROTOCOL), dilled, errors


def _safe_inner_failures() -> list:
    failures = take_inner_failures()
    try:
        pickle.dumps(failures, serialize.PROTOCOL)
        return failures
    except Exception:
        return [repr(f) for f in failures]


def process_main(task_conn: Any, result_conn: Any, slots: Any, index: int,
                 init_payload: Optional[bytes]) -> None:
    """Entry point of a worker process."""
    _silence_sigint()
    _watch_parent()
    view = memoryview(slots).cast("B").cast("d")
    base = index * SLOT_WIDTH
    _local.slot = (view, base)
    _local.inner_failures = []
    send = result_conn.send_bytes

    def message(*fields: Any) -> None:
        send(pickle.dumps(fields, serialize.PROTOCOL))

    if init_payload is not None:
        try:
            initializer, initargs = serialize.loads(init_payload)
            adopt_main_names(initializer)
            initializer(*initargs)
        except BaseException as exc:
            message("init_error", pack_exception(exc, check_pickle=True))
            return
    message("ready", os.getpid())

    def report(run_id: int, start: int, values: List[Any],
               errors: Optional[Dict[int, Packed]], busy: float,
               durs: Optional[List[float]]) -> None:
        data, dilled, errors = _encode_values(values, start, errors)
        message("r", run_id, start, len(values), errors, busy, _safe_inner_failures(),
                data, dilled, durs)

    funcs: Dict[int, Tuple[Callable[[Any], Any], bool, bool]] = {}
    loads = serialize.loads
    while True:
        try:
            msg = loads(task_conn.recv_bytes())
        except (EOFError, OSError):
            return
        kind = msg[0]
        if kind == "c":
            _, run_id, start, n, items_bytes = msg
            entry = funcs.get(run_id)
            if entry is None:  # its function failed to load; already reported
                continue
            try:
                items = loads(items_bytes)
            except BaseException as exc:
                message("bad", run_id, start, n, pack_exception(exc, check_pickle=True))
                continue
            if items_bytes[:1] == b"D":  # sent by value: their __main__ classes too
                _adopt_main_classes(items)
            run_chunk(entry[0], run_id, start, items, view, base, entry[1], report, True,
                      entry[2])
            del items
        elif kind == "f":
            _, run_id, payload, timing, durations = msg
            try:
                funcs[run_id] = (loads(payload), timing, durations)
                adopt_main_names(funcs[run_id][0])
            except BaseException as exc:
                message("func_error", run_id, pack_exception(exc, check_pickle=True))
        elif kind == "d":
            funcs.pop(msg[1], None)
        else:
            return


# --------------------------------------------------------------------------- threads

class ThreadSlot(list):
    """A thread worker's status slot, plus the flag that tells it to stop."""

    def __init__(self) -> None:
        super().__init__([-1.0, -1.0, 0.0, 0.0, 0.0, 1.0])
        self.abandoned = False


def thread_main(inbox: Any, outbox: Any, handle: Any, slot: ThreadSlot,
                initializer: Optional[Callable[..., Any]], initargs: Tuple[Any, ...]) -> None:
    """Entry point of a worker thread: the same loop, without pickling."""
    _local.slot = (slot, 0)
    _local.inner_failures = []
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            outbox.put((handle, ("init_error", pack_exception(exc, check_pickle=False))))
            return
    outbox.put((handle, ("ready", threading.get_ident())))

    def report(run_id: int, start: int, values: List[Any],
               errors: Optional[Dict[int, Packed]], busy: float,
               durs: Optional[List[float]]) -> None:
        if not slot.abandoned:
            outbox.put((handle, ("r", run_id, start, len(values), errors, busy,
                                 take_inner_failures(), values, False, durs)))

    try:
        while not slot.abandoned:
            msg = inbox.get()
            if msg[0] != "c":
                return
            _, run_id, start, func, items, timing, durations = msg
            run_chunk(_StopWhenAbandoned(func, slot), run_id, start, items, slot, 0, timing,
                      report, False, durations)
    except Abandoned:  # the pool gave up on this thread while it was between tasks
        return


class Abandoned(BaseException):
    """Raised in a worker thread the pool gave up on (its task timed out)."""


class _StopWhenAbandoned:
    __slots__ = ("func", "slot")

    def __init__(self, func: Callable[[Any], Any], slot: ThreadSlot) -> None:
        self.func = func
        self.slot = slot

    def __call__(self, item: Any) -> Any:
        if self.slot.abandoned:
            raise Abandoned()
        return self.func(item)
