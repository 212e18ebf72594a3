"""Worker side: one short loop that runs chunks of tasks and reports back.

A process worker reads messages from its own task pipe and writes to its own
result pipe; no lock is shared with other workers, so a worker that dies (even
mid-write) cannot wedge the rest of the pool.

Each message is a header of plain data (ints, floats, strings, bytes), pickled,
so that the manager thread, which unpickles it, never runs code of the caller's
(see :mod:`.outcomes`), and maybe a tail of bytes that travels as it is
(:func:`serialize.send_message`). Parent -> worker (``task_conn``)::

    ('f', run_id, func_payload, timing, durations)  a run's function (once per worker)
    ('c', run_id, start, n) + tail: items_bytes      tasks start .. start+n-1
    ('ci', run_id, start, n, key, lo)    the same, as items lo .. lo+n-1 of the tasks
                                         object the worker inherited (preloaded[key])
    ('d', run_id)                        forget a finished run's function
    ('s',)                               stop

Worker -> parent (``result_conn``)::

    ('ready', pid)                       the initializer ran; tasks may start
    ('init_error', packed)               the initializer raised; the worker exits
    ('r', run_id, start, n, errors, busy, inner, None, dilled, durations, counted)
        + tail: values_bytes             results of tasks start .. start+n-1: errors maps
                                         positions to packed exceptions; inner: pickled
                                         arguments of add_progress calls that failed;
                                         durations: seconds per task, when the run asked;
                                         counted: (done, failed) add_progress calls
    ('bad', run_id, start, n, packed, by_value)  the chunk's tasks could not be unpickled
    ('func_error', run_id, packed, again)        the run's function could not be loaded

``packed`` is :func:`outcomes.pack_exception`'s tuple. A thread worker sends the
same messages on a queue, with objects: :class:`outcomes.Failure` records and
the values themselves.

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
from time import monotonic
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import outcomes, serialize
from .errors import SerializationError

RUN, POS, START, DONE, ERR, SPAN = range(6)
SLOT_WIDTH = 6
MAX_STRIDE = 2048
BATCH_SECONDS = 0.05     # batches of quick tasks grow towards this much work...
BATCH_GROWTH = 8         # ...at most this many times the last batch
FLUSH_INTERVAL = 0.25

# The slot of the worker running in this thread, for the add_progress decorator:
# _local.slot = (sequence, base index); _local.inner_failures = [task args, ...]
_local = threading.local()

Packed = Any


def pack_exception(exc: BaseException, *, check_pickle: bool) -> Packed:
    """A task's exception for the parent: plain data from a process worker
    (``check_pickle``), the object itself, as a Failure, from a thread worker."""
    if check_pickle:
        return outcomes.pack_exception(exc)
    return outcomes.local_failure(exc)


def run_chunk(func: Callable[[Any], Any], run_id: int, start: int, items: List[Any],
              slot: Any, base: int, timing: bool, report: Callable[..., None],
              check_pickle: bool, durations: bool = False,
              began: Optional[float] = None) -> None:
    """Run ``func`` on each item, writing the slot, reporting results in pieces.
    ``began``: when decoding the chunk began. The first piece's busy time counts from
    there, and report() adds its encoding: moving a tiny task in and out costs a
    worker more than running it, and the chunk policy must see that."""
    slot[base + RUN] = run_id
    # per-task durations only where a task is long enough to matter (small chunks)
    if timing or (durations and len(items) <= 64):
        _run_timed(func, run_id, start, items, slot, base, timing, report, check_pickle,
                   durations and len(items) <= 64, began)
        return
    # The cheap path: the slot is written and the clock read once per batch of
    # `stride` tasks, a stride that grows towards BATCH_SECONDS of work. (A batch costs
    # about 20 us besides its tasks, its few steps running with caches its tasks made
    # cold: on 1 ms tasks in batches of 10 ms, 0.2 % of the workers' time.)
    values: List[Any] = []
    errors: Optional[Dict[int, Packed]] = None
    piece_start = pos = start
    end = start + len(items)
    last = checked = monotonic()
    if began is not None:
        last = began
    stride = 1
    where, span = base + POS, base + SPAN
    while pos < end:
        batch = items if len(items) == 1 else items[pos - start:pos - start + stride]
        slot[span] = len(batch)
        slot[where] = pos
        # map() in C, not a Python loop: a trivial task costs a third less. When a task
        # raises, the results before it are already in `values` (list.extend keeps
        # them), so it is known which one raised; the batch goes on after it.
        i = 0
        while True:
            before = len(values)
            try:
                values.extend(map(func, batch[i:] if i else batch))
                break
            except BaseException as exc:  # SystemExit too: it is the task's outcome
                i += len(values) - before
                if errors is None:
                    errors = {}
                errors[piece_start + len(values)] = pack_exception(exc, check_pickle=check_pickle)
                values.append(None)
                del exc
                i += 1
                if i >= len(batch):
                    break
        pos += len(batch)
        if pos < end:
            now = monotonic()
            if now - checked < BATCH_SECONDS:
                took = max(now - checked, 1e-9) / len(batch)
                stride = max(stride, min(int(BATCH_SECONDS / took), stride * BATCH_GROWTH,
                                         MAX_STRIDE))
            elif now - checked > 5 * BATCH_SECONDS:
                stride = max(1, stride // 4)
            checked = now
            if now - last >= FLUSH_INTERVAL:
                report(run_id, piece_start, values, errors, now - last, None)
                values, errors, piece_start = [], None, pos
                last = monotonic()   # (report() counted its own encoding)
    report(run_id, piece_start, values, errors, monotonic() - last, None)


def _run_timed(func: Callable[[Any], Any], run_id: int, start: int, items: List[Any],
               slot: Any, base: int, timing: bool, report: Callable[..., None],
               check_pickle: bool, durations: bool, decoding: Optional[float]) -> None:
    """run_chunk's loop when each task's start time (guards) or duration (journal) counts."""
    values: List[Any] = []
    errors: Optional[Dict[int, Packed]] = None
    durs: Optional[List[float]] = [] if durations else None
    piece_start = pos = start
    end = start + len(items)
    last = began = monotonic()
    if decoding is not None:
        last = decoding
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


class _Counted:
    """The add_progress calls a worker counted in its slot since its last report: they
    travel with the results of the tasks that made them, so a task whose results are
    lost (its worker died, it is run again) never counts its calls twice."""

    __slots__ = ("slot", "base", "done", "err")

    def __init__(self, slot: Any, base: int) -> None:
        self.slot, self.base = slot, base
        self.done = self.err = 0.0

    def since_last(self) -> Tuple[int, int]:
        done, err = self.slot[self.base + DONE], self.slot[self.base + ERR]
        step = (int(done - self.done), int(err - self.err))
        self.done, self.err = done, err
        return step


def take_inner_failures() -> list:
    failures = getattr(_local, "inner_failures", None)
    if failures:
        _local.inner_failures = []
        return failures
    return []


# --------------------------------------------------------------------------- processes

class WorkerSetup:
    """What a new worker process needs before its first task.

    ``init``: the initializer and its arguments, as the object itself (a worker
    forked from the zygote inherits it, nothing is pickled) or as a payload of
    :func:`serialize.dumps` (spawn, forkserver). ``main``: how to import the
    caller's main script (``('path', file)`` or ``('name', module)``), as
    multiprocessing does under spawn and forkserver; None for a forked worker,
    which has it already. ``preloaded``: functions the zygote inherited, by key.
    ``policy``: the scheduling policy of the thread that made the pool, which a worker
    started from the manager's thread (spawn, forkserver) takes back from it (see
    ``Manager._yield_while_fed``).
    """

    __slots__ = ("init", "main", "preloaded", "watch_parent", "policy")

    def __init__(self, init: Any = None, main: Optional[Tuple[str, str]] = None,
                 preloaded: Optional[Dict[int, Any]] = None, watch_parent: bool = True) -> None:
        self.init = init
        self.main = main
        self.preloaded = preloaded or {}
        self.watch_parent = watch_parent
        try:
            self.policy: Optional[int] = os.sched_getscheduler(0)  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            self.policy = None

    def __getstate__(self) -> Any:
        return (self.init, self.main, None, self.watch_parent, self.policy)

    def __setstate__(self, state: Any) -> None:
        self.init, self.main, self.preloaded, self.watch_parent, self.policy = state
        self.preloaded = {}


class MainReentry(BaseException):
    """A script without an ``if __name__ == '__main__':`` guard started a pool while a
    worker was importing it: the import stops there, as the script's definitions
    above that point are all a worker needs."""


_importing_main = False


def importing_main() -> bool:
    """True in a worker while it imports the caller's main script."""
    return _importing_main


def main_info() -> Optional[Tuple[str, str]]:
    """How a spawned worker can import the caller's ``__main__`` (what
    multiprocessing's ``get_preparation_data`` sends), or None if it cannot: a
    notebook, ``python -c``, an interactive prompt."""
    main = sys.modules.get("__main__")
    if main is None:
        return None
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name is not None:
        return None if name == "__main__" else ("name", name)
    path = getattr(main, "__file__", None)
    if not path or not os.path.exists(path):
        return None
    if os.path.splitext(os.path.basename(path))[0] == "ipython":
        return None
    import multiprocessing.process as mp_process
    if not os.path.isabs(path) and mp_process.ORIGINAL_DIR is not None:
        path = os.path.join(mp_process.ORIGINAL_DIR, path)
    return ("path", os.path.normpath(path))


def import_main(info: Tuple[str, str]) -> None:
    """Import the caller's main script as ``__mp_main__`` (and ``__main__``), with the
    name ``__mp_main__``, so that its guarded part does not run; stop quietly where
    an unguarded script would start a pool again (:class:`MainReentry`)."""
    global _importing_main
    import importlib.util
    import types
    kind, value = info
    module = types.ModuleType("__mp_main__")
    if kind == "name":
        spec = importlib.util.find_spec(value)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot find the main module {value!r}")
        code = spec.loader.get_code(value)  # type: ignore[attr-defined]
        module.__spec__ = spec
        module.__file__ = spec.origin
        module.__package__ = value.rpartition(".")[0]
        module.__loader__ = spec.loader
    else:
        with open(value, "rb") as f:
            source = f.read()
        code = compile(source, value, "exec")
        module.__file__ = value
    module.__builtins__ = __builtins__  # type: ignore[attr-defined]
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module
    _importing_main = True
    try:
        exec(code, module.__dict__)
    except MainReentry:
        pass
    finally:
        _importing_main = False


def rebind_main(obj: Any) -> Any:
    """A function sent by value from the caller's ``__main__`` comes with a copy of the
    globals it uses. Give it this worker's ``__main__`` as its globals instead, adding
    the names it lacks and replacing those the caller changed since the pool started
    (``MainValue.fresh``), so that it sees what the initializer set and what the
    caller has now, and classes it makes pickle by name back to the caller's own."""
    fresh: frozenset = frozenset()
    if isinstance(obj, serialize.MainValue):
        obj, fresh = obj.obj, obj.fresh
    main = sys.modules.get("__main__")
    if main is None:
        return obj
    if type(obj) is list:   # tasks: the classes of their own
        _adopt_main_classes(obj, fresh)
        return obj
    memo: Dict[int, Any] = {}
    if type(obj) is tuple:  # (initializer, initargs)
        return tuple(_rebind(item, vars(main), memo, fresh) for item in obj)
    return _rebind(obj, vars(main), memo, fresh)


def _rebind(obj: Any, target: Dict[str, Any], memo: Dict[int, Any],
            fresh: frozenset) -> Any:
    import functools
    import types
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, types.FunctionType):
        found = obj.__globals__
        if found is target or found.get("__name__") not in ("__main__", "__mp_main__"):
            return obj
        new = types.FunctionType(obj.__code__, target, obj.__name__, obj.__defaults__,
                                 obj.__closure__)
        new.__kwdefaults__ = obj.__kwdefaults__
        new.__qualname__ = obj.__qualname__
        new.__module__ = obj.__module__
        new.__doc__ = obj.__doc__
        new.__dict__.update(obj.__dict__)
        memo[id(obj)] = new
        if new.__name__ in fresh or new.__name__ not in target:
            target[new.__name__] = new
        for name, value in found.items():
            if not name.startswith("__") and (name not in target or name in fresh):
                target[name] = _rebind(value, target, memo, fresh)
        return new
    if isinstance(obj, type):
        if getattr(obj, "__module__", None) == "__main__" and "." not in obj.__qualname__:
            if obj.__qualname__ in fresh or obj.__qualname__ not in target:
                target[obj.__qualname__] = obj
        return obj
    if isinstance(obj, functools.partial):
        inner = _rebind(obj.func, target, memo, fresh)
        if inner is obj.func:
            return obj
        return functools.partial(inner, *obj.args, **(obj.keywords or {}))
    rebind = getattr(type(obj), "_rebind_main", None)   # our wrappers: _Star, add_progress...
    if rebind is not None:
        memo[id(obj)] = obj
        rebind(obj, lambda inner: _rebind(inner, target, memo, fresh))
    return obj


def _adopt_main_classes(items: List[Any], fresh: frozenset = frozenset()) -> None:
    main = sys.modules.get("__main__")
    if main is None:
        return
    target = vars(main)
    for kind in {type(item) for item in items}:
        if getattr(kind, "__module__", None) == "__main__" and "." not in kind.__qualname__:
            if kind.__qualname__ in fresh or kind.__qualname__ not in target:
                target[kind.__qualname__] = kind


def _silence_sigint() -> None:
    """Ctrl-C is the parent's business: it kills us. Workers start with SIGINT
    blocked (the parent's starting thread blocks it), so none slips in before this."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _own_process_group() -> None:
    """Lead a process group, so that killing this worker also kills what its tasks
    started (the parent signals the whole group)."""
    try:
        if os.getpgid(0) != os.getpid():
            os.setpgid(0, 0)
    except (AttributeError, OSError):
        pass


def _take_policy(policy: Optional[int]) -> None:
    """Run with the scheduling policy of the thread that made the pool, not the one
    inherited from the thread of ours that started this process."""
    try:
        if policy is not None and os.sched_getscheduler(0) != policy:  # type: ignore
            os.sched_setscheduler(0, policy, os.sched_param(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        pass


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
            errors[start + i] = outcomes.pack_exception(SerializationError(
                f"the task returned a {serialize.describe(value)}, which cannot be sent back to "
                f"the main process by pickle or dill ({type(first).__name__}: {first})"))
    return pickle.dumps(values, serialize.PROTOCOL), dilled, errors


def _inner_blob() -> Optional[bytes]:
    """The arguments of add_progress calls that failed since the last report, pickled."""
    failures = take_inner_failures()
    if not failures:
        return None
    try:
        return pickle.dumps(failures, serialize.PROTOCOL)
    except Exception:
        return pickle.dumps([repr(f) for f in failures], serialize.PROTOCOL)


def zygote_main(index: int, task_fd: int, result_fd: int, slots: Any, setup: WorkerSetup
                ) -> None:
    """Entry point of a worker the zygote forked (see :mod:`.zygote`)."""
    from multiprocessing.connection import Connection
    process_main(Connection(task_fd, writable=False), Connection(result_fd, readable=False),
                 slots, index, setup)


def process_main(task_conn: Any, result_conn: Any, slots: Any, index: int,
                 setup: WorkerSetup) -> None:
    """Entry point of a worker process."""
    _silence_sigint()
    _own_process_group()
    _take_policy(setup.policy)
    if setup.watch_parent:
        _watch_parent()
    view = memoryview(slots).cast("B").cast("d")
    base = index * SLOT_WIDTH
    _local.slot = (view, base)
    _local.inner_failures = []
    send = serialize.send_message

    def message(*fields: Any, tail: Any = b"") -> None:
        send(result_conn, fields, tail)

    try:
        if setup.main is not None:
            try:
                import_main(setup.main)
            except BaseException as exc:
                raise _MainImportError(setup.main[1], exc) from exc
        if setup.init is not None:
            if isinstance(setup.init, bytes):
                initializer, initargs = rebind_main(serialize.loads(setup.init))
            else:
                initializer, initargs = setup.init
            initializer(*initargs)
    except BaseException as exc:
        message("init_error", pack_exception(exc, check_pickle=True))
        return
    message("ready", os.getpid())

    counted = _Counted(view, base)

    def report(run_id: int, start: int, values: List[Any],
               errors: Optional[Dict[int, Packed]], busy: float,
               durs: Optional[List[float]]) -> None:
        encoding = monotonic()
        data, dilled, errors = _encode_values(values, start, errors)
        busy += monotonic() - encoding
        message("r", run_id, start, len(values), errors, busy, _inner_blob(),
                None, dilled, durs, counted.since_last(), tail=data)

    funcs: Dict[int, Tuple[Callable[[Any], Any], bool, bool]] = {}
    waiting: Dict[int, List[Any]] = {}   # run id -> its chunks, while its function is re-sent
    loads = serialize.loads
    recv = serialize.recv_message

    def run(msg: Any) -> None:
        entry = funcs.get(msg[1])
        if entry is None:
            if msg[1] in waiting:
                waiting[msg[1]].append(msg)
            return  # else its function failed to load for good; already reported
        decoding = monotonic()
        if msg[0] == "ci":   # positions in the tasks this process inherited (Run.inherited)
            _, run_id, start, n, key, lo = msg
            items = setup.preloaded[key][lo:lo + n]
            if len(items) == n:
                run_chunk(entry[0], run_id, start, items, view, base, entry[1], report, True,
                          entry[2], decoding)
            else:   # the caller's list changed length since the fork: by value, please
                message("bad", run_id, start, n, pack_exception(IndexError(
                    f"tasks {lo}..{lo + n - 1} asked; this worker's copy of the tasks holds "
                    f"{len(setup.preloaded[key])}"), check_pickle=True), False)
            return
        _, run_id, start, n, items_bytes = msg
        try:
            items = loads(items_bytes)
            if serialize.is_by_value(items_bytes):  # sent by value: their classes too
                items = rebind_main(items)
        except BaseException as exc:
            message("bad", run_id, start, n, pack_exception(exc, check_pickle=True),
                    serialize.is_by_value(items_bytes))
            return
        run_chunk(entry[0], run_id, start, items, view, base, entry[1], report, True, entry[2],
                  decoding)

    while True:
        try:
            msg, tail = recv(task_conn)
        except (EOFError, OSError):
            return
        kind = msg[0]
        if kind == "c":
            run(msg + (tail,))
        elif kind == "ci":
            run(msg)
        elif kind == "f":
            _, run_id, payload, timing, durations = msg
            try:
                if isinstance(payload, int):
                    func = setup.preloaded[payload]
                else:
                    func = rebind_main(loads(payload))
            except BaseException as exc:
                # By name it may not resolve here (defined under the script's main guard,
                # say): the parent sends it again by value. By value, it is final.
                again = isinstance(payload, bytes) and not serialize.is_by_value(payload)
                message("func_error", run_id, pack_exception(exc, check_pickle=True), again)
                if again:
                    waiting.setdefault(run_id, [])
                else:
                    waiting.pop(run_id, None)
                continue
            funcs[run_id] = (func, timing, durations)
            for queued in waiting.pop(run_id, []):
                run(queued)
        elif kind == "d":
            funcs.pop(msg[1], None)
            waiting.pop(msg[1], None)
        else:
            return


class _MainImportError(Exception):
    def __init__(self, path: str, exc: BaseException) -> None:
        super().__init__(f"the worker could not import the main script {path!r}, as spawn and "
                         f"forkserver workers do ({type(exc).__name__}: {exc}); put the code that "
                         f"starts the pool under `if __name__ == '__main__':`")


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
    counted = _Counted(slot, 0)

    def report(run_id: int, start: int, values: List[Any],
               errors: Optional[Dict[int, Packed]], busy: float,
               durs: Optional[List[float]]) -> None:
        if not slot.abandoned:
            outbox.put((handle, ("r", run_id, start, len(values), errors, busy,
                                 take_inner_failures(), values, False, durs,
                                 counted.since_last())))

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
