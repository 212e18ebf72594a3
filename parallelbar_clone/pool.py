"""Parent side: ProgressPool and the manager thread that runs it.

Who runs what, and which channel carries which message::

    caller thread                manager thread (one per pool)            workers
    -------------                -----------------------------            -------
    map()/imap() ---commands---> admit run, pull input in chunks  --task pipe--> process_main()
          ^      (SimpleQueue    dispatch (<= WINDOW chunks each)              run_chunk()
          |       + wake pipe)   collect pieces        <--result pipe--  writes its status
          |                      reap dead workers (sentinels)                slot in shared
          +-----run.out----------enforce deadlines / memory (slots)            memory
                (pieces of       respawn
                 results)            |
                                     +--bar events--> bar thread (owns tqdm)

Only the manager thread touches workers and run state; the caller thread reads
``run.out`` and bumps ``run.consumed``; the bar thread only draws. The manager
waits on every result pipe and every worker's sentinel at once
(``multiprocessing.connection.wait``), so a worker that dies is seen at once,
with its exit code, and only the task it was running fails.

Guards (``process_timeout``, ``memory_limit``) are enforced here, from the
parent: a worker past its deadline or its memory budget is terminated (then
killed after ``KILL_GRACE``), its task's slot gets the error, the tasks it had
not finished go back to the front of the queue, and a new worker starts.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import pickle
import operator
import os
import queue
import signal
import threading
import weakref
from collections import deque
from time import monotonic
from typing import (Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple)

from . import serialize
from .backends import ProcessBackend, ThreadBackend, Worker, _func_name, rss_supported
from .bar import UPDATE_INTERVAL, BarThread
from .errors import (InitializerError, MemoryLimitError, ParallelBarError, RemoteTraceback,
                     RunTimeoutError, SerializationError, TaskTimeoutError, WorkerDiedError,
                     describe_death)
from .journal import CheckpointMismatchError, Journal
from .options import Options, check_func
from .worker import MainReentry, importing_main
from .zygote import FORK_GATE

log = logging.getLogger("parallelbar_clone")

__all__ = ["ProgressPool"]

WINDOW = 2                      # chunks in flight per worker: one running, one queued...
PREFETCH_SECONDS = 0.05         # ...but only behind a chunk measured to take less than this,
PREFETCH_TASK = 0.001           # of tasks this short (where a round trip matters), and not
                                # overdue: work queued behind a slow task waits for it
PREFETCH_BYTES = 16384 if os.name == "posix" else 4096  # never fills a pipe: sends can't block
TARGET_CHUNK_SECONDS = 0.025    # adaptive chunks aim at this much work each
MAX_CHUNK = 100_000
KILL_GRACE = 0.3                # SIGTERM, then SIGKILL after this long
STARTUP_DEATHS = 3              # consecutive workers dying before 'ready' => broken pool
UNBLAMED_DEATHS = 5             # consecutive deaths outside any task => broken pool
IDLE_TICK = 0.1
GUARD_TICK = 0.02
MEMORY_TICK = 0.01


def _guess_total(tasks: Any, total: Optional[int]) -> Optional[int]:
    if total is not None:
        return total
    try:
        return len(tasks)
    except (TypeError, AttributeError):
        pass
    try:
        hint = operator.length_hint(tasks, -1)
    except Exception:
        hint = -1
    return hint if hint > 0 else None


def _canonical(obj: Any) -> Any:
    """obj with every set replaced by its sorted elements, so that equal tasks pickle to
    equal bytes in every process (set order follows string hashes, which differ from
    one interpreter to the next). Containers are walked; other objects are kept."""
    kind = type(obj)
    if kind is set or kind is frozenset:
        return ("<set>", sorted(pickle.dumps(_canonical(e), 4) for e in obj))
    if kind is list:
        return [_canonical(e) for e in obj]
    if kind is tuple:
        return tuple(_canonical(e) for e in obj)
    if kind is dict:
        return ("<dict>", [(_canonical(k), _canonical(v)) for k, v in obj.items()])
    return obj


def task_digest(items: List[Any], canonical: bool = False) -> Optional[str]:
    """A short digest of tasks' content; None if they cannot be pickled.

    Set order follows string hashes, which differ between interpreters, so a task
    holding a set of strings can digest differently in another process unless
    ``canonical`` (slower) is asked for: see ``_has_sets``."""
    try:
        data = pickle.dumps(_canonical(items) if canonical else items, serialize.PROTOCOL)
    except Exception:
        return None
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _has_sets(obj: Any, depth: int = 6) -> bool:
    kind = type(obj)
    if kind is set or kind is frozenset:
        return True
    if depth == 0:
        return False
    if kind is list or kind is tuple:
        return any(_has_sets(e, depth - 1) for e in obj)
    if kind is dict:
        return any(_has_sets(k, depth - 1) or _has_sets(v, depth - 1) for k, v in obj.items())
    state = getattr(obj, "__dict__", None)
    return isinstance(state, dict) and _has_sets(state, depth - 1)


def _qualified_name(func: Any) -> str:
    inner = getattr(func, "func", func)  # _Star, functools.partial
    inner = getattr(inner, "__wrapped__", inner)
    module = getattr(inner, "__module__", None) or "?"
    return f"{module}.{getattr(inner, '__qualname__', _func_name(inner))}"


def _unpack_error(packed: Tuple[BaseException, str]) -> BaseException:
    exc, tb = packed
    if tb:
        try:
            exc.traceback = tb  # type: ignore[attr-defined]
        except Exception:
            pass
        exc.__cause__ = RemoteTraceback(tb)
    return exc


class _Chunk:
    __slots__ = ("run", "start", "items", "nbytes", "done", "end", "payload", "digest",
                 "sent_at")

    def __init__(self, run: "_Run", start: int, items: List[Any]) -> None:
        self.run = run
        self.start = start
        self.items = items
        self.done = start            # first position not yet reported
        self.end = start + len(items)
        self.nbytes = 0
        self.payload: Any = None
        self.digest: Optional[str] = None   # of the pickled tasks, when a journal wants it
        self.sent_at = 0.0


class _Run:
    """State of one map/imap call, owned by the manager thread."""

    _ids = itertools.count(1)

    def __init__(self, func: Callable[[Any], Any], tasks: Iterable[Any], opts: Options,
                 mode: str, workers: int) -> None:
        self.id = next(self._ids)
        self.func = func
        self.name = _func_name(func)
        self.opts = opts
        self.mode = mode                     # 'map', 'imap', 'imapu'
        self.total = _guess_total(tasks, opts.total)
        self.it = iter(tasks)
        self.taken = 0                       # positions pulled from the input
        self.exhausted = False
        self.finished = 0                    # positions with a final outcome
        self.requeue: Deque[Tuple[int, List[Any]]] = deque()
        self.parked: Optional[_Chunk] = None  # encoded, waiting for a worker able to take it
        self.out: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self.consumed = 0                    # bumped by the caller thread
        self.cap: Optional[int] = None if mode == "map" else 1024
        self.workers = workers
        self.timing = opts.process_timeout is not None or opts.memory_limit is not None
        self.deadline = monotonic() + opts.timeout if opts.timeout is not None else None
        self.state = "new"                   # new -> active -> done | failed
        self.payload: Any = None             # the function, serialized once per run
        self.payload_by_value = False        # re-sent by value after a worker failed by name
        self.items_by_value = False          # tasks by value after a worker failed by name
        self.per_task: Optional[float] = None  # measured seconds per task (EWMA)
        self.last_chunk = 0
        self.bar_done = 0
        self.bar_failed = 0
        self.inner_done = 0                  # calls counted by @add_progress in workers
        self.inner_failed = 0
        self.shown_done = 0                  # what the bars show
        self.shown_failed = 0
        self.bar_flushed = 0.0
        self.bar_closed = threading.Event()
        self.ended = threading.Event()       # workers stopped, journal flushed
        self.inner_failures: List[Any] = []
        # retries
        self.attempts: Dict[int, int] = {}
        self.history: Dict[int, List[str]] = {}
        self.delayed: List[Tuple[float, int, Any]] = []   # heap: (ready at, position, task)
        self.retried = 0
        self.retried_shown = 0
        # checkpoint
        self.journal: Optional[Journal] = None
        self.resume: Dict[int, Tuple[bool, Any]] = {}    # journalled outcomes still to replay
        self.resumed = 0
        self.resumed_failed = 0
        self.resumed_ready: List[Tuple[int, List[Any], Dict[int, BaseException], List[Any]]] = []
        self.verify: Dict[int, Tuple[int, Optional[str]]] = {}  # piece start -> (n, digest)
        self.verifying: Optional[Tuple[int, int, Optional[str], List[Any]]] = None

    # -- chunk sizing -----------------------------------------------------------------
    def chunk_size(self) -> int:
        if self.opts.chunk_size is not None:
            return self.opts.chunk_size
        if self.per_task is None:
            return 1
        size = int(TARGET_CHUNK_SECONDS / max(self.per_task, 1e-9))
        size = min(size, max(1, self.last_chunk) * 8, MAX_CHUNK)
        if self.total is not None:  # keep the tail balanced across workers
            remaining = self.total - self.taken
            size = min(size, max(1, remaining // (2 * self.workers)))
        return max(1, size)

    def observe(self, n: int, busy: float) -> None:
        if n <= 0:
            return
        sample = busy / n
        self.per_task = sample if self.per_task is None else 0.7 * self.per_task + 0.3 * sample

    def take(self, limit: int) -> Optional[Tuple[int, List[Any]]]:
        """The next (start, items) to dispatch, at most ``limit`` items, or None.

        Positions the checkpoint journal already has are not returned: their
        outcomes are queued on ``resumed_ready`` for the manager to deliver."""
        limit = max(1, min(limit, self.chunk_size()))
        while True:
            if self.requeue:
                start, items = self.requeue.popleft()
                if len(items) > limit:
                    self.requeue.appendleft((start + limit, items[limit:]))
                    items = items[:limit]
                return start, items
            if self.exhausted:
                return None
            if self.cap is not None and self.taken - self.consumed >= self.cap:
                return None
            replaying = bool(self.resume or self.verifying or self.verify)
            size = max(limit, 4096) if replaying else limit
            items = list(itertools.islice(self.it, size))
            if len(items) < size:
                self.exhausted = True
                if not items:
                    return None
            start = self.taken
            self.taken += len(items)
            if self.cap is not None:
                self.cap = max(self.cap, 4 * WINDOW * self.workers * len(items))
            if not replaying:
                self.last_chunk = len(items)
                return start, items
            self._replay(start, items)

    def _replay(self, start: int, items: List[Any]) -> None:
        """Split freshly pulled tasks into journalled outcomes and tasks still to run."""
        todo: List[Tuple[int, List[Any]]] = []
        for offset, item in enumerate(items):
            pos = start + offset
            if self.verify or self.verifying:
                self._check_content(pos, item)
            outcome = self.resume.pop(pos, None)
            if outcome is None:
                if todo and todo[-1][0] + len(todo[-1][1]) == pos:
                    todo[-1][1].append(item)
                else:
                    todo.append((pos, [item]))
                continue
            ok, value = outcome
            last = self.resumed_ready[-1] if self.resumed_ready else None
            if last is None or last[0] + len(last[1]) != pos:
                last = (pos, [], {}, [])
                self.resumed_ready.append(last)
            last[1].append(value if ok else None)
            last[3].append(item)
            if not ok:
                last[2][pos] = value
        self.requeue.extend(todo)

    def _check_content(self, pos: int, item: Any) -> None:
        if self.verifying is None and pos in self.verify:
            n, digest = self.verify.pop(pos)
            self.verifying = (pos, n, digest, [])
        if self.verifying is None:
            return
        first, n, digest, seen = self.verifying
        seen.append(item)
        if len(seen) < n:
            return
        self.verifying = None
        if digest is None or task_digest(seen) in (digest, None):
            return
        if _has_sets(seen):  # their pickled order may differ from the writer's: can't tell
            log.warning("tasks %d..%d hold sets; their content cannot be compared with the "
                        "checkpoint's", first, first + n - 1)
        else:
            path = self.journal.path if self.journal is not None else "?"
            raise CheckpointMismatchError(
                f"checkpoint {path!r} was written for other tasks: tasks {first}..{first + n - 1}"
                f" differ from the ones it journalled (the input changed). Pass "
                f"overwrite_checkpoint=True to start afresh, or a new checkpoint path")

    def release_retries(self, now: float) -> None:
        while self.delayed and self.delayed[0][0] <= now:
            _, pos, item = heapq.heappop(self.delayed)
            self.requeue.appendleft((pos, [item]))

    def has_work(self) -> bool:
        return self.parked is not None or bool(self.requeue) or not self.exhausted

    def complete(self) -> bool:
        return (self.exhausted and self.parked is None and not self.requeue
                and not self.delayed and self.finished == self.taken)


# ================================================================= the pool

class ProgressPool:
    """A pool of workers with live progress bars, that survives its tasks.

    Use it as a context manager to keep workers across calls::

        with ProgressPool(n_cpu=4, process_timeout=10) as pool:
            squares = pool.map(square, range(1000))
            for row in pool.imap(parse, open("big.csv")):   # lazy, bounded memory
                ...

    Keyword arguments are the fields of :class:`~parallelbar_clone.options.Options`;
    ``n_cpu``, ``executor``, ``context``, ``initializer``, ``initargs`` and
    ``maxtasksperchild`` fix the workers, the rest are defaults that each call may
    override with the same keywords.
    """

    def __init__(self, n_cpu: Optional[int] = None, **options: Any) -> None:
        preload = options.pop("_preload", ())
        self._options = Options(n_cpu=n_cpu, **options)
        if importing_main():
            # A worker is importing a script that starts a pool outside an
            # `if __name__ == '__main__':` guard: stop the import here (see import_main).
            raise MainReentry()
        self._workers_wanted = self._options.workers
        self._backend: Any = (ThreadBackend(self._options)
                              if self._options.executor == "threads"
                              else ProcessBackend(self._options, preload))
        self._commands: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._runs: Dict[int, _Run] = {}
        self._workers: List[Worker] = []
        self._dying: List[Worker] = []
        self._free_slots = list(range(getattr(self._backend, 'slots_count',
                                              self._workers_wanted)))
        self._broken: Optional[BaseException] = None
        self._closing: Optional[str] = None
        self._startup_deaths = 0
        self._unblamed_deaths = 0
        self._inner_read = 0.0
        self._bars: Optional[BarThread] = None
        self._bars_lock = threading.Lock()
        self._closed = threading.Event()
        self._manager = threading.Thread(target=self._manage, name="parallelbar-manager",
                                         daemon=True)
        self._manager.start()
        _LIVE_POOLS.add(self)

    # ------------------------------------------------------------------ public API
    def map(self, func: Callable[[Any], Any], tasks: Iterable[Any], **options: Any) -> Any:
        """Apply ``func`` to every task; a list in task order (see ``progress_map``)."""
        return self._collect(self._submit(func, tasks, "map", options))

    def starmap(self, func: Callable[..., Any], tasks: Iterable[Iterable[Any]],
                **options: Any) -> Any:
        """Like :meth:`map`, calling ``func(*task)``."""
        return self.map(_Star(func), tasks, **options)

    def imap(self, func: Callable[[Any], Any], tasks: Iterable[Any],
             **options: Any) -> "ResultIterator":
        """A lazy iterator of results in task order. Input is pulled as results are
        consumed, so an endless generator streams in bounded memory."""
        return ResultIterator(self, self._submit(func, tasks, "imap", options), ordered=True)

    def imap_unordered(self, func: Callable[[Any], Any], tasks: Iterable[Any],
                       **options: Any) -> "ResultIterator":
        """Like :meth:`imap`, yielding results as they complete."""
        return ResultIterator(self, self._submit(func, tasks, "imapu", options), ordered=False)

    def close(self) -> None:
        """Stop the workers once they are idle and wait for them (cancels unfinished runs)."""
        self._shutdown("close")

    def terminate(self) -> None:
        """Kill the workers now."""
        self._shutdown("terminate")

    def __enter__(self) -> "ProgressPool":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self._shutdown("terminate" if exc_type is not None else "close")

    # ------------------------------------------------------------------ caller side
    def _submit(self, func: Callable[[Any], Any], tasks: Iterable[Any], mode: str,
                options: Dict[str, Any]) -> _Run:
        opts = self._options.with_call(**options)
        check_func(func)
        try:
            iter(tasks)
        except TypeError:
            raise TypeError(f"tasks must be iterable, got {type(tasks).__name__} {tasks!r}"
                            ) from None
        if opts.memory_limit is not None and not rss_supported():
            raise ValueError("memory_limit needs /proc (Linux) or the psutil package: "
                             "pip install 'parallelbar_clone[memory]'")
        if self._broken is not None:
            raise self._broken
        if self._closing is not None:
            raise ValueError("this ProgressPool is closed")
        run = _Run(func, tasks, opts, mode, self._workers_wanted)
        if isinstance(self._backend, ProcessBackend):
            try:
                run.payload = self._backend.function_payload(func)
            except Exception as exc:
                raise SerializationError(
                    f"function {run.name} cannot be sent to a worker process by pickle or dill: "
                    f"{exc}") from exc
        if opts.checkpoint is not None:
            self._open_journal(run, tasks)
        if not opts.disable:
            postfix = f"resumed={run.resumed}" if run.resumed else None
            self._bar_thread().send(("open", run.id, run.total, "DONE", run.resumed, postfix))
            if run.resumed_failed:
                self._bar_thread().send(("update", run.id, 0, run.resumed_failed, None))
        self._commands.put(("submit", run))
        self._backend.wake()
        return run

    def _open_journal(self, run: _Run, tasks: Iterable[Any]) -> None:
        """Open (or create) the run's journal; load what it already holds."""
        head = list(itertools.islice(run.it, 100))
        run.it = itertools.chain(head, run.it)
        fingerprint = {"function": _qualified_name(run.func), "total": run.total,
                       "first_tasks_digest": task_digest(head, canonical=True)}
        run.journal = Journal(run.opts.checkpoint, fingerprint,
                              overwrite=run.opts.overwrite_checkpoint, background=True)
        try:
            for piece in run.journal.pieces():
                if piece.digest is not None and not any(
                        s <= piece.start < s + n for s, (n, _) in run.verify.items()):
                    run.verify[piece.start] = (len(piece.values), piece.digest)
                for i, value in enumerate(piece.values):
                    pos = piece.start + i
                    failure = piece.failures.get(pos)
                    run.resume[pos] = (False, failure) if failure is not None else (True, value)
        except BaseException:
            run.journal.close()
            raise
        if not run.opts.keep_failures:
            run.resume = {p: o for p, o in run.resume.items() if o[0]}
        run.resumed_failed = sum(1 for ok, _ in run.resume.values() if not ok)
        run.resumed = len(run.resume) - run.resumed_failed
        if run.resume:
            log.info("resuming from %s: %d tasks already done", run.opts.checkpoint,
                     len(run.resume))

    def _bar_thread(self) -> BarThread:
        with self._bars_lock:
            if self._bars is None:
                self._bars = BarThread()
            return self._bars

    def _cancel(self, run: _Run, wait: bool = True) -> None:
        """End a run early; by default wait till its workers are stopped and its
        journal flushed."""
        self._commands.put(("cancel", run))
        self._backend.wake()
        if wait and threading.current_thread() is not self._manager:
            run.ended.wait(10.0)

    def _wait_bar(self, run: _Run) -> None:
        if not run.opts.disable:
            run.bar_closed.wait(2.0)

    def _collect(self, run: _Run) -> Any:
        """Gather a whole run into a list (map, and the list-returning functions)."""
        results: List[Any] = []
        failed: Dict[int, Any] = {}
        failed_positions: List[int] = []
        in_order = run.mode != "imapu"
        ok = False
        try:
            for start, values, errors, items in _pieces(run):
                if in_order:
                    end = start + len(values)
                    if end > len(results):
                        results.extend([None] * (end - len(results)))
                    results[start:end] = values
                else:
                    base = len(results)
                    results.extend(values)
                if errors:
                    for pos, exc in errors.items():
                        index = pos if in_order else base + pos - start
                        results[index] = _coerced(run.opts, exc)
                        failed_positions.append(index)
                        if items is not None:
                            failed[index] = items.get(pos)
                run.consumed += len(values)
            ok = True
        finally:
            if not ok:
                self._cancel(run)
            self._wait_bar(run)
        if run.opts.error_behavior == "ignore" and failed_positions:
            drop = set(failed_positions)
            results = [r for i, r in enumerate(results) if i not in drop]
        if run.opts.return_failed_tasks:
            failed_tasks = [failed[i] for i in sorted(failed)] + run.inner_failures
            return results, failed_tasks
        return results

    def _shutdown(self, how: str) -> None:
        if self._closing is None or how == "terminate":
            self._closing = how
        self._backend.wake()
        self._commands.put(("shutdown", how))
        self._backend.wake()
        if threading.current_thread() is not self._manager:
            self._closed.wait(10.0)
            self._manager.join(2.0)
        if self._bars is not None:
            self._bars.stop()
        _LIVE_POOLS.discard(self)

    # ------------------------------------------------------------------ manager thread
    def _manage(self) -> None:
        FORK_GATE.register()
        if hasattr(signal, "pthread_sigmask"):
            # Workers inherit this thread's signal mask: SIGINT stays blocked in them until
            # they ignore it, so Ctrl-C reaches only the main process.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self._loop()
        except BaseException as exc:  # a bug here must not become a hang
            log.exception("parallelbar_clone manager thread failed")
            err = ParallelBarError(f"internal error in the pool manager: {exc!r}")
            err.__cause__ = exc
            self._broken = err
            for run in list(self._runs.values()):
                self._fail_run(run, err)
            self._kill_all()
        finally:
            with FORK_GATE.working():
                self._backend.close()
            FORK_GATE.unregister()
            self._closed.set()

    def _loop(self) -> None:
        # Work is done under FORK_GATE.working(): a new pool's zygote is forked only while
        # this thread waits in backend.wait, holding no lock.
        while True:
            with FORK_GATE.working():
                self._read_commands()
                if self._closing == "terminate" or (self._closing == "close" and not self._runs):
                    self._stop_workers(graceful=self._closing == "close")
                    return
                if self._broken is None:
                    self._ensure_workers()
                    self._dispatch()
                tick = self._tick()
            events = self._backend.wait(self._workers, self._dying, tick)
            with FORK_GATE.working():
                for w, msg in events:
                    if msg is None:
                        self._on_exit(w)
                    elif not w.dead:
                        self._on_message(w, msg)
                for w in [w for w in self._workers if w.retiring and not w.inflight]:
                    self._retire(w)
                now = monotonic()
                self._check_guards(now)
                self._flush_bars(now)

    def _tick(self) -> float:
        tick = IDLE_TICK
        now = monotonic()
        for run in self._runs.values():
            if run.delayed:
                tick = min(tick, max(0.001, run.delayed[0][0] - now))
            if run.opts.memory_limit is not None:
                tick = min(tick, MEMORY_TICK)
            elif run.opts.process_timeout is not None:
                tick = min(tick, GUARD_TICK, run.opts.process_timeout / 4)
        if self._dying:
            tick = min(tick, GUARD_TICK)
        return tick

    def _read_commands(self) -> None:
        while True:
            try:
                kind, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "submit":
                if self._broken is not None:
                    self._fail_run(arg, self._broken)
                    continue
                arg.state = "active"
                self._runs[arg.id] = arg
                if arg.complete():
                    self._finish_run(arg)
            elif kind == "cancel":
                if arg.id in self._runs:
                    self._end_run(arg, "failed")
            elif kind == "shutdown":
                if self._closing is None or arg == "terminate":
                    self._closing = arg

    # -- workers --------------------------------------------------------------------
    def _ensure_workers(self) -> None:
        while len([w for w in self._workers if not w.retiring]) < self._workers_wanted \
                and self._free_slots:
            w = Worker(self._free_slots.pop(0))
            w.tasks_left = self._options.maxtasksperchild
            try:
                self._backend.start(w)
            except Exception as exc:
                self._free_slots.insert(0, w.index)
                self._break(ParallelBarError(f"could not start a worker: {exc}"), exc)
                return
            self._workers.append(w)

    def _retire(self, w: Worker) -> None:
        """Stop an idle worker (maxtasksperchild reached); its slot is reused."""
        self._backend.stop(w)
        self._workers.remove(w)
        self._free_slot(w)  # it is idle: it will not write its slot again
        w.dead = True
        w.killed_at = monotonic()
        self._dying.append(w)

    def _stop_workers(self, graceful: bool) -> None:
        for run in list(self._runs.values()):
            self._fail_run(run, ParallelBarError("the pool was shut down before this run ended"))
        if graceful:
            for w in self._workers:
                self._backend.stop(w)
            deadline = monotonic() + 1.0
            for w in self._workers:
                if isinstance(self._backend, ProcessBackend):
                    w.proc.join(max(0.0, deadline - monotonic()))  # type: ignore[attr-defined]
        self._kill_all()

    def _kill_all(self) -> None:
        everyone = self._workers + self._dying
        for w in everyone:
            if self._backend.alive(w):
                self._backend.kill(w)
        if isinstance(self._backend, ProcessBackend):
            deadline = monotonic() + KILL_GRACE
            for w in everyone:
                w.proc.join(max(0.0, deadline - monotonic()))  # type: ignore[attr-defined]
            for w in everyone:
                if self._backend.alive(w):
                    self._backend.force_kill(w)
                    w.proc.join(1.0)  # type: ignore[attr-defined]
        for w in everyone:
            self._backend.release(w)
        self._workers = []
        self._dying = []

    def _break(self, err: BaseException, cause: Optional[BaseException] = None) -> None:
        if cause is not None and err.__cause__ is None:
            err.__cause__ = cause
        self._broken = err
        for run in list(self._runs.values()):
            self._fail_run(run, err)

    # -- dispatch -------------------------------------------------------------------
    def _dispatch(self) -> None:
        if not self._runs:
            return
        for depth in range(1, WINDOW + 1):
            for w in list(self._workers):
                if w.retiring or w.dead or len(w.inflight) >= depth:
                    continue
                if w.inflight and not self._short(w):
                    continue
                if not self._dispatch_one(w):
                    if not any(r.has_work() for r in self._runs.values()):
                        return

    def _next_chunk(self, run: _Run, limit: int) -> Optional[_Chunk]:
        """Take and encode the run's next chunk; None when it has none to give now.
        Tasks that cannot be sent are split, then failed one by one, on the way."""
        while run.state == "active":
            try:
                got = run.take(limit)
            except BaseException as exc:  # the caller's input iterator raised
                self._fail_run(run, exc)
                return None
            while run.resumed_ready and run.state == "active":
                start, values, failures, items = run.resumed_ready.pop(0)
                self._deliver(run, start, values, failures, items, resumed=True)
            if got is None:
                if run.complete():
                    self._finish_run(run)
                return None
            chunk = _Chunk(run, *got)
            try:
                self._backend.encode_chunk(chunk, run)
            except Exception as exc:
                self._unsendable(run, chunk, exc)
                continue
            return chunk
        return None

    @staticmethod
    def _short(w: Worker) -> bool:
        """May w get its next chunk before it finishes this one? Only if the running
        chunk is measured to be short and is not taking longer than it should."""
        chunk = w.inflight[0]
        per_task = chunk.run.per_task
        if per_task is None or per_task > PREFETCH_TASK or not w.chunks_done:
            return False  # (a worker's first chunk may be the one slow task at the head)
        expected = per_task * (chunk.end - chunk.start)
        began = max(chunk.sent_at, w.last_heard)  # the earliest it can have started
        return expected < PREFETCH_SECONDS and monotonic() - began < 2 * expected + 0.001

    def _dispatch_one(self, w: Worker) -> bool:
        limit = MAX_CHUNK if w.tasks_left is None else w.tasks_left
        for run in list(self._runs.values()):
            if run.delayed:
                run.release_retries(monotonic())
            if run.state != "active" or not run.has_work():
                continue
            chunk, run.parked = run.parked, None
            if chunk is not None and len(chunk.items) > limit:  # w is near maxtasksperchild
                run.requeue.appendleft((chunk.start, chunk.items))
                chunk = None
            if chunk is None:
                chunk = self._next_chunk(run, limit)
                if chunk is None:
                    continue
            extra = len(run.payload) if isinstance(run.payload, bytes) and run.id not in w.runs \
                else 0
            idle = w.ready and not w.inflight
            if not idle and w.unread() + chunk.nbytes + extra > PREFETCH_BYTES:
                run.parked = chunk  # for the next worker that can take it, already pickled
                return False
            if not self._backend.send_chunk(w, chunk, run):
                run.parked = chunk
                return False
            chunk.nbytes += extra
            chunk.sent_at = monotonic()
            w.inflight.append(chunk)
            if w.tasks_left is not None:
                w.tasks_left -= len(chunk.items)
                if w.tasks_left <= 0:
                    w.retiring = True
            return True
        return False

    def _unsendable(self, run: _Run, chunk: _Chunk, exc: BaseException) -> None:
        """Tasks that neither pickle nor dill can send: split till each bad one fails alone."""
        if len(chunk.items) > 1:
            for i in reversed(range(len(chunk.items))):
                run.requeue.appendleft((chunk.start + i, [chunk.items[i]]))
            return
        item = chunk.items[0]
        err = SerializationError(f"task {chunk.start} ({serialize.describe(item)}) cannot be "
                                 f"sent to a worker process by pickle or dill: {exc}")
        err.__cause__ = exc
        self._deliver(run, chunk.start, [None], {chunk.start: err}, chunk.items)

    # -- messages -------------------------------------------------------------------
    def _on_message(self, w: Worker, msg: Any) -> None:
        kind = msg[0]
        w.last_heard = monotonic()
        if kind == "r":
            self._on_results(w, msg)
        elif kind == "ready":
            w.ready = True
            self._startup_deaths = 0
            rss = self._backend.rss(w)
            w.baseline_rss = rss or 0
        elif kind == "init_error":
            exc = _unpack_error(msg[1])
            name = _func_name(self._options.initializer)
            err = InitializerError(f"initializer {name} raised {serialize.describe(exc)}: {exc} "
                                   f"(in worker pid {w.pid}); no task can run")
            self._break(err, exc)
        elif kind == "bad":
            _, run_id, start, n, packed, by_value = msg
            chunk = self._pop_chunk(w, start)
            run = self._runs.get(run_id)
            if run is None or chunk is None:
                return
            exc = _unpack_error(packed)
            if not by_value and not run.items_by_value and isinstance(
                    self._backend, ProcessBackend):
                # Something they name was not found over there (a class defined under the
                # script's main guard, say): send this run's tasks by value from now on.
                log.info("tasks of %s could not be loaded by name in a worker (%s: %s); "
                         "sending them by value", run.name, type(exc).__name__, exc)
                run.items_by_value = True
                run.requeue.appendleft((start, chunk.items))
            elif n > 1:
                for i in reversed(range(n)):
                    run.requeue.appendleft((start + i, [chunk.items[i]]))
            else:
                err = SerializationError(f"task {start} could not be unpickled in the worker: "
                                         f"{serialize.describe(exc)}: {exc}")
                err.__cause__ = exc
                self._deliver(run, start, [None], {start: err}, chunk.items)
        elif kind == "func_error":
            run = self._runs.get(msg[1])
            if run is None:
                return
            why = self._send_by_value(w, run) if msg[3] else None
            if why is None and msg[3]:
                return
            exc = _unpack_error(msg[2])
            text = (f"function {run.name} could not be loaded in the worker: "
                    f"{serialize.describe(exc)}: {exc}")
            if why is not None:
                text += (f"; nor can it be sent by value: {serialize.describe(why)}: {why}. "
                         f"Define what it uses where the worker can import it (a module), or "
                         f"use context='fork', whose workers inherit the caller's objects")
            err = SerializationError(text)
            err.__cause__ = exc
            self._fail_run(run, err)

    def _send_by_value(self, w: Worker, run: _Run) -> Optional[BaseException]:
        """A worker could not load the run's function by name: send it by value (dill)
        to that worker, which kept the run's tasks waiting. Else say why not."""
        if not run.payload_by_value:
            try:
                payload = self._backend.function_payload(run.func, force_value=True)
            except Exception as exc:
                return exc
            run.payload, run.payload_by_value = payload, True
            log.info("function %s could not be loaded by name in a worker; sending it by "
                     "value", run.name)
        self._backend.send_function(w, run)   # (if w died meanwhile, its sentinel tells)
        return None

    def _pop_chunk(self, w: Worker, start: int) -> Optional[_Chunk]:
        for chunk in w.inflight:
            if chunk.done == start:
                w.inflight.remove(chunk)
                return chunk
        return None

    def _on_results(self, w: Worker, msg: Any) -> None:
        _, run_id, start, n, errors, busy, inner, data, dilled, durations, counted = msg
        w.reported_done += counted[0]
        w.reported_err += counted[1]
        chunk = w.inflight[0] if w.inflight else None
        if chunk is None or chunk.run.id != run_id or chunk.done != start:
            chunk = next((c for c in w.inflight if c.run.id == run_id and c.done == start), None)
            if chunk is None:
                log.debug("unexpected results from worker %s", w.pid)
                return
        chunk.done = start + n
        if chunk.done >= chunk.end:
            w.inflight.remove(chunk)
            w.chunks_done += 1
        run = chunk.run
        if run.state != "active":
            return
        run.inner_done += counted[0]
        run.inner_failed += counted[1]
        run.observe(n, busy)
        if inner:
            run.inner_failures.extend(inner)
        failures: Dict[int, BaseException] = {}
        if errors:
            failures = {pos: _unpack_error(p) for pos, p in errors.items()}
        pickled = data if isinstance(data, bytes) and not dilled else None
        if isinstance(data, (bytes, bytearray)):
            try:
                values = serialize.pickle.loads(data)
            except Exception as exc:
                values, pickled = [None] * n, None
                for i in range(n):
                    if start + i not in failures:
                        err = SerializationError(
                            f"the result of task {start + i} could not be unpickled in the main "
                            f"process: {serialize.describe(exc)}: {exc}")
                        err.__cause__ = exc
                        failures[start + i] = err
        else:
            values = data
        if dilled:
            for i, value in enumerate(values):
                if isinstance(value, serialize.Dilled):
                    try:
                        values[i] = value.load()
                    except Exception as exc:
                        values[i] = None
                        failures[start + i] = SerializationError(
                            f"the result of task {start + i} could not be loaded by dill in the "
                            f"main process: {exc}")
        whole = start == chunk.start and n == len(chunk.items)
        self._deliver(run, start, values, failures,
                      chunk.items[start - chunk.start:start - chunk.start + n], durations,
                      pickled=pickled,
                      digest=chunk.digest if whole else None)

    def _deliver(self, run: _Run, start: int, values: List[Any],
                 failures: Optional[Dict[int, BaseException]], items: List[Any],
                 durations: Optional[List[float]] = None, resumed: bool = False,
                 pickled: Optional[bytes] = None, digest: Optional[str] = None) -> None:
        """Outcomes of tasks start .. start+len(values)-1: retry, journal, hand over."""
        if run.state != "active":
            return
        if failures and not resumed:
            if run.opts.retries and self._retry(run, start, values, failures, items, durations):
                return  # (pieces with retried positions are delivered in parts)
            for pos, exc in failures.items():
                _note_attempts(exc, run.attempts.get(pos, 0) + 1, run.history.get(pos))
        if run.journal is not None and not resumed:
            try:
                lost = run.journal.add(start, values, failures, durations,
                                       digest or task_digest(items), pickled)
            except Exception as exc:
                self._fail_run(run, exc)
                return
            if lost:
                failures = {**(failures or {}), **lost}
        n = len(values)
        nfail = len(failures) if failures else 0
        run.finished += n
        if not resumed:
            run.bar_done += n - nfail
            run.bar_failed += nfail
        if failures:
            if run.opts.error_behavior == "raise":
                first = min(failures)
                self._fail_run(run, failures[first])
                return
            failed_items = ({pos: items[pos - start] for pos in failures}
                            if run.opts.return_failed_tasks else None)
        else:
            failed_items = None
        run.out.put(("p", start, values, failures or None, failed_items))
        if run.complete():
            self._finish_run(run)

    def _retry(self, run: _Run, start: int, values: List[Any], failures: Dict[int, BaseException],
               items: List[Any], durations: Optional[List[float]]) -> bool:
        """Send failed tasks round again if allowed; deliver the rest. True if any was."""
        opts = run.opts
        again = []
        for pos, exc in failures.items():
            tries = run.attempts.get(pos, 0)
            if tries < opts.retries and isinstance(exc, opts.retry_on):
                run.attempts[pos] = tries + 1
                run.history.setdefault(pos, []).append(f"{type(exc).__name__}: {exc}")
                delay = opts.retry_delay * opts.retry_backoff ** tries
                heapq.heappush(run.delayed, (monotonic() + delay, pos, items[pos - start]))
                again.append(pos)
        if not again:
            return False
        run.retried += len(again)
        keep = set(again)
        piece: Optional[int] = None
        for i in range(len(values) + 1):  # deliver the stretches between retried positions
            pos = start + i
            inside = i < len(values) and pos not in keep
            if inside and piece is None:
                piece = i
            elif not inside and piece is not None:
                rest = {p: e for p, e in failures.items() if start + piece <= p < pos}
                self._deliver(run, start + piece, values[piece:i], rest or None,
                              items[piece:i], durations[piece:i] if durations else None)
                piece = None
        return True

    # -- run endings ----------------------------------------------------------------
    def _finish_run(self, run: _Run) -> None:
        if run.state == "active":
            self._end_run(run, "done")
            run.out.put(("end",))

    def _fail_run(self, run: _Run, exc: BaseException) -> None:
        if run.state in ("active", "new"):
            self._end_run(run, "failed")
            run.out.put(("fail", exc))
        run.ended.set()

    def _end_run(self, run: _Run, state: str) -> None:
        cancelled = state == "failed"
        run.state = state
        self._runs.pop(run.id, None)
        run.requeue.clear()
        run.parked = None
        for w in list(self._workers):
            busy = any(c.run is run for c in w.inflight)
            if cancelled and busy:
                # Its remaining tasks of this run are not wanted: stop it now rather than
                # let the next call wait behind them.
                self._kill(w, None)
            else:
                self._backend.forget(w, run.id)
        if run.journal is not None:
            try:
                run.journal.close()
            except Exception:
                log.exception("could not flush the checkpoint journal %s", run.opts.checkpoint)
        run.ended.set()
        self._flush_run_bar(run, monotonic(), force=True)
        if not run.opts.disable:
            self._bar_thread().send(("close", run.id, run.bar_closed))

    # -- deaths and guards ----------------------------------------------------------
    def _kill(self, w: Worker, blame: Optional[Tuple[_Run, int, BaseException]]) -> None:
        """Kill w now; give ``blame``'s task its error, send its other tasks elsewhere."""
        if w.dead:
            return
        for msg in self._backend.drain(w):
            self._on_message(w, msg)
        self._backend.kill(w)
        w.killed_at = monotonic()
        self._bury(w, blame)

    def _on_exit(self, w: Worker) -> None:
        if w.dead:  # a worker we had already given up on: reap it
            if w in self._dying:
                self._dying.remove(w)
            self._free_slot(w)
            self._backend.release(w)
            return
        for msg in self._backend.drain(w):
            self._on_message(w, msg)
        if w.dead:
            return
        code = self._backend.exitcode(w)
        if not w.ready:
            self._startup_deaths += 1
            if self._startup_deaths >= STARTUP_DEATHS and self._broken is None:
                self._bury(w, None)
                self._break(InitializerError(
                    f"{STARTUP_DEATHS} workers in a row died while starting: the last (pid "
                    f"{w.pid}) {describe_death(code)}"))
                return
        blame = suspects = None
        run_id, pos, _, span = self._backend.slot(w)
        run = self._runs.get(run_id)
        if run is not None and w.ready and any(c.run is run and c.done <= pos < c.end
                                               for c in w.inflight):
            if span == 1:
                blame = (run, pos, WorkerDiedError(
                    f"worker pid {w.pid} running task {pos} ({run.name}) {describe_death(code)}",
                    pid=w.pid, exitcode=code, task_position=pos))
            else:
                suspects = (run, pos, pos + span)
                log.info("worker pid %s %s in one of tasks %d..%d; running them one by one",
                         w.pid, describe_death(code), pos, pos + span - 1)
            self._unblamed_deaths = 0
        elif w.inflight:
            self._unblamed_deaths += 1
            if self._unblamed_deaths >= UNBLAMED_DEATHS and self._broken is None:
                self._bury(w, None)
                self._break(WorkerDiedError(
                    f"{UNBLAMED_DEATHS} workers in a row died outside any task; the last (pid "
                    f"{w.pid}) {describe_death(code)}", pid=w.pid, exitcode=code))
                return
        self._bury(w, blame, suspects)
        self._backend.release(w)
        if w in self._dying:
            self._dying.remove(w)

    def _bury(self, w: Worker, blame: Optional[Tuple[_Run, int, BaseException]],
              suspects: Optional[Tuple[_Run, int, int]] = None) -> None:
        """Take w out of service: requeue what it had not finished, fail the blamed task.

        ``suspects`` (run, first, end): the worker died somewhere in that batch of
        quick tasks; they go back one per chunk, so a task that crashes again is
        blamed exactly (and one that was merely unlucky, say OOM-killed, succeeds)."""
        w.dead = True
        if w in self._workers:
            self._workers.remove(w)
        if w.killed_at is not None and self._backend.alive(w):
            self._dying.append(w)   # its slot is freed once it is gone: it may still write
        else:
            self._free_slot(w)
        blamed_run, blamed_pos = (blame[0], blame[1]) if blame else (None, -1)
        back: Dict[int, List[Tuple[int, List[Any]]]] = {}
        for chunk in w.inflight:
            run = chunk.run
            if run.state != "active" or chunk.done >= chunk.end:
                continue
            pieces = back.setdefault(run.id, [])
            cuts = {chunk.done, chunk.end}
            alone = set()
            if run is blamed_run and chunk.done <= blamed_pos < chunk.end:
                cuts |= {blamed_pos, blamed_pos + 1}
            if suspects is not None and run is suspects[0]:
                lo, hi = max(suspects[1], chunk.done), min(suspects[2], chunk.end)
                alone = set(range(lo, hi))
                cuts |= alone | {hi}
            edges = sorted(c for c in cuts if chunk.done <= c <= chunk.end)
            for a, b in zip(edges, edges[1:]):
                if a == blamed_pos and run is blamed_run:
                    continue
                pieces.append((a, chunk.items[a - chunk.start:b - chunk.start]))
        for run_id, pieces in back.items():
            run = self._runs.get(run_id)
            if run is not None:
                run.requeue.extendleft(reversed(pieces))
        inflight, w.inflight = w.inflight, deque()
        if blame is not None and blamed_run is not None and blamed_run.state == "active":
            chunk = next((c for c in inflight if c.run is blamed_run
                          and c.start <= blamed_pos < c.end), None)
            item = [chunk.items[blamed_pos - chunk.start]] if chunk is not None else [None]
            self._deliver(blamed_run, blamed_pos, [None], {blamed_pos: blame[2]}, item)

    def _check_guards(self, now: float) -> None:
        for w in list(self._dying):
            if w.killed_at is not None and now - w.killed_at > KILL_GRACE \
                    and self._backend.alive(w):
                self._backend.force_kill(w)
                w.killed_at = now  # escalate once per grace period
        for run in list(self._runs.values()):
            if run.deadline is not None and now > run.deadline:
                self._fail_run(run, RunTimeoutError(
                    f"{run.mode} of {run.name} did not finish within timeout={run.opts.timeout} s "
                    f"({run.finished} of {run.total if run.total is not None else '?'} tasks done)"))
        if not self._runs:
            return
        for w in list(self._workers):
            if w.dead or not w.inflight:
                continue
            run_id, pos, started, _ = self._backend.slot(w)
            run = self._runs.get(run_id)
            if run is None or started <= 0.0:
                continue
            limit = run.opts.process_timeout
            if limit is not None and now - started > limit:
                self._kill(w, (run, pos, TaskTimeoutError(
                    f'function "{run.name}" took longer than {limit} s.',
                    task_position=pos, timeout=limit)))
                continue
            mem = run.opts.memory_limit
            if mem is not None:
                rss = self._backend.rss(w)
                if rss is not None and rss - w.baseline_rss > mem:
                    used = rss - w.baseline_rss
                    self._kill(w, (run, pos, MemoryLimitError(
                        f"task {pos} ({run.name}) grew its worker's resident memory by "
                        f"{used / 1e6:.0f} MB, over memory_limit={mem / 1e6:.0f} MB; worker pid "
                        f"{w.pid} was killed and replaced", task_position=pos, limit=mem,
                        used=used)))

    # -- bars -----------------------------------------------------------------------
    def _flush_bars(self, now: float) -> None:
        if not self._runs:
            return
        live: Dict[int, Tuple[int, int]] = {}
        if now - self._inner_read >= UPDATE_INTERVAL:
            self._inner_read = now
            live = self._counting_now()
        for run in self._runs.values():
            self._flush_run_bar(run, now, live=live.get(run.id, (0, 0)))

    def _flush_run_bar(self, run: _Run, now: float, force: bool = False,
                       live: Tuple[int, int] = (0, 0)) -> None:
        """Send the bar what changed. It counts tasks, or, in a run whose function calls
        functions decorated with @add_progress, those calls (as published parallelbar
        does, flag or not), plus the tasks that failed. ``live``: calls counted by
        tasks still running, shown now, confirmed when their results arrive."""
        if run.opts.disable or (not force and now - run.bar_flushed < UPDATE_INTERVAL):
            return
        run.bar_flushed = now
        inner_done, inner_failed = run.inner_done + live[0], run.inner_failed + live[1]
        inner = run.opts.used_add_progress_decorator or inner_done or inner_failed
        done = inner_done if inner else run.bar_done
        failed = run.bar_failed + inner_failed
        postfix = None
        if run.retried != run.retried_shown:
            run.retried_shown = run.retried
            postfix = (f"resumed={run.resumed}, " if run.resumed else "") + f"retries={run.retried}"
        step_done, step_failed = done - run.shown_done, failed - run.shown_failed
        if step_done or step_failed or postfix:
            run.shown_done, run.shown_failed = done, failed
            self._bar_thread().send(("update", run.id, step_done, step_failed, postfix))

    def _counting_now(self) -> Dict[int, Tuple[int, int]]:
        """Per run: @add_progress calls counted by tasks still running (not yet
        reported with their results)."""
        live: Dict[int, Tuple[int, int]] = {}
        for w in self._workers:
            d, e = self._backend.counters(w)
            d, e = int(d) - w.reported_done, int(e) - w.reported_err
            if d or e:
                run_id = self._backend.slot(w)[0]
                old = live.get(run_id, (0, 0))
                live[run_id] = (old[0] + d, old[1] + e)
        return live

    def _free_slot(self, w: Worker) -> None:
        """w will not write its status slot again: it may be reused."""
        if not w.slot_free:
            w.slot_free = True
            self._free_slots.append(w.index)


class _Star:
    """``func(*args)``, picklable when ``func`` is."""

    __slots__ = ("func",)

    def __init__(self, func: Callable[..., Any]) -> None:
        check_func(func)  # else the wrapper would hide it till each task failed
        self.func = func

    def __call__(self, args: Iterable[Any]) -> Any:
        return self.func(*args)

    def __reduce__(self):
        return (_Star, (self.func,))

    def _rebind_main(self, rebind: Callable[[Any], Any]) -> None:
        self.func = rebind(self.func)

    @property
    def __name__(self) -> str:  # for messages
        return _func_name(self.func)


def _note_attempts(exc: BaseException, attempts: int, history: Optional[List[str]]) -> None:
    """Say on a final failure how many times the task ran, and what failed before."""
    if attempts <= 1:
        return
    try:
        exc.attempts = attempts  # type: ignore[attr-defined]
        exc.previous_errors = list(history or [])  # type: ignore[attr-defined]
        if hasattr(exc, "add_note"):
            exc.add_note(f"(failed on all {attempts} attempts; before: "
                         + "; ".join(history or []) + ")")
    except Exception:
        pass


def _coerced(opts: Options, exc: BaseException) -> Any:
    return opts.set_error_value if opts.set_error_value is not None else exc


def _pieces(run: _Run) -> Iterator[Tuple[int, List[Any], Any, Any]]:
    """Pieces of results as the manager delivers them; raises the run's failure."""
    while True:
        try:
            msg = run.out.get(timeout=0.25)
        except queue.Empty:
            continue
        kind = msg[0]
        if kind == "p":
            yield msg[1], msg[2], msg[3], msg[4]
        elif kind == "end":
            return
        else:
            raise msg[1]


class ResultIterator:
    """Lazy results of :meth:`ProgressPool.imap` / :meth:`ProgressPool.imap_unordered`.

    Closing it (or leaving a ``for`` loop early and dropping it) cancels the run.
    ``failed_tasks`` lists the tasks that failed so far.
    """

    def __init__(self, pool: ProgressPool, run: _Run, ordered: bool) -> None:
        self._pool = pool
        self._run = run
        self._done = False
        self.failed_tasks: List[Any] = []
        self._results = self._generate(ordered)

    def __iter__(self) -> "ResultIterator":
        return self

    def __next__(self) -> Any:
        return next(self._results)

    def _generate(self, ordered: bool) -> Iterator[Any]:
        run, opts = self._run, self._run.opts
        buffer: Dict[int, Tuple[List[Any], Any]] = {}
        expected = 0
        try:
            for start, values, errors, items in _pieces(run):
                if errors and items:
                    self.failed_tasks.extend(items[p] for p in sorted(items))
                if ordered:
                    buffer[start] = (values, errors)
                    if start != expected:
                        continue
                    ready = []
                    while expected in buffer:
                        values, errors = buffer.pop(expected)
                        ready.append((expected, values, errors))
                        expected += len(values)
                else:
                    ready = [(start, values, errors)]
                for start, values, errors in ready:
                    run.consumed += len(values)
                    if not errors:
                        yield from values
                        continue
                    for i, value in enumerate(values):
                        exc = errors.get(start + i)
                        if exc is None:
                            yield value
                        elif opts.error_behavior != "ignore":
                            yield _coerced(opts, exc)
        except GeneratorExit:
            raise
        except BaseException:
            self._stop()
            raise
        self._done = True
        self._pool._wait_bar(run)

    def _stop(self) -> None:
        if not self._done:
            self._done = True
            self._pool._cancel(self._run)
            self._pool._wait_bar(self._run)

    def close(self) -> None:
        """Stop the run: its workers are stopped, no more input is read."""
        self._stop()
        self._results.close()

    def __del__(self) -> None:
        try:
            if not self._done:
                self._pool._cancel(self._run, wait=False)
        except Exception:
            pass

    def __enter__(self) -> "ResultIterator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_LIVE_POOLS: "weakref.WeakSet[ProgressPool]" = weakref.WeakSet()


def _terminate_live_pools() -> None:
    for pool in list(_LIVE_POOLS):
        try:
            pool.terminate()
        except Exception:
            pass


import atexit  # noqa: E402

atexit.register(_terminate_live_pools)
