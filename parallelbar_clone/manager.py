"""The manager thread: the one thread that touches workers.

It dispatches encoded chunks, collects results, reaps dead workers, enforces
deadlines and memory limits, starts replacements, retries, journals, and feeds
the bars. It never runs the caller's code and never blocks on it: the input is
pulled and encoded by the consuming thread (:mod:`.feed`), results and
exceptions stay bytes and plain records here (:mod:`.outcomes`) and are loaded
by the consuming thread (:mod:`.results`). It waits on every worker's result
pipe and sentinel at once (``multiprocessing.connection.wait``), so a worker
that dies is seen at once, with its exit code, and only the task it was running
fails.

Each position is delivered once (:class:`run.Delivered`): a task that finishes
right at its deadline yields its value or its ``TaskTimeoutError``, never both.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import signal
import threading
from collections import deque
from time import monotonic
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from . import serialize
from .backends import ProcessBackend, Worker, ZygoteWanted, _func_name
from .bar import UPDATE_INTERVAL, BarThread
from .errors import (InitializerError, MemoryLimitError, ParallelBarError, RunTimeoutError,
                     SerializationError, TaskTimeoutError, WorkerDiedError, describe_death)
from .outcomes import Failure
from .run import Chunk, Piece, Run
from .zygote import FORK_GATE

log = logging.getLogger("parallelbar_clone")

__all__ = ["Manager"]

WINDOW = 2                      # chunks in flight per worker: one running, one queued...
PREFETCH_SECONDS = 0.25         # ...but only behind a chunk measured to take less than this,
PREFETCH_TASK = 0.025           # of tasks this short (where a round trip matters), and not
                                # overdue: work queued behind a slow task waits for it
PREFETCH_BYTES = 16384          # never fills a pipe (a quarter of a grown one): sends can't block
BAR_OPEN_WAIT = 0.05            # a run's bar opens once every worker has work queued...
RAMPED_SECONDS = 0.005          # ...for this long by the measured task time, or after BAR_OPEN_WAIT
FED_SECONDS = 0.02              # work queued behind a worker's running chunk: it can wait
HAND_OVER_WAIT = 0.005          # a consumer waits this long at most for a hungry worker's send
KILL_GRACE = 0.3                # SIGTERM, then SIGKILL after this long
STARTUP_DEATHS = 3              # consecutive workers dying before 'ready' => broken pool
UNBLAMED_DEATHS = 5             # consecutive deaths outside any task => broken pool
IDLE_TICK = 0.1
GUARD_TICK = 0.02
MEMORY_TICK = 0.01


class Deferred:
    """A pool-level error whose cause is a worker's exception: made into an exception
    by the consuming thread (:meth:`exception`), which may load the worker's."""

    def __init__(self, make: Callable[[BaseException], BaseException], cause: Failure) -> None:
        self.make = make
        self.cause = cause

    def exception(self) -> BaseException:
        cause = self.cause.exception()
        err = self.make(cause)
        err.__cause__ = cause
        return err


def as_exception(error: Any) -> BaseException:
    """A run's failure as the caller gets it (in the consuming thread)."""
    if isinstance(error, BaseException):
        return error
    return error.exception()


class Manager:
    """Runs the pool's workers (see the module docstring). Other threads talk to it
    through :meth:`post`; the consuming thread also appends to ``run.ready``."""

    def __init__(self, options: Any, backend: Any, bars: Callable[[], BarThread]) -> None:
        self.options = options
        self.backend = backend
        self.bars = bars
        self.wanted = getattr(backend, "width", options.workers)
        self.commands: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self.runs: Dict[int, Run] = {}
        self.workers: List[Worker] = []
        self.dying: List[Worker] = []
        self.free_slots = list(range(getattr(backend, "slots_count", self.wanted)))
        self.broken: Any = None              # an exception, or a Deferred
        self.closing: Optional[str] = None
        self.startup_deaths = 0
        self.unblamed_deaths = 0
        self.counted_at = 0.0
        self.wake_at: Optional[float] = None   # in how long a consumer is due a wake
        self.closed = threading.Event()
        self.hungry = False                  # a worker waits and nothing is encoded for it
        self.yielding: Optional[bool] = None  # SCHED_BATCH now (None: not to be changed)
        self.busy = True                     # in a pass: between two waits (see hand_over)
        self.turn = 0                        # where the next dispatch pass starts
        self.dispatched = threading.Event()  # set after each dispatch pass (see hand_over)
        if getattr(backend, "first_workers_here", lambda: False)():
            # Before this pool's threads start: the first workers are forked from this
            # thread (or asked of the zygote), and the caller encodes tasks after. (Asked
            # by the manager thread, each answer waited for the GIL while the caller
            # pickled: 3-7 ms of a 2-core start-up.)
            self._ensure_workers()
        self.thread = threading.Thread(target=self._main, name="parallelbar-manager",
                                       daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------ other threads
    def post(self, *command: Any) -> None:
        self.commands.put(command)
        self.backend.wake()

    def wake(self) -> None:
        self.backend.wake()

    def hand_over(self) -> None:
        """Chunks were just made ready: wake this thread, and if a worker waits for
        them, or this thread is in the middle of a pass, let it finish its pass (and send
        them) before the caller goes on. Else the caller keeps the GIL, and this thread,
        which let the GIL go in a system call (each send and read does), waits for the
        interpreter's switch interval, 5 ms, to get it back, with workers idle: on 16
        cores, 2.5 to 3.5 ms twice in a 50 ms map of trivial tasks."""
        if not (self.hungry or self.busy):
            self.backend.wake()
            return
        self.dispatched.clear()
        self.backend.wake()   # (a pass that ended meanwhile: this one sets it again)
        self.dispatched.wait(HAND_OVER_WAIT)

    def yield_pass(self) -> None:
        """Called by a consuming thread before its own work: if this thread is in the
        middle of a pass, let it finish first (see hand_over)."""
        if self.busy:
            self.dispatched.clear()
            if self.busy:
                self.dispatched.wait(HAND_OVER_WAIT)

    # ------------------------------------------------------------------ the loop
    def _main(self) -> None:
        FORK_GATE.register()
        try:   # (only from the normal policy: a thread the caller made otherwise stays so)
            if os.sched_getscheduler(0) == os.SCHED_OTHER:  # type: ignore[attr-defined]
                self.yielding = False
        except (AttributeError, OSError):
            pass
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
            self.broken = err
            for run in list(self.runs.values()):
                self._fail_run(run, err)
            self._kill_all()
        finally:
            with FORK_GATE.working():
                self.backend.close()
            FORK_GATE.unregister()
            self.closed.set()

    def _loop(self) -> None:
        # Work is done under FORK_GATE.working(): a new pool's zygote is forked only while
        # this thread waits in backend.wait, holding no lock.
        while True:
            with FORK_GATE.working():
                self._read_commands()
                if self.closing is not None:   # (unfinished runs are cancelled: a run left
                    # unconsumed, an imap iterator still held after a break, say, has
                    # nobody to read its input and would never end)
                    self._stop_workers(graceful=self.closing == "close")
                    return
                if self.broken is None:
                    self._ensure_workers()
                    self._dispatch()
                # (after dispatching: a consumer woken first would take the GIL from this
                # thread for up to its switch interval, 5 ms, while workers wait)
                self._wake_consumers(monotonic())
                tick = self._tick()
                self._yield_while_fed()
                self.busy = False
                self.dispatched.set()   # (a consumer may have found it busy just now)
            events = self.backend.wait(self.workers, self.dying, tick)
            self.busy = True
            with FORK_GATE.working():
                for w, msg in events:
                    if msg is None:
                        self._on_exit(w)
                    elif not w.dead:
                        self._on_message(w, msg)
                for w in [w for w in self.workers if w.retiring and not w.inflight]:
                    self._retire(w)
                now = monotonic()
                self._release_retries(now)
                self._check_guards(now)
                self._flush_bars(now)

    def _yield_while_fed(self) -> None:
        """While every worker has ``FED_SECONDS`` of work queued behind its running
        chunk, this thread waits for the scheduler's next tick when a result wakes it,
        rather than take that worker's core at once (``SCHED_BATCH``, Linux). On a
        machine whose cores all run workers, it ran in the sender's place between two
        of its tasks: a chunk boundary cost ~0.5 ms though the next chunk was queued.
        Else (the first chunks, the tail, a worker waiting) it answers at once, as a
        tick's wait (4 to 9 ms seen on 16 cores) would leave workers idle. Same share of
        the CPU either way; a process started from this thread (a spawned worker)
        inherits the policy and takes back its maker's (``WorkerSetup.policy``)."""
        if self.yielding is None:
            return
        fed = bool(self.runs) and all(self._fed(w) for w in self.workers
                                      if not (w.retiring or w.dead))
        if fed != self.yielding:
            try:
                os.sched_setscheduler(0, os.SCHED_BATCH if fed else  # type: ignore
                                      os.SCHED_OTHER, os.sched_param(0))  # type: ignore
                self.yielding = fed
            except OSError:
                log.debug("cannot change the manager's scheduling policy", exc_info=True)
                self.yielding = None

    @staticmethod
    def _fed(w: Worker) -> bool:
        """Has w FED_SECONDS of work queued behind its running chunk, by the measured
        task times?"""
        queued = 0.0
        for chunk in itertools.islice(w.inflight, 1, None):
            per_task = chunk.run.policy.per_task
            if per_task is None:
                return False
            queued += (chunk.end - chunk.done) * per_task
        return queued >= FED_SECONDS

    def _wake_consumers(self, now: float) -> None:
        """Results waiting long enough, or input running low: the consumer's turn."""
        self.wake_at = None
        for run in self.runs.values():
            if not run.exhausted and len(run.ready) < 2 * self.wanted \
                    and not run.out.event.is_set() and run.may_read_ahead():
                run.out.wake()   # it feeds the input: let it top up before workers starve
                continue
            later = run.out.wake_if_due(now)
            if later is not None:
                self.wake_at = later if self.wake_at is None else min(self.wake_at, later)

    def _tick(self) -> float:
        tick = IDLE_TICK if self.wake_at is None else max(0.001, self.wake_at)
        now = monotonic()
        for run in self.runs.values():
            if run.delayed:
                tick = min(tick, max(0.001, run.delayed[0][0] - now))
            if run.opts.memory_limit is not None:
                tick = min(tick, MEMORY_TICK)
            elif run.opts.process_timeout is not None:
                tick = min(tick, GUARD_TICK, run.opts.process_timeout / 4)
            if run.deadline is not None:
                tick = min(tick, max(0.001, run.deadline - now))
            if run.bar_open is not None:
                tick = min(tick, max(0.001, run.bar_due - now))
        if self.dying:
            tick = min(tick, GUARD_TICK)
        return tick

    def _read_commands(self) -> None:
        while True:
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return
            kind, run = command[0], command[1]
            if kind == "submit":
                if self.broken is not None:
                    self._fail_run(run, self.broken)
                    continue
                run.state = "active"
                self.runs[run.id] = run
                self._maybe_finish(run)
            elif kind == "cancel":
                if run.id in self.runs:
                    self._end_run(run, "failed")
                run.ended.set()
            elif kind == "outcomes":    # journalled on resume, or tasks that cannot be sent
                if run.state == "active":
                    self._deliver(run, command[2], **command[3])
            elif kind == "fed":         # the input is used up: maybe nothing is left to do
                if run.state == "active":
                    self._maybe_finish(run)
            elif kind == "shutdown":
                if self.closing is None or run == "terminate":
                    self.closing = run

    # -- workers --------------------------------------------------------------------
    def _ensure_workers(self) -> None:
        while len([w for w in self.workers if not w.retiring]) < self.wanted \
                and self.free_slots:
            w = Worker(self.free_slots.pop(0))
            w.tasks_left = self.options.maxtasksperchild
            try:
                self.backend.start(w)
            except ZygoteWanted:   # the consumer forks it at its next step: then again
                self.free_slots.insert(0, w.index)
                for run in self.runs.values():
                    run.out.wake()
                return
            except Exception as exc:
                self.free_slots.insert(0, w.index)
                self._break(ParallelBarError(f"could not start a worker: {exc}"), exc)
                return
            self.workers.append(w)

    def _retire(self, w: Worker) -> None:
        """Stop an idle worker (maxtasksperchild reached); its slot is reused."""
        self.backend.stop(w)
        self.workers.remove(w)
        self._free_slot(w)  # it is idle: it will not write its slot again
        w.dead = True
        w.killed_at = monotonic()
        self.dying.append(w)

    def _free_slot(self, w: Worker) -> None:
        """w will not write its status slot again: it may be reused."""
        if not w.slot_free:
            w.slot_free = True
            self.free_slots.append(w.index)

    def _stop_workers(self, graceful: bool) -> None:
        for run in list(self.runs.values()):
            self._fail_run(run, ParallelBarError("the pool was shut down before this run ended"))
        if graceful:
            for w in self.workers:
                self.backend.stop(w)
        stopping = getattr(self.backend, "stopping", None)
        if stopping is not None:
            stopping(self.workers + self.dying)
        if graceful:
            deadline = monotonic() + 1.0
            for w in self.workers:
                if isinstance(self.backend, ProcessBackend):
                    w.proc.join(max(0.0, deadline - monotonic()))  # type: ignore[attr-defined]
        self._kill_all()

    def _kill_all(self) -> None:
        everyone = self.workers + self.dying
        for w in everyone:
            if self.backend.alive(w):
                self.backend.kill(w)
        if isinstance(self.backend, ProcessBackend):
            deadline = monotonic() + KILL_GRACE
            for w in everyone:
                w.proc.join(max(0.0, deadline - monotonic()))  # type: ignore[attr-defined]
            for w in everyone:
                if self.backend.alive(w):
                    self.backend.force_kill(w)
                    w.proc.join(1.0)  # type: ignore[attr-defined]
        for w in everyone:
            self.backend.release(w)
        self.workers = []
        self.dying = []

    def _break(self, err: Any, cause: Optional[BaseException] = None) -> None:
        if cause is not None and isinstance(err, BaseException) and err.__cause__ is None:
            err.__cause__ = cause
        self.broken = err
        for run in list(self.runs.values()):
            self._fail_run(run, err)

    # -- dispatch -------------------------------------------------------------------
    def _dispatch(self) -> None:
        self._dispatch_all()
        self.hungry = bool(self.runs) and any(
            not w.inflight and not w.retiring and not w.dead for w in self.workers)
        now = monotonic()
        for run in self.runs.values():
            if run.bar_open is not None and (run.bar_due <= now or self._ramped(run)):
                self._open_bar(run)
        self.dispatched.set()

    def _ramped(self, run: Run) -> bool:
        """Has every worker enough of the run's work queued (RAMPED_SECONDS by the
        measured task time) to go on while the bar opens, or is nothing left to send?"""
        if run.exhausted and not run.ready and not run.requeue:
            return True
        if self.hungry:
            return False
        per_task = run.policy.per_task
        if per_task is None:
            return False
        for w in self.workers:
            if w.retiring or w.dead:
                continue
            queued = sum(c.end - c.done for c in w.inflight if c.run is run)
            if queued * per_task < RAMPED_SECONDS:
                return False
        return True

    def _dispatch_all(self) -> None:
        if not self.runs:
            return
        # Workers take turns: the one after the last served goes first. (Else, with chunks
        # made one at a time, the first worker in the list, idle again, took each one and
        # the others waited: a whole short run on one worker.)
        turn = self.turn % len(self.workers) if self.workers else 0
        order = self.workers[turn:] + self.workers[:turn]
        for depth in range(1, WINDOW + 1):
            for w in order:
                if w.retiring or w.dead or len(w.inflight) >= depth:
                    continue
                if w.inflight and not self._short(w):
                    continue
                if self._dispatch_one(w):
                    self.turn = self.workers.index(w) + 1
                elif not any(r.ready for r in self.runs.values()):
                    return

    @staticmethod
    def _short(w: Worker) -> bool:
        """May w get its next chunk before it finishes this one? Only if the running
        chunk is measured to be short and is not taking longer than it should."""
        chunk = w.inflight[0]
        per_task = chunk.run.policy.per_task
        if per_task is None or per_task > PREFETCH_TASK or not w.chunks_done:
            return False  # (a worker's first chunk may be the one slow task at the head)
        expected = per_task * (chunk.end - chunk.start)
        began = max(chunk.sent_at, w.last_heard)  # the earliest it can have started
        return expected < PREFETCH_SECONDS and monotonic() - began < 2 * expected + 0.001

    def _dispatch_one(self, w: Worker) -> bool:
        for run in list(self.runs.values()):
            if run.state != "active":
                continue
            try:   # (pop, not peek: the consuming thread may add to the front meanwhile)
                chunk = run.ready.popleft()
            except IndexError:
                continue
            if w.tasks_left is not None and len(chunk.items) > w.tasks_left:
                run.ready.appendleft(chunk)
                w.retiring = True     # maxtasksperchild: a fresh worker takes it
                return False
            extra = len(run.payload) if isinstance(run.payload, bytes) and run.id not in w.runs \
                else 0
            idle = w.ready and not w.inflight
            if not idle and w.unread() + chunk.nbytes + extra > max(PREFETCH_BYTES,
                                                                   w.pipe_bytes // 4):
                run.ready.appendleft(chunk)
                return False   # it waits, encoded, for a worker able to take it
            if not self.backend.send_chunk(w, chunk, run):
                run.ready.appendleft(chunk)
                return False   # w died: its sentinel will tell
            chunk.sent_at = monotonic()
            w.inflight.append(chunk)
            if w.tasks_left is not None:
                w.tasks_left -= len(chunk.items)
                if w.tasks_left <= 0:
                    w.retiring = True
            return True
        return False

    def _open_bar(self, run: Run) -> None:
        """Open the run's bar (its first messages, sent once): when the run's first
        chunks have ramped up (opening a bar holds the GIL about 1 ms; while each
        worker has a task or a few, that would make them wait for their next chunk),
        ``BAR_OPEN_WAIT`` after the call at the latest, or when the run ends. Counts
        gathered before that are shown once it is open."""
        messages, run.bar_open = run.bar_open, None
        for message in messages or ():
            self.bars().send(message)

    # -- messages -------------------------------------------------------------------
    def _on_message(self, w: Worker, msg: Any) -> None:
        kind = msg[0]
        w.last_heard = monotonic()
        if kind == "r":
            self._on_results(w, msg)
        elif kind == "ready":
            w.ready = True
            self.startup_deaths = 0
            rss = self.backend.rss(w)
            w.baseline_rss = rss or 0
        elif kind == "init_error":
            failure = _failure(msg[1])
            name = _func_name(self.options.initializer)
            pid = w.pid
            self._break(Deferred(lambda exc: InitializerError(
                f"initializer {name} raised {failure.type_name}: {failure.text} (in worker pid "
                f"{pid}); no task can run"), failure))
        elif kind == "bad":
            _, run_id, start, n, packed, by_value = msg
            chunk = self._pop_chunk(w, start)
            run = self.runs.get(run_id)
            if run is None or chunk is None:
                return
            failure = _failure(packed)
            if not by_value and not run.items_by_value and isinstance(self.backend,
                                                                      ProcessBackend):
                # Something they name was not found over there (a class defined under the
                # script's main guard, say): send this run's tasks by value from now on.
                log.info("tasks of %s could not be loaded by name in a worker (%s); sending "
                         "them by value", run.name, failure.summary())
                run.items_by_value = True
                self._requeue(run, [(start, chunk.items)])
            elif n > 1:
                self._requeue(run, [(start + i, [chunk.items[i]]) for i in range(n)])
            else:
                self._deliver(run, start, 1, values=[None], items=chunk.items, failures={
                    start: Failure.made_here(SerializationError(
                        f"task {start} could not be unpickled in the worker: "
                        f"{failure.summary()}"))})
        elif kind == "lost":
            self._on_lost(w, msg)
        elif kind == "fatal":   # the backend cannot go on (a dask client closed, say)
            if self.broken is None:
                self._break(msg[1])
        elif kind == "func_error":
            run = self.runs.get(msg[1])
            if run is None:
                return
            why = self._send_by_value(w, run) if msg[3] else None
            if why is None and msg[3]:
                return
            failure = _failure(msg[2])
            text = (f"function {run.name} could not be loaded in the worker: "
                    f"{failure.summary()}")
            if why is not None:
                text += (f"; nor can it be sent by value: {type(why).__name__}: {why}. "
                         f"Define what it uses where the worker can import it (a module), or "
                         f"use context='fork', whose workers inherit the caller's objects")
            self._fail_run(run, Deferred(lambda exc: SerializationError(text), failure))

    def _on_lost(self, w: Worker, msg: Any) -> None:
        """The worker that ran a chunk died, and the backend gave it up (a dask worker,
        after dask's own retries): a lone task gets the error; a chunk of several runs
        again one task per chunk, so that only the task that kills its worker fails."""
        _, run_id, start, n, err = msg
        chunk = self._pop_chunk(w, start)
        run = self.runs.get(run_id)
        if chunk is None:
            return
        chunk.run.bytes_done += chunk.nbytes
        if run is None:
            return
        if n > 1:
            log.info("%s; running tasks %d..%d one by one", err, start, start + n - 1)
            self._requeue(run, [(start + i, [chunk.items[i]]) for i in range(n)])
        else:
            self._deliver(run, start, 1, values=[None], items=chunk.items,
                          failures={start: Failure.made_here(err)})

    def _send_by_value(self, w: Worker, run: Run) -> Optional[BaseException]:
        """A worker could not load the run's function by name: send it by value (dill)
        to that worker, which kept the run's tasks waiting. Else say why not."""
        if not run.payload_by_value:
            try:
                payload = self.backend.function_payload(run.func, force_value=True)
            except Exception as exc:
                return exc
            run.payload, run.payload_by_value = payload, True
            log.info("function %s could not be loaded by name in a worker; sending it by "
                     "value", run.name)
        self.backend.send_function(w, run)   # (if w died meanwhile, its sentinel tells)
        return None

    def _pop_chunk(self, w: Worker, start: int) -> Optional[Chunk]:
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
        run = chunk.run
        if chunk.done >= chunk.end:
            w.inflight.remove(chunk)
            w.chunks_done += 1
        run.bytes_done += chunk.nbytes * n // max(1, len(chunk.items))
        if run.state != "active":
            return
        run.inner_done += counted[0]
        run.inner_failed += counted[1]
        run.policy.observe(n, busy)
        now = monotonic()
        run.summary.chunk_ran(w.pid, now - busy, now, n)
        failures = {pos: _failure(p) for pos, p in errors.items()} if errors else None
        whole = start == chunk.start and n == len(chunk.items)
        offset = start - chunk.start
        # (read only: a whole chunk's list itself, not a copy of 20 000 pointers a piece)
        items = chunk.items if whole else chunk.items[offset:offset + n]
        # A process worker's pickled values, or a thread worker's objects:
        values = dict(blob=data, dilled=dilled) if isinstance(
            data, (bytes, bytearray, memoryview)) else dict(values=data)
        self._deliver(run, start, n, failures=failures, items=items, durations=durations,
                      digest=chunk.digest if whole else None, inner=inner, **values)

    # -- delivery -------------------------------------------------------------------
    def _deliver(self, run: Run, start: int, n: int, *, values: Optional[List[Any]] = None,
                 blob: Optional[serialize.Bytes] = None, dilled: bool = False,
                 failures: Optional[Dict[int, Failure]] = None,
                 items: Optional[List[Any]] = None, durations: Optional[List[float]] = None,
                 digest: Optional[str] = None, inner: Any = None,
                 resumed: bool = False) -> None:
        """Outcomes of tasks start .. start+n-1: retry, journal, hand over, each
        position once."""
        if run.state != "active" or n <= 0:
            return
        skip: Set[int] = set()
        if failures and not resumed:
            if run.opts.retries:
                skip = self._retry(run, failures, start, items)
            for pos, failure in failures.items():
                if pos not in skip:
                    failure.attempts = run.attempts.get(pos, 0) + 1
                    failure.history = list(run.history.get(pos, ()))
        fresh = run.delivered.claim(start, n) if not skip else self._claim_except(run, start, n,
                                                                                    skip)
        claimed = sum(b - a for a, b in fresh)
        if claimed != n - len(skip):
            # Never expected: a path tried to give a position a second outcome. The first
            # one stands; the consumer drops the rest.
            log.error("tasks %d..%d of %s: %d outcome(s) already delivered were dropped",
                      start, start + n - 1, run.name, n - len(skip) - claimed)
            kept = set()
            for a, b in fresh:
                kept.update(range(a, b))
            skip |= set(range(start, start + n)) - kept
        final_failures = {p: f for p, f in (failures or {}).items() if p not in skip}
        if run.journal is not None and not resumed:
            try:
                run.journal.add(start, values, failures, durations, digest, blob, n=n,
                                items=items)
            except Exception as exc:
                self._fail_run(run, exc)
                return
        done = n - len(skip)
        run.finished += done
        nfail = len(final_failures)
        self._record(run, start, n, skip, final_failures, items, durations, resumed)
        if not resumed:
            run.bar_done += done - nfail
            run.bar_failed += nfail
        if final_failures and run.opts.error_behavior == "raise":
            self._fail_run(run, final_failures[min(final_failures)])
            return
        failed_items = None
        if final_failures and run.opts.return_failed_tasks and items is not None:
            failed_items = {pos: items[pos - start] for pos in final_failures}
        piece = Piece(start, n, values=values, blob=blob, dilled=dilled,
                      failures=final_failures or None, items=failed_items, inner=inner)
        piece.skip = skip or None
        run.bytes_out += piece.nbytes
        # (results of a whole-list call wait for the consumer's next wake, unless many
        # pieces or bytes wait: see Outbox)
        run.out.put(("p", piece), nbytes=piece.nbytes, urgent=len(run.out.items) > 64)
        self._maybe_finish(run)

    @staticmethod
    def _record(run: Run, start: int, n: int, skip: Set[int], failures: Dict[int, Failure],
                items: Optional[List[Any]], durations: Optional[List[float]],
                resumed: bool) -> None:
        """What the run's summary learns from a delivered piece (plain data only)."""
        summary = run.summary
        if not skip and not failures:
            summary.tasks_done(range(start, start + n), durations)
            return
        for i in range(n):
            pos = start + i
            if pos in skip:
                continue
            duration = durations[i] if durations else None
            failure = failures.get(pos)
            if failure is None:
                summary.task_done(pos, duration)
            elif not resumed:
                task = items[i] if items is not None else None
                summary.task_failed(pos, task, duration=duration, record=failure)

    @staticmethod
    def _claim_except(run: Run, start: int, n: int, skip: Set[int]) -> List[Tuple[int, int]]:
        fresh: List[Tuple[int, int]] = []
        a = start
        for pos in sorted(skip) + [start + n]:
            if pos > a:
                fresh.extend(run.delivered.claim(a, pos - a))
            a = pos + 1
        return fresh

    def _retry(self, run: Run, failures: Dict[int, Failure], start: int,
               items: Optional[List[Any]]) -> Set[int]:
        """Send failed tasks round again if allowed; the positions that will be."""
        opts = run.opts
        again: Set[int] = set()
        if items is None:
            return again
        for pos, failure in failures.items():
            tries = run.attempts.get(pos, 0)
            if tries < opts.retries and failure.matches(opts.retry_on):
                run.attempts[pos] = tries + 1
                run.history.setdefault(pos, []).append(failure.summary())
                run.summary.retried(pos, type_name=failure.type_name.rpartition(".")[2],
                                    message=failure.text)
                delay = opts.retry_delay * opts.retry_backoff ** tries
                heapq.heappush(run.delayed, (monotonic() + delay, pos, items[pos - start]))
                again.add(pos)
        run.retried += len(again)
        return again

    def _release_retries(self, now: float) -> None:
        for run in self.runs.values():
            due = []
            while run.delayed and run.delayed[0][0] <= now:
                _, pos, item = heapq.heappop(run.delayed)
                due.append((pos, [item]))
            if due:
                self._requeue(run, due)

    def _requeue(self, run: Run, pieces: List[Tuple[int, List[Any]]]) -> None:
        """Tasks to encode again (the consuming thread does it), ahead of new input."""
        if run.state != "active" or not pieces:
            return
        run.requeue.extend(pieces)
        run.out.put(("nudge",), urgent=True)

    # -- run endings ----------------------------------------------------------------
    def _maybe_finish(self, run: Run) -> None:
        if run.state == "active" and run.complete():
            self._end_run(run, "done")
            run.out.put(("end",), urgent=True)

    def _fail_run(self, run: Run, error: Any) -> None:
        if run.state in ("active", "new"):
            self._end_run(run, "failed")
            run.out.put(("fail", error), urgent=True)
        run.ended.set()

    def _end_run(self, run: Run, state: str) -> None:
        cancelled = state == "failed"
        run.state = state
        self.runs.pop(run.id, None)
        run.ready.clear()
        run.requeue.clear()
        for w in list(self.workers):
            busy = any(c.run is run for c in w.inflight)
            if cancelled and busy:
                # Its remaining tasks of this run are not wanted: stop it now rather than
                # let the next call wait behind them.
                self._kill(w, None)
            else:
                self.backend.forget(w, run.id)
        if run.journal is not None:
            try:
                run.journal.close()
            except Exception:
                log.exception("could not flush the checkpoint journal %s", run.opts.checkpoint)
        run.summary.finished()
        run.ended.set()
        self._flush_run_bar(run, monotonic(), force=True)
        if not run.opts.disable:
            self._open_bar(run)
            if run.summary.n_failed or run.summary.worker_restarts:
                self.bars().send(("summary", run.id, run.summary.line()))
            self.bars().send(("close", run.id, run.bar_closed))

    # -- deaths and guards ----------------------------------------------------------
    def _kill(self, w: Worker, blame: Optional[Tuple[Run, int, BaseException]]) -> None:
        """Kill w now; give ``blame``'s task its error, send its other tasks elsewhere."""
        if w.dead:
            return
        self.backend.kill(w)
        w.killed_at = monotonic()
        self._bury(w, blame)

    def _on_exit(self, w: Worker) -> None:
        if w.dead:  # a worker we had already given up on: reap it
            if w in self.dying:
                self.dying.remove(w)
            self._free_slot(w)
            self.backend.release(w)
            return
        for msg in self.backend.drain(w):
            self._on_message(w, msg)
        if w.dead:
            return
        code = self.backend.exitcode(w)
        if not w.ready:
            self.startup_deaths += 1
            if self.startup_deaths >= STARTUP_DEATHS and self.broken is None:
                self._bury(w, None)
                self._break(InitializerError(
                    f"{STARTUP_DEATHS} workers in a row died while starting: the last (pid "
                    f"{w.pid}) {describe_death(code)}"))
                return
        blame = suspects = None
        run_id, pos, _, span = self.backend.slot(w)
        run = self.runs.get(run_id)
        if run is not None and w.ready and self._pending(w, run, pos):
            if span == 1:
                blame = (run, pos, WorkerDiedError(
                    f"worker pid {w.pid} running task {pos} ({run.name}) {describe_death(code)}",
                    pid=w.pid, exitcode=code, task_position=pos))
            else:
                suspects = (run, pos, pos + span)
                log.info("worker pid %s %s in one of tasks %d..%d; running them one by one",
                         w.pid, describe_death(code), pos, pos + span - 1)
            self.unblamed_deaths = 0
        elif w.inflight:
            self.unblamed_deaths += 1
            if self.unblamed_deaths >= UNBLAMED_DEATHS and self.broken is None:
                self._bury(w, None)
                self._break(WorkerDiedError(
                    f"{UNBLAMED_DEATHS} workers in a row died outside any task; the last (pid "
                    f"{w.pid}) {describe_death(code)}", pid=w.pid, exitcode=code))
                return
        self._bury(w, blame, suspects, why=_death_reason(code))
        self.backend.release(w)
        if w in self.dying:
            self.dying.remove(w)

    @staticmethod
    def _pending(w: Worker, run: Run, pos: int) -> bool:
        """Is task ``pos`` of ``run`` sent to w and not yet reported?"""
        return any(c.run is run and c.done <= pos < c.end for c in w.inflight)

    def _bury(self, w: Worker, blame: Optional[Tuple[Run, int, BaseException]],
              suspects: Optional[Tuple[Run, int, int]] = None, why: str = "") -> None:
        """Take w out of service: requeue what it had not finished, fail the blamed task.

        ``suspects`` (run, first, end): the worker died somewhere in that batch of
        quick tasks; they go back one per chunk, so a task that crashes again is
        blamed exactly (and one that was merely unlucky, say OOM-killed, succeeds)."""
        w.dead = True
        if w in self.workers:
            self.workers.remove(w)
        reason = why or (_KILLED_FOR.get(type(blame[2]).__name__, type(blame[2]).__name__)
                         if blame is not None else "killed")
        for run in {c.run for c in w.inflight}:
            if run.state == "active":
                run.summary.worker_replaced(w.pid, reason)
        if w.killed_at is not None and self.backend.alive(w):
            self.dying.append(w)   # its slot is freed once it is gone: it may still write
        else:
            self._free_slot(w)
        if blame is not None and not self._pending(w, blame[0], blame[1]):
            blame = None   # its outcome arrived meanwhile: it stands
        blamed_run, blamed_pos = (blame[0], blame[1]) if blame else (None, -1)
        blamed_item: List[Any] = [None]
        back: Dict[int, List[Tuple[int, List[Any]]]] = {}
        again: List[Chunk] = []
        for chunk in w.inflight:
            run = chunk.run
            if run.state == "active" and chunk.done < chunk.end:
                cuts = {chunk.done, chunk.end}
                if run is blamed_run and chunk.done <= blamed_pos < chunk.end:
                    cuts |= {blamed_pos, blamed_pos + 1}
                    blamed_item = [chunk.items[blamed_pos - chunk.start]]
                if suspects is not None and run is suspects[0]:
                    lo, hi = max(suspects[1], chunk.done), min(suspects[2], chunk.end)
                    cuts |= set(range(lo, hi)) | {hi}
                edges = sorted(c for c in cuts if chunk.done <= c <= chunk.end)
                parts = [(a, b) for a, b in zip(edges, edges[1:])
                         if not (a == blamed_pos and run is blamed_run)]
                if parts == [(chunk.start, chunk.end)]:
                    again.append(chunk)   # not begun, none singled out: sent as it is, first
                    continue
                back.setdefault(run.id, []).extend(
                    (a, chunk.items[a - chunk.start:b - chunk.start]) for a, b in parts)
            run.bytes_done += chunk.nbytes * (chunk.end - chunk.done) // max(1, len(chunk.items))
        w.inflight = deque()
        # Chunks it had not begun go back to the front of their run's ready queue as they
        # are, for the next worker to take before new input. (Encoded again by the
        # consuming thread, as pieces of a begun chunk are, they came back after the
        # replacement had taken the next chunk: a task queued behind one that timed out
        # waited for that next one too, a whole timeout when it hung as well.)
        for chunk in reversed(again):
            chunk.run.ready.appendleft(chunk)
        for run_id, pieces in back.items():
            run = self.runs.get(run_id)
            if run is not None:
                self._requeue(run, pieces)
        if blame is not None and blamed_run is not None and blamed_run.state == "active":
            self._deliver(blamed_run, blamed_pos, 1, values=[None], items=blamed_item,
                          failures={blamed_pos: Failure.made_here(blame[2])})

    def _check_guards(self, now: float) -> None:
        for w in list(self.dying):
            if w.killed_at is not None and now - w.killed_at > KILL_GRACE \
                    and self.backend.alive(w):
                self.backend.force_kill(w)
                w.killed_at = now  # escalate once per grace period
        for run in list(self.runs.values()):
            if run.deadline is not None and now > run.deadline:
                self._fail_run(run, RunTimeoutError(
                    f"{run.mode} of {run.name} did not finish within timeout={run.opts.timeout} s "
                    f"({run.finished} of {run.total if run.total is not None else '?'} tasks done)"))
        if not any(run.timing for run in self.runs.values()):
            return   # (no process_timeout, no memory_limit: nothing to read in the slots)
        for w in list(self.workers):
            if w.dead or not w.inflight:
                continue
            blame = self._over_limit(w, now)
            if blame is None:
                continue
            # Its outcome may be on its way: read what it sent, then look again.
            for msg in self.backend.drain(w):
                self._on_message(w, msg)
            if not w.dead and self._over_limit(w, now) is not None:
                self._kill(w, blame)

    def _over_limit(self, w: Worker, now: float) -> Optional[Tuple[Run, int, BaseException]]:
        """The task w runs and why it must stop, if it must."""
        run_id, pos, started, _ = self.backend.slot(w)
        run = self.runs.get(run_id)
        if run is None or started <= 0.0 or not self._pending(w, run, pos):
            return None
        limit = run.opts.process_timeout
        if limit is not None and now - started > limit:
            return (run, pos, TaskTimeoutError(
                f'function "{run.name}" took longer than {limit} s.',
                task_position=pos, timeout=limit))
        mem = run.opts.memory_limit
        if mem is None:
            return None
        rss = self.backend.rss(w)
        if rss is None:
            return None
        if w.task_mark != (run_id, pos, started):   # a new task: what the worker holds now
            w.task_mark = (run_id, pos, started)
            w.task_rss = rss
        grown = rss - w.baseline_rss
        if grown <= mem:
            return None
        added = rss - w.task_rss
        return (run, pos, MemoryLimitError(
            f"worker pid {w.pid} grew to {grown / 1e6:.0f} MB over its resident memory at "
            f"start, past memory_limit={mem / 1e6:.0f} MB, while running task {pos} "
            f"({run.name}); it holds {rss / 1e6:.0f} MB, of which about {added / 1e6:.0f} MB "
            f"since this task started (the rest stayed from earlier tasks). It was killed and "
            f"replaced", task_position=pos, limit=mem, used=grown))

    # -- bars -----------------------------------------------------------------------
    def _flush_bars(self, now: float) -> None:
        if not self.runs:
            return
        live: Dict[int, Tuple[int, int]] = {}
        if now - self.counted_at >= UPDATE_INTERVAL:
            self.counted_at = now
            live = self._counting_now()
        for run in self.runs.values():
            self._flush_run_bar(run, now, live=live.get(run.id, (0, 0)))

    def _flush_run_bar(self, run: Run, now: float, force: bool = False,
                       live: Tuple[int, int] = (0, 0)) -> None:
        """Send the bar what changed. It counts tasks, or, in a run whose function calls
        functions decorated with @add_progress, those calls (as published parallelbar
        does, flag or not), plus the tasks that failed. ``live``: calls counted by
        tasks still running, shown now, confirmed when their results arrive."""
        if run.opts.disable or (not force and (now - run.bar_flushed < UPDATE_INTERVAL
                                               or run.bar_open is not None)):
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
            self._open_bar(run)
            self.bars().send(("update", run.id, step_done, step_failed, postfix))

    def _counting_now(self) -> Dict[int, Tuple[int, int]]:
        """Per run: @add_progress calls counted by tasks still running (not yet
        reported with their results)."""
        live: Dict[int, Tuple[int, int]] = {}
        for w in self.workers:
            d, e = self.backend.counters(w)
            d, e = int(d) - w.reported_done, int(e) - w.reported_err
            if d or e:
                run_id = self.backend.slot(w)[0]
                old = live.get(run_id, (0, 0))
                live[run_id] = (old[0] + d, old[1] + e)
        return live


_KILLED_FOR = {"TaskTimeoutError": "timeout", "MemoryLimitError": "memory limit"}


def _death_reason(code: Optional[int]) -> str:
    from .errors import signal_name
    name = signal_name(code)
    if name is not None:
        return name
    return "vanished" if code is None else f"exit code {code}"


def _failure(packed: Any) -> Failure:
    """A worker's packed exception: plain data from a process, an object from a thread."""
    if isinstance(packed, Failure):
        return packed
    return Failure.from_worker(packed)

