"""The input side of a run, done by the consuming thread (the caller's thread in
``map``, or whichever thread iterates an ``imap``).

Pulling the caller's iterable runs the caller's code (a generator may be slow,
may raise, may wait on a socket), and so does pickling tasks (``__reduce__``).
Neither may hold up the manager thread, which enforces deadlines. So the thread
that wants the results feeds the pool: between two results it tops the input up
to what :func:`schedule.read_ahead_allows`, encodes chunks and hands them to the
manager (``run.ready``). That also bounds memory naturally: input is read as
results are consumed. Ctrl-C while a slow generator is being pulled lands in the
caller's own thread, at once.
"""
from __future__ import annotations

import logging
from itertools import islice
from time import monotonic
from typing import Any, List, Optional, Tuple

from . import serialize
from .errors import ParallelBarError, SerializationError
from .journal import CheckpointMismatchError, has_sets, task_digest
from .outcomes import Failure
from .run import Chunk, InputView, Run
from .schedule import PULL_SECONDS, TURN_SECONDS

log = logging.getLogger("parallelbar_clone")

__all__ = ["Feeder"]


class Feeder:
    """Feeds one run; called by its consuming thread only."""

    def __init__(self, run: Run, backend: Any, manager: Any) -> None:
        self.run = run
        self.backend = backend
        self.manager = manager
        self.held = False   # chunks made and not handed over yet (see _encode)

    def top_up(self) -> None:
        """Encode what must be sent again, then read input while read-ahead allows."""
        try:
            self._top_up()
        finally:
            if self.held:
                self.held = False
                self.manager.hand_over()

    def _top_up(self) -> None:
        run = self.run
        if getattr(self.backend, "zygote_wanted", False):
            self._make_zygote()
        added = False
        started = monotonic()
        while run.state in ("new", "active"):
            if run.requeue:
                start, items = run.requeue.popleft()
                added = self._encode(start, items, front=True)
            elif run.exhausted or not run.may_read_ahead() or (
                    len(run.ready) >= 2 * run.workers and not run.policy.settled):
                # (while sizes still change, chunks made long before they are sent would be
                # sized by what was known then: at first a trivial task looks 100 times
                # too slow; later, topping up a chunk at a time costs the caller's CPU)
                break
            elif added and monotonic() - started > (TURN_SECONDS if run.ready else PULL_SECONDS):
                # A slow input: hand over what came, and look at the results. Else, with
                # chunks waiting to be sent: let the manager have the GIL. (Encoding six
                # chunks in a row, the caller's thread held it 10 ms, workers idle.)
                break
            else:
                added = self._pull()

    def _make_zygote(self) -> None:
        """A worker of a one-call pool must be replaced: fork the zygote that does it
        (see ProcessBackend.make_zygote), from this thread, here, between two steps."""
        try:
            self.backend.make_zygote()
        except Exception as exc:
            raise ParallelBarError(f"could not start a worker: {exc}") from exc
        self.manager.wake()

    # -- input ----------------------------------------------------------------------
    def _pull(self) -> bool:
        run = self.run
        want = run.next_size()
        replaying = bool(run.resume or run.verifying or run.verify)
        if replaying:
            want = max(want, 4096)
        n = want if run.safe_source else run.pacer.size(want)
        items: Any = []
        error: Optional[BaseException] = None
        started = monotonic()
        tasks = run.sliced
        if tasks is not None and not replaying:   # positions only: see InputView
            items = InputView(tasks, run.taken, min(len(tasks), run.taken + n))
        else:
            try:
                items.extend(islice(run.source, n))   # (items pulled before an error stay)
            except Exception as exc:   # the caller's iterable raised: after what came before
                error = exc
        if not run.safe_source and (items or error is None):
            run.pacer.observe(max(1, len(items)), monotonic() - started)
        start = run.taken
        run.taken += len(items)
        if error is not None:
            run.input_error = (run.taken, error)
        ended = error is not None or len(items) < n
        if items:
            if replaying:
                self._replay(start, items)
            else:
                self._encode(start, items, size=len(items))   # sized when pulled
        if ended:
            run.exhausted = True
            self.manager.post("fed", run)
        return bool(items)

    # -- checkpoint replay ----------------------------------------------------------
    def _replay(self, start: int, items: List[Any]) -> None:
        """Split freshly pulled tasks into journalled outcomes (handed to the manager)
        and tasks still to run (encoded)."""
        run = self.run
        todo: List[Tuple[int, List[Any]]] = []
        known: List[Tuple[int, List[Any], dict, List[Any]]] = []
        for offset, item in enumerate(items):
            pos = start + offset
            if run.verify or run.verifying:
                self._check_content(pos, item)
            outcome = run.resume.pop(pos, None)
            if outcome is None:
                if todo and todo[-1][0] + len(todo[-1][1]) == pos:
                    todo[-1][1].append(item)
                else:
                    todo.append((pos, [item]))
                continue
            ok, value = outcome
            last = known[-1] if known else None
            if last is None or last[0] + len(last[1]) != pos:
                last = (pos, [], {}, [])
                known.append(last)
            last[1].append(value if ok else None)
            last[3].append(item)
            if not ok:
                last[2][pos] = Failure.made_here(value)
        for first, values, failures, tasks in known:
            self.manager.post("outcomes", run, first, {
                "n": len(values), "values": values, "failures": failures or None,
                "items": tasks, "resumed": True})
        for first, chunk_items in todo:
            self._encode(first, chunk_items)

    def _check_content(self, pos: int, item: Any) -> None:
        run = self.run
        if run.verifying is None and pos in run.verify:
            n, digest = run.verify.pop(pos)
            run.verifying = (pos, n, digest, [])
        if run.verifying is None:
            return
        first, n, digest, seen = run.verifying
        seen.append(item)
        if len(seen) < n:
            return
        run.verifying = None
        if digest is None or task_digest(seen) in (digest, None):
            return
        if has_sets(seen):  # their pickled order may differ from the writer's: can't tell
            log.warning("tasks %d..%d hold sets; their content cannot be compared with the "
                        "checkpoint's", first, first + n - 1)
        else:
            path = run.journal.path if run.journal is not None else "?"
            raise CheckpointMismatchError(
                f"checkpoint {path!r} was written for other tasks: tasks {first}..{first + n - 1}"
                f" differ from the ones it journalled (the input changed). Pass "
                f"overwrite_checkpoint=True to start afresh, or a new checkpoint path")

    # -- encoding -------------------------------------------------------------------
    def _encode(self, start: int, items: List[Any], front: bool = False,
                size: Optional[int] = None) -> bool:
        """Encode tasks into chunks (of ``size``, or as the policy says) for
        ``run.ready``; tasks that cannot be sent fail one by one. ``front``: tasks
        sent again go before new input."""
        run = self.run
        size = size or run.next_size()
        chunks: List[Chunk] = []
        for offset in range(0, len(items), size):
            part = items if size >= len(items) else items[offset:offset + size]
            chunk = Chunk(run, start + offset, part)
            try:
                self.backend.encode_chunk(chunk, run)
            except Exception as exc:
                self._unsendable(chunk, exc)
                continue
            run.policy.took(len(part), chunk.nbytes)
            run.bytes_sent += chunk.nbytes
            chunks.append(chunk)
        if not chunks:
            return False
        if front:
            run.ready.extendleft(reversed(chunks))
        else:
            run.ready.extend(chunks)
        if run.policy.per_task is None and not front:
            # The first chunks (a task each, nothing measured yet) go over together, at
            # the end of top_up: waiting for the manager's pass after the first one, the
            # caller's thread was queued behind a busy worker on its core, and the next
            # worker got its first task 1.7 ms later (2 cores).
            self.held = True
            return True
        # Always: the manager may have emptied run.ready and gone to sleep while these
        # were being encoded (a wake-up decided before the encoding was lost that way,
        # and idle workers waited for the manager's next tick, up to 0.1 s).
        self.manager.hand_over()
        return True

    def _unsendable(self, chunk: Chunk, exc: BaseException) -> None:
        """Tasks that neither pickle nor dill can send: split till each bad one fails alone."""
        run = self.run
        if len(chunk.items) > 1:
            for i, item in enumerate(chunk.items):
                self._encode(chunk.start + i, [item])
            return
        item = chunk.items[0]
        err = SerializationError(f"task {chunk.start} ({serialize.describe(item)}) cannot be "
                                 f"sent to a worker process by pickle or dill: {exc}")
        err.__cause__ = exc
        self.manager.post("outcomes", run, chunk.start, {
            "n": 1, "values": [None], "failures": {chunk.start: Failure.made_here(err)},
            "items": [item]})
