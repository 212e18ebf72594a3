"""One call (map, imap, imap_unordered) as it runs: the state the consuming thread
and the manager thread share, and who may touch what.

A task's life::

    input --(consumer: pull, encode)--> ready --(manager: dispatch)--> in a worker
        ^                                                                  |
        +--(consumer: encode again)-- requeue <--(manager: its worker died,   |
                                                 or a retry is due)           |
                                                                             v
        consumer <--(out: pieces of outcomes)-- manager: delivered, exactly once

- The consuming thread (the caller's, in ``map`` or while iterating ``imap``)
  owns the input: ``source``, ``taken``, ``pacer``, the journal replay; it
  appends encoded chunks to ``ready`` and takes pieces from ``out``.
- The manager thread owns delivery: ``delivered``, ``finished``, retries, the
  bar counts, the journal writes; it takes chunks from ``ready`` (and puts back at
  its front, as they are, the chunks a dead worker had not begun), puts tasks to
  encode again on ``requeue``, and pieces on ``out``.
- ``ready`` and ``requeue`` are deques (thread-safe appends and pops); the byte
  and task counters each have one writer.
"""
from __future__ import annotations

import itertools
import operator
import queue
import threading
from collections import deque
from time import monotonic
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from . import serialize
from .options import Options
from .outcomes import Failure
from .schedule import ChunkPolicy, InputPacer, read_ahead_allows
from .summary import RunSummary

__all__ = ["Run", "Chunk", "InputView", "Delivered", "Piece", "Outbox", "guess_total",
           "COLLECTED_WAIT", "SEQUENCES"]

SEQUENCES = (list, tuple, range)   # tasks read by position: no user code runs to pull them


def guess_total(tasks: Any, total: Optional[int]) -> Optional[int]:
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


class InputView:
    """Tasks ``lo .. hi-1`` of ``Run.sliced`` (a list, tuple or range that every worker
    inherited, or a range), not copied: the caller's thread neither pickles
    them nor touches them (after the pool's forks, a touch of an item, a reference
    count, costs a page copy), unless a task must be sent again or fails."""

    __slots__ = ("source", "lo", "hi")

    def __init__(self, source: Any, lo: int, hi: int) -> None:
        self.source, self.lo, self.hi = source, lo, hi

    def __len__(self) -> int:
        return self.hi - self.lo

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            a, b, step = index.indices(self.hi - self.lo)
            if step != 1:
                return list(self)[index]
            return InputView(self.source, self.lo + a, self.lo + max(a, b))
        if index < 0:
            index += self.hi - self.lo
        if not 0 <= index < self.hi - self.lo:
            raise IndexError("InputView index out of range")
        return self.source[self.lo + index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.source[self.lo:self.hi])


class Chunk:
    """Tasks ``start .. end-1`` of a run, encoded for a worker."""

    __slots__ = ("run", "start", "items", "nbytes", "done", "end", "payload", "digest",
                 "sent_at")

    def __init__(self, run: "Run", start: int, items: List[Any]) -> None:
        self.run = run
        self.start = start
        self.items = items
        self.done = start            # first position not yet reported
        self.end = start + len(items)
        self.nbytes = 0
        self.payload: Any = None
        self.digest: Optional[str] = None   # of the pickled tasks, when a journal wants it
        self.sent_at = 0.0


class Piece:
    """Outcomes of tasks ``start .. start+n-1``, as the manager hands them to the
    consuming thread: results as a worker's blob (or as objects, from a thread
    worker or the journal), failures as :class:`Failure` records."""

    __slots__ = ("start", "n", "values", "blob", "dilled", "failures", "items", "inner",
                 "nbytes", "skip")

    def __init__(self, start: int, n: int, *, values: Optional[List[Any]] = None,
                 blob: Optional[serialize.Bytes] = None, dilled: bool = False,
                 failures: Optional[Dict[int, Failure]] = None,
                 items: Optional[Dict[int, Any]] = None, inner: Any = None) -> None:
        self.start = start
        self.n = n
        self.values = values
        self.blob = blob
        self.dilled = dilled
        self.failures = failures
        self.items = items          # failed positions -> their tasks (return_failed_tasks)
        self.inner = inner          # add_progress calls that failed: a list, or pickled
        self.nbytes = len(blob) if blob is not None else 0
        self.skip: Optional[set] = None   # positions whose outcome comes later (a retry)


class Delivered:
    """Which positions have their final outcome: a window of flags over positions
    ``base ..``, so that no path can deliver a position twice, in memory that stays
    small over an endless stream (the delivered prefix is dropped)."""

    __slots__ = ("base", "flags")

    def __init__(self) -> None:
        self.base = 0
        self.flags = bytearray()

    def claim(self, start: int, n: int) -> List[Tuple[int, int]]:
        """Mark ``start .. start+n-1`` delivered; return the sub-ranges ``(a, b)`` that
        were not already (normally the whole range)."""
        end = start + n
        if end <= self.base:
            return []
        lo = max(start, self.base) - self.base
        hi = end - self.base
        if hi > len(self.flags):
            self.flags.extend(bytes(hi - len(self.flags)))
        if self.flags.find(1, lo, hi) == -1:     # the usual case, at C speed
            self.flags[lo:hi] = b"\x01" * (hi - lo)
            fresh = [(lo + self.base, end)]
        else:
            fresh = []
            i = lo
            while i < hi:
                if self.flags[i]:
                    i += 1
                    continue
                j = i
                while j < hi and not self.flags[j]:
                    j += 1
                self.flags[i:j] = b"\x01" * (j - i)
                fresh.append((i + self.base, j + self.base))
                i = j
        self._compact()
        return fresh

    def _compact(self) -> None:
        if len(self.flags) < 65536:
            return
        first = self.flags.find(0)
        if first == -1:
            first = len(self.flags)
        if first >= 32768:
            del self.flags[:first]
            self.base += first

    def __contains__(self, pos: int) -> bool:
        if pos < self.base:
            return True
        i = pos - self.base
        return i < len(self.flags) and bool(self.flags[i])


COLLECTED_WAIT = 0.1   # results gathered into a list wake their consumer this often at most...
WAKE_BYTES = 4 << 10   # ...unless those waiting hold this many bytes


class Outbox:
    """Pieces and messages from the manager to the consuming thread.

    Waking a thread costs a context switch, and on a machine whose cores all run
    workers it costs a worker its core: so the manager wakes the consumer at once
    only for what cannot wait (the end, a failure, tasks to encode again, input
    running low), and for results at most every ``interval`` seconds, unless those
    waiting hold ``WAKE_BYTES``: decoding them is worth a wake, and is done while the
    workers run rather than all at the end, a little at a time (the consumer keeps
    the GIL while pieces wait: decoding 32 KB at a time, the manager waited for it,
    and on 16 cores waiting for work between 1 ms tasks went 1.9 % -> 3.4 %). The
    consumer also looks on its own every ``WAIT`` seconds."""

    __slots__ = ("items", "event", "interval", "woken", "due", "waiting")

    def __init__(self, interval: float) -> None:
        self.items: Deque[Any] = deque()
        self.event = threading.Event()
        self.interval = interval
        self.woken = 0.0
        self.due = False            # results wait for the next wake...
        self.waiting = 0            # ...holding this many bytes

    def put(self, message: Any, urgent: bool = False, nbytes: int = 0) -> None:
        self.items.append(message)
        self.waiting += nbytes
        if urgent or not self.interval or self.waiting >= WAKE_BYTES:
            self.wake()
        else:
            self.due = True

    def wake(self) -> None:
        self.due = False
        self.waiting = 0
        self.woken = monotonic()
        self.event.set()

    def wake_if_due(self, now: float) -> Optional[float]:
        """Wake the consumer if results waited long enough; else when to look again."""
        if not self.due:
            return None
        if now - self.woken >= self.interval:
            self.wake()
            return None
        return self.woken + self.interval - now

    def get(self, timeout: float) -> Any:
        """The next message; raises ``queue.Empty`` after ``timeout`` without one, or
        when woken without one (the manager wants the input topped up)."""
        try:
            return self.items.popleft()
        except IndexError:
            pass
        self.event.wait(timeout)
        self.event.clear()   # (a message put from here on sets it again)
        try:
            return self.items.popleft()
        except IndexError:
            raise queue.Empty from None


class Run:
    """State of one map/imap call (see the module docstring for who owns what)."""

    _ids = itertools.count(1)

    def __init__(self, func: Callable[[Any], Any], tasks: Iterable[Any], opts: Options,
                 mode: str, workers: int, name: str, collected: bool = False) -> None:
        self.id = next(self._ids)
        self.func = func
        self.name = name
        self.opts = opts
        self.mode = mode                     # 'map', 'imap', 'imapu'
        self.workers = workers
        self.total = guess_total(tasks, opts.total)
        self.state = "new"                   # new -> active -> done | failed
        self.payload: Any = None             # the function, serialized once per run
        self.payload_by_value = False        # re-sent by value after a worker failed by name
        self.items_by_value = False          # tasks by value after a worker failed by name
        self.timing = opts.process_timeout is not None or opts.memory_limit is not None
        self.deadline = monotonic() + opts.timeout if opts.timeout is not None else None
        self.policy = ChunkPolicy(opts.chunk_size, opts.maxtasksperchild, self.total)
        self.summary = RunSummary(self.total, name)   # (recorded by the manager)
        self.summary.started()
        # -- the consuming thread's
        self.source: Any = iter(tasks)
        self.safe_source = type(tasks) in SEQUENCES  # no user code to pull it
        # Set by the pool: the tasks, read as InputViews, not item by item; and the key
        # under which every worker inherited them (a one-call pool under 'fork', forked
        # after they were made: see ProcessBackend.inherited_key), whose chunks are then
        # sent as positions. Else (a range) a chunk is sent as a range.
        self.sliced: Optional[Any] = None
        self.inherited: Optional[int] = None
        self.pacer = InputPacer()
        self.taken = 0                       # positions pulled from the input
        self.exhausted = False               # the input is used up (or failed)
        self.input_error: Optional[Tuple[int, BaseException]] = None
        self.consumed = 0                    # positions handed to the caller
        self.bytes_sent = 0                  # encoded bytes of chunks made...
        self.bytes_taken = 0                 # ...of results taken by the consumer
        self.journal: Any = None
        self.resume: Dict[int, Tuple[bool, Any]] = {}    # journalled outcomes still to replay
        self.resumed = 0
        self.resumed_failed = 0
        self.verify: Dict[int, Tuple[int, Optional[str]]] = {}  # piece start -> (n, digest)
        self.verifying: Optional[Tuple[int, int, Optional[str], List[Any]]] = None
        # -- shared channels
        self.ready: Deque[Chunk] = deque()   # encoded, waiting for a worker
        self.requeue: Deque[Tuple[int, List[Any]]] = deque()   # to encode again, first
        # results gathered into a list (map, and progress_imap's list): nobody looks at
        # them one by one, so they wait for their consumer (see Outbox)
        self.out = Outbox(COLLECTED_WAIT if collected else 0.0)
        # -- the manager's
        self.delivered = Delivered()
        self.finished = 0                    # positions with a final outcome
        self.bytes_done = 0                  # encoded bytes of chunks finished...
        self.bytes_out = 0                   # ...and of results handed to the consumer
        self.bar_open: Optional[List[tuple]] = None   # the bar's first messages, sent once
        self.bar_due = 0.0                   # ...once workers are served, or by then
        self.bar_done = 0
        self.bar_failed = 0
        self.bar_flushed = 0.0
        self.inner_done = 0                  # calls counted by @add_progress in workers
        self.inner_failed = 0
        self.shown_done = 0                  # what the bars show
        self.shown_failed = 0
        self.bar_closed = threading.Event()
        self.ended = threading.Event()       # workers stopped, journal flushed
        self.attempts: Dict[int, int] = {}
        self.history: Dict[int, List[str]] = {}
        self.delayed: List[Tuple[float, int, Any]] = []   # heap: (ready at, position, task)
        self.retried = 0
        self.retried_shown = 0

    # -- read-ahead ---------------------------------------------------------------------
    def held_bytes(self) -> int:
        return (self.bytes_sent - self.bytes_done) + (self.bytes_out - self.bytes_taken)

    def may_read_ahead(self) -> bool:
        chunk = max(1, self.policy.last)
        return read_ahead_allows(self.taken - self.consumed, self.held_bytes(), self.workers,
                                 chunk, self.policy.per_task)

    def next_size(self) -> int:
        remaining = self.total - self.taken if self.total is not None else None
        return self.policy.size(remaining, self.workers)

    # -- the manager's view ------------------------------------------------------------
    def has_work(self) -> bool:
        return bool(self.ready)

    def complete(self) -> bool:
        return (self.exhausted and not self.ready and not self.requeue and not self.delayed
                and self.finished >= self.taken)
