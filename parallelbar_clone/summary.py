"""What happened in one run, for the caller to look at afterwards.

A :class:`RunSummary` is filled in by the pool's manager thread while a run goes
on, through small recording methods (one call per event, or one per piece of
results with :meth:`RunSummary.tasks_done`), and read by anyone at any time: each
reading returns a copy taken under a lock, so reading during a run is safe.

Recording, in the order a run meets them::

    started(at=None)                                   the run begins
    chunk_ran(worker_pid, start_time, end_time, n_tasks)  a worker ran a chunk
    task_done(position, duration=None)                 one task succeeded
    tasks_done(positions, durations=None)              many did (a piece of results)
    retried(position, exc)                             a failed attempt will be retried
    task_failed(position, task, exc, duration=None)    a task's failure is final
    worker_replaced(pid, reason)                       a worker was killed or died, and replaced
    finished(at=None)                                  the run ended

Times are seconds on :func:`time.monotonic`'s clock (the ``clock`` given to the
constructor), which on one machine is shared by every process, so a worker's
own readings may be passed as they are.

Reading: :attr:`~RunSummary.durations`, :attr:`~RunSummary.failures` (with
tracebacks and tasks), :attr:`~RunSummary.retries`,
:attr:`~RunSummary.worker_restarts`, :attr:`~RunSummary.chunks`,
:meth:`~RunSummary.counts_by_type`, :attr:`~RunSummary.slowest_task`,
:attr:`~RunSummary.wall_time`; :meth:`~RunSummary.line` gives one line for the
end of a run, and :meth:`~RunSummary.plot_timeline` draws the workers over time
with matplotlib (``pip install 'parallelbar_clone[plot]'``).
"""
from __future__ import annotations

import threading
import time
import traceback as _traceback
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = ["RunSummary", "TaskFailure", "Retry", "WorkerRestart", "ChunkRun"]

PLOT_EXTRA = "pip install 'parallelbar_clone[plot]'"


class TaskFailure:
    """A task whose failure is final: ``position``, ``task`` (its argument),
    ``exception``, ``traceback`` (the worker's text), ``duration`` (where measured),
    ``at`` (clock seconds) and ``type_name``.

    The pool records failures as plain data (its manager never loads a worker's
    exception); ``exception`` is loaded the first time it is read, in the reading
    thread."""

    __slots__ = ("position", "task", "_exception", "_record", "_traceback", "type_name",
                 "duration", "at")

    def __init__(self, position: int, task: Any, exception: Optional[BaseException],
                 traceback: Optional[str], duration: Optional[float], at: float, *,
                 record: Any = None, type_name: Optional[str] = None) -> None:
        self.position = position
        self.task = task
        self._exception = exception
        self._record = record
        self._traceback = traceback
        self.type_name = type_name or type(exception).__name__
        self.duration = duration
        self.at = at

    @property
    def exception(self) -> BaseException:
        if self._exception is None:
            self._exception = self._record.exception()
        return self._exception

    @property
    def traceback(self) -> str:
        if self._traceback is None:
            self._traceback = _traceback_text(self.exception)
        return self._traceback

    def __repr__(self) -> str:
        return f"TaskFailure(position={self.position}, type_name={self.type_name!r})"


@dataclass(frozen=True)
class Retry:
    """A failed attempt that was run again."""

    position: int
    type_name: str
    message: str
    at: float


@dataclass(frozen=True)
class WorkerRestart:
    """A worker that was killed or died, and was replaced."""

    pid: Optional[int]
    reason: str            #: e.g. 'timeout', 'memory limit', 'SIGSEGV', 'exit code 3'
    at: float


@dataclass(frozen=True)
class ChunkRun:
    """A chunk of tasks one worker ran, from start_time to end_time."""

    worker_pid: Optional[int]
    start_time: float
    end_time: float
    n_tasks: int


def _traceback_text(exc: BaseException) -> str:
    """The worker's traceback (``exc.traceback``, set by this library), else the local one."""
    remote = getattr(exc, "traceback", None)
    if isinstance(remote, str) and remote:
        return remote
    return "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"
    return f"{value / 60:.1f} min"


class RunSummary:
    """What happened in one run: durations, failures, retries, worker restarts, chunks.

    Memory stays bounded over endless streams: beyond ``max_records`` per kind, the
    records themselves are dropped (the counts, counts by type and the slowest
    task stay exact).

    Parameters
    ----------
    total : int, optional
        The number of tasks, when known (used by :meth:`line`).
    name : str, optional
        What ran (the function's name), for :meth:`line` and ``repr``.
    clock : callable, optional
        The clock that ``at`` values, :meth:`started`, :meth:`finished` and
        ``chunk_ran`` times are read on; default :func:`time.monotonic`.
    """

    def __init__(self, total: Optional[int] = None, name: Optional[str] = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 max_records: int = 100_000) -> None:
        self.total = total
        self.name = name
        self._clock = clock
        self.max_records = max_records
        self._counts: Counter = Counter()
        self._n_failed = 0
        self._n_retries = 0
        self._slowest: Optional[Tuple[int, float]] = None
        self._lock = threading.Lock()
        self._started: Optional[float] = None
        self._finished: Optional[float] = None
        self._n_done = 0
        self._durations: Dict[int, float] = {}
        self._failures: List[TaskFailure] = []
        self._retries: List[Retry] = []
        self._restarts: List[WorkerRestart] = []
        self._chunks: List[ChunkRun] = []

    # ------------------------------------------------------------------ recording
    def started(self, at: Optional[float] = None) -> None:
        """The run began (now, or at clock time ``at``)."""
        with self._lock:
            self._started = self._clock() if at is None else at

    def finished(self, at: Optional[float] = None) -> None:
        """The run ended (now, or at clock time ``at``)."""
        with self._lock:
            self._finished = self._clock() if at is None else at

    def _duration(self, position: int, duration: float) -> None:
        if len(self._durations) < self.max_records:
            self._durations[position] = duration
        if self._slowest is None or duration > self._slowest[1]:
            self._slowest = (position, duration)

    def task_done(self, position: int, duration: Optional[float] = None) -> None:
        """Task ``position`` succeeded, after ``duration`` seconds where measured."""
        with self._lock:
            self._n_done += 1
            if duration is not None:
                self._duration(position, duration)

    def tasks_done(self, positions: Iterable[int],
                   durations: Optional[Sequence[Optional[float]]] = None) -> None:
        """Many tasks succeeded (e.g. one piece of results): ``positions`` may be a
        ``range``; ``durations``, where given, lines up with it."""
        with self._lock:
            if durations is None:
                self._n_done += (len(positions) if hasattr(positions, "__len__")  # type: ignore[arg-type]
                                 else sum(1 for _ in positions))
                return
            n = 0
            for position, duration in zip(positions, durations):
                n += 1
                if duration is not None:
                    self._duration(position, duration)
            self._n_done += n

    def task_failed(self, position: int, task: Any, exc: Optional[BaseException] = None,
                    duration: Optional[float] = None, *, record: Any = None) -> None:
        """Task ``position`` (argument ``task``) failed for good with ``exc``, or with
        what ``record`` (an ``outcomes.Failure``, loaded when first read) describes."""
        if exc is not None:
            failure = TaskFailure(position, task, exc, _traceback_text(exc), duration,
                                  self._clock())
        else:
            failure = TaskFailure(position, task, None, record.tb or None, duration,
                                  self._clock(), record=record,
                                  type_name=record.type_name.rpartition(".")[2])
        with self._lock:
            self._n_failed += 1
            self._counts[failure.type_name] += 1
            if len(self._failures) < self.max_records:
                self._failures.append(failure)
            if duration is not None:
                self._duration(position, duration)

    def retried(self, position: int, exc: Optional[BaseException] = None, *,
                type_name: Optional[str] = None, message: Optional[str] = None) -> None:
        """An attempt at task ``position`` failed with ``exc`` (or one of ``type_name``,
        saying ``message``) and will be run again."""
        if exc is not None:
            type_name, message = type(exc).__name__, str(exc)
        retry = Retry(position, type_name or "?", message or "", self._clock())
        with self._lock:
            self._n_retries += 1
            if len(self._retries) < self.max_records:
                self._retries.append(retry)

    def worker_replaced(self, pid: Optional[int], reason: str) -> None:
        """Worker ``pid`` was killed or died (``reason``, a few words) and replaced."""
        restart = WorkerRestart(pid, reason, self._clock())
        with self._lock:
            if len(self._restarts) < self.max_records:
                self._restarts.append(restart)

    def chunk_ran(self, worker_pid: Optional[int], start_time: float, end_time: float,
                  n_tasks: int) -> None:
        """Worker ``worker_pid`` ran ``n_tasks`` tasks from ``start_time`` to ``end_time``."""
        with self._lock:
            if len(self._chunks) < self.max_records:
                self._chunks.append(ChunkRun(worker_pid, start_time, end_time, n_tasks))

    # ------------------------------------------------------------------ reading
    @property
    def n_done(self) -> int:
        """Tasks that succeeded."""
        return self._n_done

    @property
    def n_failed(self) -> int:
        """Tasks whose failure is final."""
        return self._n_failed

    @property
    def durations(self) -> Dict[int, float]:
        """Seconds each task ran, by position, for the tasks where it was measured."""
        with self._lock:
            return dict(self._durations)

    @property
    def failures(self) -> List[TaskFailure]:
        """Final failures in the order they happened, each with its task and traceback."""
        with self._lock:
            return list(self._failures)

    @property
    def retries(self) -> List[Retry]:
        with self._lock:
            return list(self._retries)

    @property
    def worker_restarts(self) -> List[WorkerRestart]:
        with self._lock:
            return list(self._restarts)

    @property
    def chunks(self) -> List[ChunkRun]:
        with self._lock:
            return list(self._chunks)

    def counts_by_type(self) -> Dict[str, int]:
        """Final failures by exception type name, most frequent first."""
        with self._lock:
            counts = dict(self._counts)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def slowest_task(self) -> Optional[Tuple[int, float]]:
        """``(position, seconds)`` of the longest measured task, or None."""
        with self._lock:
            return self._slowest

    @property
    def wall_time(self) -> Optional[float]:
        """Seconds from :meth:`started` to :meth:`finished` (to now while running)."""
        with self._lock:
            if self._started is None:
                return None
            end = self._finished if self._finished is not None else self._clock()
            return end - self._started

    def line(self) -> str:
        """One line for the end of a run, e.g.
        ``5 of 80 tasks failed: WorkerDiedError 2, MemoryLimitError 1, ValueError 1,
        TaskTimeoutError 1; slowest: task 19 (2.00 s); 3 workers replaced; 4 retries; 22.2 s``.
        """
        counts = self.counts_by_type()
        failed = sum(counts.values())
        done = self._n_done
        total = self.total if self.total is not None else done + failed
        if failed:
            parts = [f"{failed} of {total} tasks failed: "
                     + ", ".join(f"{name} {n}" for name, n in counts.items())]
        else:
            parts = [f"{done} of {total} tasks done"]
        slowest = self.slowest_task
        if slowest is not None:
            parts.append(f"slowest: task {slowest[0]} ({_seconds(slowest[1])})")
        restarts = len(self._restarts)
        if restarts:
            parts.append(f"{restarts} worker{'s' if restarts != 1 else ''} replaced")
        retries = self._n_retries
        if retries:
            parts.append(f"{retries} retr{'ies' if retries != 1 else 'y'}")
        wall = self.wall_time
        if wall is not None:
            parts.append(_seconds(wall))
        return "; ".join(parts)

    __str__ = line

    def __repr__(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        return (f"<RunSummary{name}: {self._n_done} done, {self._n_failed} failed, "
                f"{self._n_retries} retries, {len(self._restarts)} workers replaced>")

    # ------------------------------------------------------------------ picture
    def plot_timeline(self, ax: Any = None) -> Any:
        """Draw what each worker ran over time: one row per worker pid, a box per
        chunk, a red ``x`` where a worker was replaced, red ticks on the top row
        where tasks failed for good. Returns the matplotlib ``Axes``.

        Needs matplotlib (``pip install 'parallelbar_clone[plot]'``); without it,
        raises ImportError saying so.
        """
        try:
            if ax is None:
                import matplotlib.pyplot as plt
            else:
                import matplotlib  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"RunSummary.plot_timeline needs matplotlib: {PLOT_EXTRA}"
                              ) from exc
        chunks, restarts, failures = self.chunks, self.worker_restarts, self.failures
        with self._lock:
            started = self._started
        times = [c.start_time for c in chunks] + [r.at for r in restarts] + [f.at for f in failures]
        t0 = started if started is not None else (min(times) if times else 0.0)

        pids: List[Optional[int]] = []
        for chunk in sorted(chunks, key=lambda c: c.start_time):
            if chunk.worker_pid not in pids:
                pids.append(chunk.worker_pid)
        for restart in restarts:
            if restart.pid not in pids:
                pids.append(restart.pid)
        rows = {pid: i for i, pid in enumerate(pids)}
        fail_row = len(pids)

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * (len(pids) + 1)))
        for pid, row in rows.items():
            spans = [(c.start_time - t0, c.end_time - c.start_time) for c in chunks
                     if c.worker_pid == pid]
            if spans:
                ax.broken_barh(spans, (row - 0.35, 0.7), facecolors="tab:green",
                               edgecolors="white", linewidth=0.5)
        if restarts:
            ax.scatter([r.at - t0 for r in restarts], [rows[r.pid] for r in restarts],
                       marker="x", color="tab:red", zorder=3, label="worker replaced")
        if failures:
            ax.scatter([f.at - t0 for f in failures], [fail_row] * len(failures),
                       marker="|", s=200, color="tab:red", zorder=3, label="task failed")
        labels = [f"pid {pid}" if pid is not None else "?" for pid in pids]
        ax.set_yticks(list(range(len(pids))) + ([fail_row] if failures else []))
        ax.set_yticklabels(labels + (["failures"] if failures else []))
        ax.invert_yaxis()
        ax.set_xlabel("seconds since the run started")
        title = f"{self.name}: " if self.name else ""
        ax.set_title(f"{title}{self._n_done} done, {len(failures)} failed")
        if restarts or failures:
            ax.legend(loc="upper right", fontsize="small")
        return ax
