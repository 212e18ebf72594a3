"""How much to send at once, and how far to read ahead: the engine's pure policy.

No threads, no I/O: the numbers in, a decision out, so each rule can be tested
on its own (and mutation-tested, ``make mutate``).

- :class:`ChunkPolicy`: how many tasks go to a worker in one message. Adaptive
  unless ``chunk_size`` is given: the first chunks hold one task (a slow task at
  the head never has others queued behind it), then each aims at
  ``TARGET_CHUNK_SECONDS`` of measured work (a worker's time on a task includes
  loading it and pickling its result), growing at most 8-fold per chunk. With an
  input of known length a chunk is at most 1/``SHARES`` of a worker's share (as
  ``multiprocessing.Pool`` sizes its chunks), and near the end chunks shrink (to
  ``TAIL_SECONDS`` of work) so that the tail is shared by all workers. Chunks of
  about 0.2 s keep the caller's process quiet: on a machine whose cores all run
  workers, every message a worker sends costs it its core for a moment (each wakes
  the caller's threads, whose first steps then run with cold caches: a few hundred
  microseconds of a core per message on a 2-core machine). A chunk
  holds at most ``CHUNK_BYTES`` of tasks: bigger messages cost a fresh process a
  page fault per 4 KB each time (they are allocated outside the heap), which on
  2 cores made a 200 000-task map 20 % slower.
- :class:`InputPacer`: how many items to pull from the caller's iterable at once,
  so that pulling from a slow generator hands each item over as it comes instead
  of waiting for a chunk's worth.
- :func:`read_ahead_allows`: whether the input may be read further, bounded in
  tasks, in bytes (tasks sent and results not yet consumed) and in seconds of
  work, so a slow consumer keeps the caller's memory flat whatever the item size.
"""
from __future__ import annotations

from typing import Optional

__all__ = ["ChunkPolicy", "InputPacer", "read_ahead_allows", "TARGET_CHUNK_SECONDS",
           "MAX_CHUNK", "SHARES", "READ_AHEAD_BYTES", "READ_AHEAD_SECONDS", "READ_AHEAD_TASKS"]

TARGET_CHUNK_SECONDS = 0.2      # adaptive chunks aim at this much work each...
CHUNK_BYTES = 64 << 10          # ...and hold at most about this many bytes of tasks
SHARES = 4                      # known length: a worker's share in at least this many chunks
TAIL_SECONDS = 0.01             # near the end they shrink, down to this much work
MAX_CHUNK = 100_000
GROWTH = 8                      # a chunk is at most this many times the last one
SETTLED_CHUNKS = 8              # until this many chunks are measured, few are made ahead
READ_AHEAD_TASKS = 1024         # tasks read ahead of the consumer, at least...
READ_AHEAD_BYTES = 16 << 20     # ...but no more than this many bytes held for it...
READ_AHEAD_SECONDS = 2.0        # ...nor more than this much work per worker
PULL_SECONDS = 0.005            # pull from a slow input for about this long at a time,
TURN_SECONDS = 0.001            # from any input this long while chunks wait to be sent


class ChunkPolicy:
    """Chunk sizes for one run (see the module docstring)."""

    __slots__ = ("fixed", "cap", "total", "per_task", "last", "item_bytes", "measured",
                 "_busy", "_tasks", "_bytes", "_items", "_fit")

    def __init__(self, fixed: Optional[int] = None, cap: Optional[int] = None,
                 total: Optional[int] = None) -> None:
        self.fixed = fixed
        self.cap = min(MAX_CHUNK, cap) if cap is not None else MAX_CHUNK
        self.total = total                        # the input's length, if known
        self.per_task: Optional[float] = None   # measured seconds per task (EWMA)
        self.item_bytes: Optional[float] = None   # encoded bytes per task (EWMA)
        self.last = 0
        self.measured = 0                         # chunks measured
        self._busy = self._tasks = 0.0            # decaying sums behind per_task...
        self._bytes = self._items = 0.0           # ...and item_bytes
        self._fit = [0.0] * 5                     # decaying sums of 1, n, busy, n*n, n*busy

    def observe(self, n: int, busy: float) -> None:
        """``n`` tasks took ``busy`` seconds of a worker's time. Samples weigh by their
        task count, so one slow first task (a cold worker) does not outweigh a
        chunk of twenty, and older samples fade."""
        if n <= 0:
            return
        busy = max(busy, 0.0)
        self.measured += 1
        self._busy = 0.7 * self._busy + busy
        self._tasks = 0.7 * self._tasks + n
        self.per_task = self._busy / self._tasks
        fit = self._fit
        for i, x in enumerate((1.0, n, busy, n * n, n * busy)):
            fit[i] = 0.7 * fit[i] + x

    @property
    def settled(self) -> bool:
        """Measured enough chunks for the next measurements to change sizes little."""
        return self.measured >= SETTLED_CHUNKS

    def cost(self) -> "tuple[float, float]":
        """(seconds a chunk costs whatever its size, seconds each task adds): a line
        fitted to chunks of different sizes. A chunk's own cost (a message each way,
        a cold worker's first call) makes small chunks look slow per task: 42 us
        for a trivial task alone, 0.45 us in chunks of hundreds. Until chunks of
        different sizes are measured, or where the fit makes no sense, all of it is
        counted per task."""
        w, n, b, nn, nb = self._fit
        per_task = self.per_task or 0.0
        spread = w * nn - n * n
        if spread > 1e-9 * max(1.0, n * n):
            slope = (w * nb - n * b) / spread
            if 0 < slope < 0.999 * per_task:   # (else: no cost of its own to speak of)
                return max(0.0, (b - slope * n) / w), slope
        return 0.0, per_task

    def size(self, remaining: Optional[int], workers: int) -> int:
        """The next chunk's size; ``remaining``: tasks not yet taken, if known."""
        if self.fixed is not None:
            size = self.fixed
        elif self.per_task is None:
            size = 1
        else:
            fixed_cost, per_task = self.cost()
            size = int(max(TARGET_CHUNK_SECONDS - fixed_cost, TARGET_CHUNK_SECONDS / 2)
                       / max(per_task, 1e-9))
            size = min(size, max(1, self.last) * GROWTH)
            if self.total is not None:  # a worker's share in SHARES chunks at least
                size = min(size, -(-self.total // (SHARES * max(1, workers))))
            if remaining is not None:   # keep the tail balanced across workers...
                floor = int(TAIL_SECONDS / max(per_task, 1e-9))   # ...in steps this big
                size = min(size, max(1, min(floor, remaining),
                                     remaining // (2 * max(1, workers))))
            if self.item_bytes:         # big tasks: a chunk stays a pipe's worth
                size = min(size, int(CHUNK_BYTES / self.item_bytes))
        size = max(1, min(size, self.cap))
        return size

    def took(self, n: int, nbytes: int = 0) -> None:
        """A chunk of ``n`` tasks was made, ``nbytes`` bytes encoded."""
        self.last = n
        if n > 0 and nbytes > 0:   # (weighed by task count, as per_task is)
            self._bytes = 0.7 * self._bytes + nbytes
            self._items = 0.7 * self._items + n
            self.item_bytes = self._bytes / self._items


class InputPacer:
    """How many items to pull from the caller's iterable in one go.

    A fast input is pulled a chunk at a time. An input whose items take time to
    come (a generator reading a socket, a slow parser) is pulled a few items at a
    time, so each is on its way to a worker within about ``PULL_SECONDS`` of
    arriving, and the caller's thread is back for results soon."""

    __slots__ = ("per_item",)

    def __init__(self) -> None:
        self.per_item: Optional[float] = None   # seconds per item, as last measured

    def observe(self, n: int, seconds: float) -> None:
        if n > 0:
            self.per_item = seconds / n

    def size(self, wanted: int) -> int:
        if self.per_item is None:
            return 1     # until we know how fast it is
        if self.per_item <= 0:
            return max(1, wanted)
        return max(1, min(wanted, int(PULL_SECONDS / self.per_item)))


def read_ahead_allows(pending_tasks: int, held_bytes: int, workers: int, chunk: int,
                      per_task: Optional[float]) -> bool:
    """May more input be read? ``pending_tasks``: read but not yet consumed;
    ``held_bytes``: bytes of tasks sent and of results waiting for the consumer."""
    if held_bytes >= READ_AHEAD_BYTES:
        return False
    if per_task is None:   # nothing measured yet: a chunk per worker and one queued behind
        return pending_tasks < 2 * workers * chunk
    floor = max(READ_AHEAD_TASKS, 3 * workers * chunk)   # each worker: one running, one queued, one more
    if per_task is not None and per_task > 0:
        by_time = int(READ_AHEAD_SECONDS * workers / per_task)
        cap = max(min(floor, max(by_time, 2 * workers * chunk)), 1)
    else:
        cap = floor
    return pending_tasks < cap
