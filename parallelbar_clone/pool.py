"""ProgressPool: the public pool; one call's path through the engine is drawn in the
package docstring (``parallelbar_clone/__init__.py``).

The pool owns a backend (processes or threads), the manager thread
(:mod:`.manager`) and, once a run shows bars, the bar thread (:mod:`.bar`). Each
call becomes a :class:`~.run.Run`; the calling thread feeds its input
(:mod:`.feed`) and takes its results (:mod:`.results`).
"""
from __future__ import annotations

import itertools
import logging
import threading
import weakref
from time import monotonic
from typing import Any, Callable, Dict, Iterable, Optional

from .backends import ProcessBackend, ThreadBackend, _func_name
from .bar import BarThread
from .errors import SerializationError
from .feed import Feeder
from .journal import Journal, task_digest
from .manager import BAR_OPEN_WAIT, Manager, as_exception
from .options import Options, check_func
from .results import ResultIterator, collect
from .run import Run
from .summary import RunSummary
from .worker import MainReentry, importing_main

log = logging.getLogger("parallelbar_clone")

__all__ = ["ProgressPool", "last_summary"]

_latest = threading.local()


def last_summary() -> Optional[RunSummary]:
    """What happened in the latest call made from this thread (``progress_map`` and
    friends included): per-task durations, failures with their tasks and tracebacks,
    retries, workers replaced, a timeline; see :class:`~.summary.RunSummary`."""
    return getattr(_latest, "summary", None)


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
        one_call = options.pop("_one_call", False)   # made by progress_map and its kin
        self._options = Options(n_cpu=n_cpu, **options)
        if importing_main():
            # A worker is importing a script that starts a pool outside an
            # `if __name__ == '__main__':` guard: stop the import here (see import_main).
            raise MainReentry()
        self._backend: Any = _make_backend(self._options, preload, one_call)
        self._bars = _Bars()
        self._closing: Optional[str] = None
        self.last_summary: Optional[RunSummary] = None
        """What happened in the latest call on this pool (see :class:`RunSummary`)."""
        self._manager = Manager(self._options, self._backend, self._bars.get)
        # Dropped without close() (a notebook cell run again rebinds `pool`): its workers
        # stop when it is collected, as a multiprocessing Pool's do. (Nothing of ours holds
        # the pool: its threads hold the manager and the bars; an iterator of its holds it.)
        self._finalizer = weakref.finalize(self, _abandoned, self._manager, self._bars)
        self._finalizer.atexit = False   # (at exit, _terminate_live_pools does it, waiting)
        _LIVE_POOLS.add(self)

    # ------------------------------------------------------------------ public API
    def map(self, func: Callable[[Any], Any], tasks: Iterable[Any], **options: Any) -> Any:
        """Apply ``func`` to every task; a list in task order (see ``progress_map``)."""
        return self._gather(func, tasks, "map", options)

    def starmap(self, func: Callable[..., Any], tasks: Iterable[Iterable[Any]],
                **options: Any) -> Any:
        """Like :meth:`map`, calling ``func(*task)``."""
        return self.map(_Star(func), tasks, **options)

    def imap(self, func: Callable[[Any], Any], tasks: Iterable[Any],
             **options: Any) -> ResultIterator:
        """A lazy iterator of results in task order. Input is pulled as results are
        consumed, so an endless generator streams in bounded memory."""
        return self._iterate(func, tasks, "imap", options, ordered=True)

    def imap_unordered(self, func: Callable[[Any], Any], tasks: Iterable[Any],
                       **options: Any) -> ResultIterator:
        """Like :meth:`imap`, yielding results as they complete."""
        return self._iterate(func, tasks, "imapu", options, ordered=False)

    def close(self) -> None:
        """Cancel unfinished runs (an ``imap`` iterator still held after a ``break``:
        iterating it further raises), stop the workers and wait for them. The end of a
        ``with`` block does this, or :meth:`terminate` if the block raised."""
        self._shutdown("close")

    def terminate(self) -> None:
        """Kill the workers now."""
        self._shutdown("terminate")

    def __enter__(self) -> "ProgressPool":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self._shutdown("terminate" if exc_type is not None else "close")

    # ------------------------------------------------------------------ caller side
    def _gather(self, func: Callable[[Any], Any], tasks: Iterable[Any], mode: str,
                options: Dict[str, Any]) -> Any:
        """A whole run as a list, in task order ('map', 'imap') or completion order."""
        run = self._submit(func, tasks, mode, options, collected=True)
        return collect(run, self._feeder(run), self._cancel, self._wait_bar)

    def _iterate(self, func: Callable[[Any], Any], tasks: Iterable[Any], mode: str,
                 options: Dict[str, Any], ordered: bool) -> ResultIterator:
        run = self._submit(func, tasks, mode, options)
        feeder = self._feeder(run)
        try:
            feeder.top_up()   # workers start on the first tasks before the first next()
        except BaseException:
            self._cancel(run)
            raise
        return ResultIterator(run, feeder, self._cancel, self._wait_bar, ordered)

    def _feeder(self, run: Run) -> Feeder:
        return Feeder(run, self._backend, self._manager)

    def _submit(self, func: Callable[[Any], Any], tasks: Iterable[Any], mode: str,
                options: Dict[str, Any], collected: bool = False) -> Run:
        opts = self._options.with_call(**options)
        check_func(func)
        try:
            iter(tasks)
        except TypeError:
            raise TypeError(f"tasks must be iterable, got {type(tasks).__name__} {tasks!r}"
                            ) from None
        self._backend.check_call(opts)
        if self._manager.broken is not None:
            raise as_exception(self._manager.broken)
        if self._closing is not None:
            raise ValueError("this ProgressPool is closed")
        run = Run(func, tasks, opts, mode, self._manager.wanted, _func_name(func), collected)
        self.last_summary = run.summary
        _latest.summary = run.summary
        if hasattr(self._backend, "function_payload"):
            try:
                run.payload = self._backend.function_payload(func)
            except Exception as exc:
                raise SerializationError(
                    f"function {run.name} cannot be sent to a worker process by pickle or dill: "
                    f"{exc}") from exc
        if opts.checkpoint is not None:
            self._open_journal(run)
        elif hasattr(self._backend, "inherited_key"):   # process workers
            run.inherited = self._backend.inherited_key(tasks)
            if run.inherited is not None or type(tasks) is range:
                run.sliced = tasks
        if not opts.disable:   # (the manager opens it: see Manager._open_bar)
            postfix = f"resumed={run.resumed}" if run.resumed else None
            submitted = monotonic()
            run.bar_open = [("open", run.id, run.total, "DONE", run.resumed, postfix, submitted)]
            if run.resumed_failed:
                run.bar_open.append(("update", run.id, 0, run.resumed_failed, None))
            run.bar_due = submitted + BAR_OPEN_WAIT
        self._manager.post("submit", run)
        return run

    def _open_journal(self, run: Run) -> None:
        """Open (or create) the run's journal; load what it already holds."""
        head = list(itertools.islice(run.source, 100))
        run.source = itertools.chain(head, run.source)
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

    def _cancel(self, run: Run, wait: bool = True) -> None:
        """End a run early; by default wait till its workers are stopped and its
        journal flushed."""
        self._manager.post("cancel", run)
        if wait and threading.current_thread() is not self._manager.thread:
            run.ended.wait(10.0)

    def _wait_bar(self, run: Run) -> None:
        if not run.opts.disable:
            run.bar_closed.wait(2.0)

    def _shutdown(self, how: str) -> None:
        if self._closing is None or how == "terminate":
            self._closing = how
        self._manager.post("shutdown", how)
        if threading.current_thread() is not self._manager.thread:
            self._manager.closed.wait(10.0)
            self._manager.thread.join(2.0)
        self._bars.stop()
        self._finalizer.detach()
        _LIVE_POOLS.discard(self)


def _make_backend(options: Options, preload: Any, one_call: bool) -> Any:
    if options.executor == "processes":
        return ProcessBackend(options, preload, one_call)
    if options.executor == "threads":
        return ThreadBackend(options)
    from .dask_backend import DaskBackend   # 'dask', a scheduler address or a Client
    return DaskBackend(options)


def _qualified_name(func: Any) -> str:
    inner = getattr(func, "func", func)  # _Star, functools.partial
    inner = getattr(inner, "__wrapped__", inner)
    module = getattr(inner, "__module__", None) or "?"
    return f"{module}.{getattr(inner, '__qualname__', _func_name(inner))}"


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



class _Bars:
    """The pool's bar thread, started when a run first shows bars."""

    __slots__ = ("lock", "thread")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread: Optional[BarThread] = None

    def get(self) -> BarThread:
        with self.lock:
            if self.thread is None:
                self.thread = BarThread()
            return self.thread

    def stop(self, wait: bool = True) -> None:
        if self.thread is not None:
            if wait:
                self.thread.stop()
            else:
                self.thread.send(None)


def _abandoned(manager: Manager, bars: _Bars) -> None:
    """A pool collected without close(): stop its workers and threads, waiting for
    nothing (this runs wherever the garbage collector does)."""
    log.debug("a ProgressPool was dropped without close(): terminating its workers")
    manager.post("shutdown", "terminate")
    bars.stop(wait=False)


_LIVE_POOLS: "weakref.WeakSet[ProgressPool]" = weakref.WeakSet()


def _terminate_live_pools() -> None:
    for pool in list(_LIVE_POOLS):
        try:
            pool.terminate()
        except Exception:
            pass


import atexit  # noqa: E402

atexit.register(_terminate_live_pools)
