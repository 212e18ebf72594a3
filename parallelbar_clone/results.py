"""The output side of a run, in the consuming thread: wait for pieces of outcomes,
keep the input fed meanwhile (:mod:`.feed`), load results and exceptions
(:mod:`.outcomes`), and hand them over: as one list (:func:`collect`, for
``map`` and the list-returning functions) or lazily (:class:`ResultIterator`).

Leaving the iteration early (``break``, ``close()``, the end of a ``with`` block,
or simply dropping the iterator) cancels the run at once: no more input is read
and its workers stop. The iterator holds no reference cycle, so dropping it is
enough, without waiting for the garbage collector.
"""
from __future__ import annotations

import logging
import queue
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .feed import Feeder
from .manager import as_exception
from .outcomes import Failure, _tolerant_loads, decode_values
from .run import Piece, Run

log = logging.getLogger("parallelbar_clone")

__all__ = ["collect", "ResultIterator"]

# How long the consumer sleeps without a wake before it looks on its own. The manager
# wakes it when results are due or the input runs low; looking every 50 ms, it woke
# 12 to 24 times a second of a run to find nothing, each time taking a worker's core.
WAIT = 0.25


class _Consumer:
    """Pieces of one run, in arrival order, with the input kept fed."""

    __slots__ = ("run", "feeder", "cancel")

    def __init__(self, run: Run, feeder: Feeder, cancel: Any) -> None:
        self.run = run
        self.feeder = feeder
        self.cancel = cancel

    def next_piece(self) -> Optional[Piece]:
        """The next piece; None when the run is complete; raises its failure."""
        run = self.run
        while True:
            self.feeder.manager.yield_pass()
            self.feeder.top_up()
            try:
                msg = run.out.get(timeout=WAIT)
            except queue.Empty:
                continue
            kind = msg[0]
            if kind == "p":
                return msg[1]
            if kind == "end":
                if run.input_error is not None:
                    raise run.input_error[1]
                return None
            if kind == "fail":
                raise as_exception(msg[1])
            # 'nudge': tasks to encode again


def decode(piece: Piece) -> Tuple[List[Any], Dict[int, BaseException]]:
    """A piece's values and its exceptions by position, loaded in this thread."""
    failures: Dict[int, Failure] = dict(piece.failures or {})
    if piece.blob is not None:
        values = decode_values(piece.blob, piece.start, piece.n, piece.dilled, failures)
    else:
        values = list(piece.values) if piece.values is not None else [None] * piece.n
    errors = {pos: f.exception() for pos, f in failures.items()}
    return values, errors


def inner_failures(piece: Piece) -> List[Any]:
    """Arguments of add_progress calls that failed inside the piece's tasks."""
    inner = piece.inner
    if not inner:
        return []
    if isinstance(inner, (bytes, bytearray)):
        try:
            return list(_tolerant_loads(bytes(inner)))
        except Exception:
            return []
    return list(inner)


def _segments(piece: Piece, values: List[Any], errors: Dict[int, BaseException]
              ) -> Iterator[Tuple[int, List[Any], Dict[int, BaseException]]]:
    """The piece as (start, values, errors) stretches without the positions whose
    outcome comes later (``piece.skip``)."""
    if not piece.skip:
        yield piece.start, values, errors
        return
    i = 0
    while i < piece.n:
        if piece.start + i in piece.skip:
            i += 1
            continue
        j = i
        while j < piece.n and piece.start + j not in piece.skip:
            j += 1
        a, b = piece.start + i, piece.start + j
        yield a, values[i:j], {p: e for p, e in errors.items() if a <= p < b}
        i = j


def _share(piece: Piece, a: int, b: int) -> int:
    """The bytes of positions a .. b-1 of a piece: exact, so shares of a piece add up to
    its size (a drift would stall a long stream's read-ahead)."""
    n, total, s = max(1, piece.n), piece.nbytes, piece.start
    return (b - s) * total // n - (a - s) * total // n


def coerced(opts: Any, exc: BaseException) -> Any:
    return opts.set_error_value if opts.set_error_value is not None else exc


def collect(run: Run, feeder: Feeder, cancel: Any, wait_bar: Any) -> Any:
    """Gather a whole run into a list (map, and the list-returning functions)."""
    consumer = _Consumer(run, feeder, cancel)
    opts = run.opts
    results: List[Any] = []
    failed: Dict[int, Any] = {}
    failed_positions: List[int] = []
    inner: List[Any] = []
    in_order = run.mode != "imapu"
    ok = False
    try:
        while True:
            piece = consumer.next_piece()
            if piece is None:
                break
            values, errors = decode(piece)
            if errors and opts.error_behavior == "raise":
                raise errors[min(errors)]   # (only a result that could not be loaded here)
            inner.extend(inner_failures(piece))
            for start, part, part_errors in _segments(piece, values, errors):
                if in_order:
                    end = start + len(part)
                    if end > len(results):
                        results.extend([None] * (end - len(results)))
                    results[start:end] = part
                else:
                    base = len(results)
                    results.extend(part)
                for pos, exc in part_errors.items():
                    index = pos if in_order else base + pos - start
                    results[index] = coerced(opts, exc)
                    failed_positions.append(index)
                    if piece.items is not None and pos in piece.items:
                        failed[pos] = piece.items[pos]     # listed in task order
            run.consumed += piece.n - len(piece.skip or ())
            run.bytes_taken += piece.nbytes
        ok = True
    finally:
        if not ok:
            cancel(run)
        wait_bar(run)
    if opts.error_behavior == "ignore" and failed_positions:
        drop = set(failed_positions)
        results = [r for i, r in enumerate(results) if i not in drop]
    if opts.return_failed_tasks:
        return results, [failed[p] for p in sorted(failed)] + inner
    return results


class _State:
    """What the iterator's generator needs, without the iterator itself (so that
    dropping the iterator frees it at once: no cycle through the generator)."""

    __slots__ = ("run", "consumer", "cancel", "wait_bar", "failed_tasks", "done")

    def __init__(self, run: Run, consumer: _Consumer, cancel: Any, wait_bar: Any) -> None:
        self.run = run
        self.consumer = consumer
        self.cancel = cancel
        self.wait_bar = wait_bar
        self.failed_tasks: List[Any] = []
        self.done = False

    def stop(self, wait: bool = True) -> None:
        if not self.done:
            self.done = True
            self.cancel(self.run, wait=wait)
            if wait:
                self.wait_bar(self.run)


def _generate(state: _State, ordered: bool) -> Iterator[Any]:
    """The results; primed by ResultIterator (the first ``yield``), so that closing
    the generator, or dropping it, cancels the run from then on."""
    try:
        yield None
        yield from _results(state, ordered)
    finally:
        try:
            state.stop(wait=False)   # (nothing to do once the run is over)
        except Exception:
            log.debug("stopping an abandoned run failed", exc_info=True)


def _results(state: _State, ordered: bool) -> Iterator[Any]:
    run, opts = state.run, state.run.opts
    buffer: Dict[int, Tuple[List[Any], Dict[int, BaseException], int]] = {}
    expected = 0
    while True:
        try:
            piece = state.consumer.next_piece()
        except BaseException:
            state.stop()
            raise
        if piece is None:
            break
        values, errors = decode(piece)
        if errors and opts.error_behavior == "raise":
            state.stop()
            raise errors[min(errors)]
        state.failed_tasks.extend(inner_failures(piece))
        if errors and piece.items:
            state.failed_tasks.extend(piece.items[p] for p in sorted(piece.items))
        # bytes held for the consumer (read-ahead) are let go as values are handed over
        if piece.skip:
            run.bytes_taken += sum(_share(piece, p, p + 1) for p in piece.skip)
        for start, part, part_errors in _segments(piece, values, errors):
            share = _share(piece, start, start + len(part))
            if ordered:
                buffer[start] = (part, part_errors, share)
                ready = []
                while expected in buffer:
                    part, part_errors, share = buffer.pop(expected)
                    ready.append((expected, part, part_errors, share))
                    expected += len(part)
            else:
                ready = [(start, part, part_errors, share)]
            for first, part, part_errors, share in ready:
                run.consumed += len(part)
                run.bytes_taken += share
                if not part_errors:
                    yield from part
                    continue
                for i, value in enumerate(part):
                    exc = part_errors.get(first + i)
                    if exc is None:
                        yield value
                    elif opts.error_behavior != "ignore":
                        yield coerced(opts, exc)
    state.done = True
    state.wait_bar(run)


class ResultIterator:
    """Lazy results of :meth:`ProgressPool.imap` / :meth:`ProgressPool.imap_unordered`.

    Input is read as results are consumed. Leaving a ``for`` loop early, ``close()``,
    or dropping the iterator cancels the run at once. ``failed_tasks`` lists the
    tasks that failed so far.

    ``iter()`` of it is the generator of its results (a ``for`` loop then takes each
    result without a Python-level ``__next__`` call: 50 ns a result, a fifth of a
    16-worker stream of tiny tasks); that generator's end, or its being dropped,
    is what cancels the run.
    """

    def __init__(self, run: Run, feeder: Feeder, cancel: Any, wait_bar: Any,
                 ordered: bool) -> None:
        self._state = _State(run, _Consumer(run, feeder, cancel), cancel, wait_bar)
        self._results = _generate(self._state, ordered)
        next(self._results)   # primed: from now on, dropping it cancels the run

    @property
    def failed_tasks(self) -> List[Any]:
        return self._state.failed_tasks

    @property
    def summary(self) -> Any:
        """What happened so far (a :class:`~.summary.RunSummary`)."""
        return self._state.run.summary

    def __iter__(self) -> Iterator[Any]:
        return self._results

    def __next__(self) -> Any:
        return next(self._results)

    def close(self) -> None:
        """Stop the run: its workers are stopped, no more input is read."""
        self._state.stop()
        self._results.close()

    def __enter__(self) -> "ResultIterator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

