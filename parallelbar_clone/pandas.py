"""pandas integration: ``series.pbar`` and ``df.pbar``, parallel and guarded.

``import parallelbar_clone.pandas`` registers a ``pbar`` accessor on Series and
DataFrame through pandas' own extension API::

    series.pbar.map(func, na_action=None, **options)      # what series.map(func) returns
    series.pbar.apply(func, args=(), **options)           # what series.apply(func) returns
    df.pbar.apply(func, axis=0, raw=False, result_type=None, args=(), **options)
    df.pbar.groupby_apply(by, func, args=(), groupby_kwargs=None, **options)

``**options`` are those of :func:`parallelbar_clone.progress_map` with the same
meaning, counted in rows (or columns, or groups): ``process_timeout`` is per
row, ``chunk_size`` is rows per block, a failed row gets ``set_error_value``
under ``error_behavior='coerce'`` and ``return_failed_tasks=True`` returns
``(result, failed_index_labels)``.

How a call runs::

    caller (parent)                                      workers
    ---------------                                      -------
    split into blocks: positional slices   --blocks--->  _Runner(block): pandas' own
    (df.iloc[a:b]; lists of group frames)   (pickled    iteration (Series.map,
                                            per chunk)   DataFrame.apply) calls a hook per
                                                         row that restarts the task clock,
    pass 1: ProgressPool.imap over blocks  <--values---  calls func, keeps the value or
                                            per block    the exception, counts the row
    pass 2: the rows of each block that failed as a whole (a hang past process_timeout,
            memory_limit, a dead worker, a result that cannot be pickled), one task per
            row, so each bad row fails alone and is known by its index label
    assemble with pandas' own code: the parent replays the values through the same
            pandas call (Series.map, DataFrame.apply, groupby().apply) in the order
            pandas calls func, so index, name, dtypes and result shape are pandas' own

A row that raises fails inside its block, which goes on with the next row; a
block with failed rows is reported to the pool as failed (:class:`_RowsFailed`,
carrying every row's outcome), so the checkpoint journal re-runs it on resume
unless ``keep_failures=True``. The journal records blocks; block boundaries depend
only on the number of rows and ``chunk_size``, so a resumed call sees the same ones.
"""
from __future__ import annotations

import functools
import logging
import math
import operator
import pickle
import time
import traceback
from dataclasses import fields
from time import monotonic
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from .errors import SerializationError, RemoteTraceback
from .journal import CheckpointMismatchError
from .options import POOL_FIELDS, Options, check_func
from .pool import ProgressPool
from .worker import DONE, ERR, START, _local

__all__ = ["SeriesAccessor", "DataFrameAccessor"]

log = logging.getLogger("parallelbar_clone")

AUTO_BLOCKS = 128          # chunk_size=None: about this many blocks...
MAX_AUTO_BLOCK = 10_000    # ...of at most this many rows
_OPTION_NAMES = frozenset(f.name for f in fields(Options))

# =========================================================================== worker side

class _RowsFailed(Exception):
    """A block whose rows ran and some failed: every row's outcome, sent as the block's
    failure so that the checkpoint journal treats the block as failed."""

    def __init__(self, values: List[Any], errors: Dict[int, Tuple[BaseException, str]]) -> None:
        super().__init__(f"{len(errors)} of {len(values)} rows failed")
        self.values = values
        self.errors = errors

    def __reduce__(self) -> Any:
        return (_RowsFailed, (self.values, self.errors))


def _plain_items(block: pd.Series) -> Optional[list]:
    """The block's elements as Series.map passes them, where ``tolist()`` gives exactly
    those (numpy numbers, bools and objects; pandas' string dtype); else None."""
    dtype = block.dtype
    if (isinstance(dtype, np.dtype) and dtype.kind in "biufcO") or (
            isinstance(dtype, pd.StringDtype)):
        return block.tolist()
    return None


class _StopBlock(BaseException):
    """Leave pandas' iteration early (error_behavior='raise', or a one-row block)."""


def _packed(exc: BaseException, check_pickle: bool) -> Tuple[BaseException, str]:
    """(exception, its traceback text); one that cannot be pickled becomes a
    SerializationError naming it."""
    try:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:
        tb = f"{type(exc).__name__}: (traceback unavailable)\n"
    exc.__traceback__ = None
    if check_pickle:
        try:
            pickle.loads(pickle.dumps(exc, pickle.HIGHEST_PROTOCOL))
        except BaseException as problem:
            exc = SerializationError(
                f"the row raised {type(exc).__name__}: {exc!r}, which cannot be sent back to the "
                f"main process ({type(problem).__name__}: {problem})")
    return exc, tb


def _note_attempts(exc: BaseException, history: List[str]) -> None:
    attempts = len(history) + 1
    try:
        exc.attempts = attempts  # type: ignore[attr-defined]
        exc.previous_errors = list(history)  # type: ignore[attr-defined]
        if hasattr(exc, "add_note"):
            exc.add_note(f"(failed on all {attempts} attempts; before: {'; '.join(history)})")
    except Exception:
        pass


class _Runner:
    """The pool's task function: one block in, its rows' values out.

    ``how`` says how pandas iterates the block: ``'series'`` (Series.map),
    ``'rows'`` / ``'columns'`` (DataFrame.apply with axis 1 / 0) or ``'groups'``
    (a list of group frames). ``single``: the block is one row of pass 2; its failure
    is raised as itself, and the pool retries it."""

    def __init__(self, func: Callable[..., Any], how: str, args: tuple = (), raw: bool = False,
                 count_rows: bool = True, stop_at_first: bool = False, single: bool = False,
                 check_pickle: bool = True, retries: int = 0, retry_delay: float = 0.0,
                 retry_backoff: float = 1.0, retry_on: Any = Exception) -> None:
        self.func = func  # (named `func`: the checkpoint journal fingerprints it by this name)
        self.how = how
        self.args = tuple(args)
        self.raw = raw
        self.count_rows = count_rows
        self.stop_at_first = stop_at_first
        self.single = single
        self.check_pickle = check_pickle
        self.retries = retries
        self.retry_delay = retry_delay
        self.retry_backoff = retry_backoff
        self.retry_on = retry_on

    @property
    def __name__(self) -> str:  # for the pool's messages: the user's function
        return getattr(self.func, "__name__", type(self.func).__name__)

    def _caller(self, timed: bool, view: Any, base: int) -> Callable[[Any], Any]:
        """``func(item, *args)``, retried as the options say."""
        func, args = self.func, self.args
        call = func if not args else (lambda item: func(item, *args))
        if not self.retries:
            return call

        def retrying(item: Any) -> Any:
            history: List[str] = []
            while True:
                try:
                    return call(item)
                except BaseException as exc:
                    if len(history) >= self.retries or not isinstance(exc, self.retry_on):
                        if history:
                            _note_attempts(exc, history)
                        raise
                    history.append(f"{type(exc).__name__}: {exc}")
                    time.sleep(self.retry_delay * self.retry_backoff ** (len(history) - 1))
                    if timed:
                        view[base + START] = monotonic()
        return retrying

    def __call__(self, block: Any) -> List[Any]:
        values: List[Any] = []
        errors: Dict[int, BaseException] = {}
        # The worker's status slot: the pool reads view[base + START], the running task's
        # start time (non-zero while process_timeout or memory_limit is on), to enforce
        # process_timeout. The task is the whole block; writing the time again before
        # each row makes the timeout count per row. DONE counts rows for the bar.
        where = getattr(_local, "slot", None)
        view, base = where if where is not None else (None, 0)
        timed = view is not None and bool(view[base + START])
        count = self.count_rows and view is not None
        call = self._caller(timed, view, base)
        stop = self.stop_at_first or self.single
        append = values.append
        items = _plain_items(block) if self.how == "series" else None
        if items is not None:
            # The quick loop: the elements Series.map would pass, without its result
            # building; the bar's count is written every `stride` rows, a stride that
            # grows while rows are quick (a write costs as much as a cheap row).
            pending, stride, last = 0, 1, monotonic()
            for item in items:
                if timed:
                    view[base + START] = monotonic()  # restart this row's process_timeout
                try:
                    value = call(item)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # SystemExit too: it is the row's outcome
                    errors[len(values)] = exc
                    append(None)
                    if stop:
                        break
                    continue
                append(value)
                if count:
                    pending += 1
                    if pending >= stride:
                        view[base + DONE] += pending
                        pending = 0
                        now = monotonic()
                        stride = min(stride * 2, 256) if now - last < 0.001 else max(1, stride // 2)
                        last = now
            if pending:
                view[base + DONE] += pending
        else:
            def one(item: Any) -> None:
                if timed:
                    view[base + START] = monotonic()  # restart this row's process_timeout
                try:
                    value = call(item)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # SystemExit too: it is the row's outcome
                    errors[len(values)] = exc
                    append(None)
                    if stop:
                        raise _StopBlock() from None
                    return None
                if isinstance(value, pd.Series):
                    value = value.copy(deep=False)  # pandas reuses the row object it passed
                append(value)
                if count:
                    view[base + DONE] += 1
                return None

            try:
                if self.how == "series":
                    block.map(one)
                elif self.how == "rows":
                    block.apply(one, axis=1, raw=self.raw)
                elif self.how == "columns":
                    block.apply(one, axis=0, raw=self.raw)
                else:
                    for group in block:
                        one(group)
            except _StopBlock:
                pass
        if self.single and errors:
            raise errors[0]  # the pool retries, journals and reports it as this row's own
        packed: Any = values
        if self.how == "rows" and not self.single:
            packed = _SeriesRows.pack(values, errors) or values
        if not errors:
            return packed
        if count and len(errors) > 1 and not self.stop_at_first:
            view[base + ERR] += len(errors) - 1  # the pool counts the block's failure as one
        raise _RowsFailed(packed, {i: _packed(e, self.check_pickle) for i, e in errors.items()})


class _SeriesRows:
    """A block's row results that are all Series over one index, as one 2-D object
    array: pickling 20 000 small Series costs about 4 s, this about 0.05 s."""

    def __init__(self, index: pd.Index, data: np.ndarray, dtypes: List[Any],
                 names: List[Any]) -> None:
        self.index = index
        self.data = data
        self.dtypes = dtypes
        self.names = names

    def __len__(self) -> int:
        return len(self.data)

    @classmethod
    def pack(cls, values: List[Any], failed: Dict[int, Any]) -> Optional["_SeriesRows"]:
        index = None
        for i, value in enumerate(values):
            if i in failed:
                continue
            if type(value) is not pd.Series or not isinstance(value.dtype, np.dtype) \
                    or value.dtype.kind not in "biufcO":
                return None
            if index is None:
                if not value.index.is_unique:
                    return None
                index = value.index
            elif value.index is not index and not value.index.equals(index):
                return None
        if index is None:
            return None
        data = np.empty((len(values), len(index)), dtype=object)
        dtypes: List[Any] = [None] * len(values)
        names: List[Any] = [None] * len(values)
        for i, value in enumerate(values):
            if i not in failed:
                data[i] = value.to_numpy(dtype=object)
                dtypes[i] = value.dtype
                names[i] = value.name
        return cls(index, data, dtypes, names)

    def series(self, i: int) -> pd.Series:
        return pd.Series(self.data[i], index=self.index, dtype=self.dtypes[i],
                         name=self.names[i])


class _PackedRow:
    """Row ``i`` of a :class:`_SeriesRows`, where the outcomes list holds a value."""

    __slots__ = ("pack", "i")

    def __init__(self, pack: _SeriesRows, i: int) -> None:
        self.pack = pack
        self.i = i


def _unpacked(values: List[Any]) -> List[Any]:
    if not any(type(v) is _PackedRow for v in values):
        return values
    return [v.pack.series(v.i) if type(v) is _PackedRow else v for v in values]


def _rows_frame(values: List[Any], index: pd.Index) -> Optional[pd.DataFrame]:
    """What pandas' infer_to_same_shape makes of Series row results (a frame of the rows
    with the Series' index as columns, dtypes inferred), built from the packed rows
    without a Series per row; None where that shortcut does not apply."""
    first = values[0]
    if type(first) is not _PackedRow:
        return None
    columns = first.pack.index
    data = np.empty((len(values), len(columns)), dtype=object)
    for i, value in enumerate(values):
        if type(value) is _PackedRow:
            if value.pack.index is not columns and not value.pack.index.equals(columns):
                return None
            data[i] = value.pack.data[value.i]
        elif isinstance(value, pd.Series):
            if not isinstance(value.dtype, np.dtype) or value.dtype.kind not in "biufcO" \
                    or not value.index.equals(columns):
                return None
            data[i] = value.to_numpy(dtype=object)
        elif _is_sequence(value):
            return None
        else:  # a failed row's set_error_value: pandas broadcasts it along the row
            data[i] = value
    return pd.DataFrame(data, index=index, columns=columns).infer_objects()


# =========================================================================== parent side

class _Job:
    """What to run: ``n`` items (rows, columns, groups or call arguments), how to cut
    positions a..b into a block, and the label of each item (for failures)."""

    def __init__(self, how: str, func: Callable[..., Any], n: int,
                 block: Callable[[int, int], Any], label: Callable[[int], Any], noun: str,
                 args: tuple = (), raw: bool = False) -> None:
        self.how = how
        self.func = func
        self.noun = noun
        self.n = n
        self.block = block
        self.label = label
        self.args = args
        self.raw = raw


def _split_options(options: Dict[str, Any]) -> Tuple[Options, Dict[str, Any], Dict[str, Any]]:
    """Validate ``options`` once (unknown names and bad values raise); return the
    Options, the pool's arguments and the per-call ones."""
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; the options "
                        f"are those of progress_map: {', '.join(sorted(_OPTION_NAMES))}")
    opts = Options(**options)
    pool = {k: v for k, v in options.items() if k in POOL_FIELDS}
    call = {k: v for k, v in options.items() if k not in POOL_FIELDS}
    return opts, pool, call


def _block_rows(n: int, chunk_size: Optional[int]) -> int:
    """Rows per block: ``chunk_size``, or a size that depends on ``n`` alone (so that a
    resumed checkpointed call cuts the same blocks)."""
    if chunk_size is not None:
        return chunk_size
    return max(1, min(MAX_AUTO_BLOCK, math.ceil(n / AUTO_BLOCKS)))


def _restore(exc: BaseException, tb: str) -> BaseException:
    if tb:
        try:
            exc.traceback = tb  # type: ignore[attr-defined]
        except Exception:
            pass
        exc.__cause__ = RemoteTraceback(tb)
    return exc


class _Outcomes:
    """Each item's value, and the failures by item position."""

    def __init__(self, n: int) -> None:
        self.values: List[Any] = [None] * n
        self.failures: Dict[int, BaseException] = {}

    def put(self, start: int, values: Any) -> None:
        if type(values) is _SeriesRows:
            values = [_PackedRow(values, i) for i in range(len(values))]
        self.values[start:start + len(values)] = values


def _execute(job: _Job, opts: Options, pool_args: Dict[str, Any],
             call: Dict[str, Any]) -> _Outcomes:
    """Run pass 1 (blocks) and pass 2 (single rows of blocks that failed as a whole)."""
    out = _Outcomes(job.n)
    raising = opts.error_behavior == "raise"
    size = _block_rows(job.n, opts.chunk_size)
    count_rows = not opts.used_add_progress_decorator
    runner_args = dict(args=job.args, raw=job.raw, count_rows=count_rows,
                       check_pickle=opts.executor == "processes")
    engine = {k: v for k, v in call.items()
              if k not in ("error_behavior", "set_error_value", "return_failed_tasks",
                           "chunk_size", "total", "used_add_progress_decorator", "retries",
                           "retry_delay", "retry_backoff", "retry_on", "timeout")}
    engine.update(error_behavior="coerce", set_error_value=None, return_failed_tasks=False,
                  used_add_progress_decorator=True)
    deadline = monotonic() + opts.timeout if opts.timeout is not None else None
    first = _Runner(job.func, job.how, stop_at_first=raising, retries=opts.retries,
                    retry_delay=opts.retry_delay, retry_backoff=opts.retry_backoff,
                    retry_on=opts.retry_on, **runner_args)
    starts = range(0, job.n, size)
    redo: List[int] = []
    with ProgressPool(**pool_args) as pool:
        blocks = (job.block(a, min(a + size, job.n)) for a in starts)
        total = opts.total if opts.total is not None else job.n
        with pool.imap(first, blocks, total=total, timeout=_left(deadline), **engine) as results:
            for a, result in zip(starts, results):
                if type(result) is list or type(result) is _SeriesRows:
                    out.put(a, result)
                elif isinstance(result, _RowsFailed):
                    out.put(a, result.values)
                    for offset, (exc, tb) in sorted(result.errors.items()):
                        out.failures[a + offset] = _restore(exc, tb)
                        if raising:
                            raise _labelled(out.failures[a + offset], job, a + offset)
                else:  # the block as a whole: a hang, memory, a dead worker, unpicklable...
                    log.info("block of rows %d..%d failed as a whole (%s: %s); running its rows "
                             "one by one", a, min(a + size, job.n) - 1, type(result).__name__,
                             result)
                    redo.extend(range(a, min(a + size, job.n)))
        if redo:
            _isolate(job, redo, out, pool, opts, engine, runner_args, deadline)
    for pos, exc in out.failures.items():
        _labelled(exc, job, pos)
    return out


def _isolate(job: _Job, rows: List[int], out: _Outcomes, pool: ProgressPool, opts: Options,
             engine: Dict[str, Any], runner_args: Dict[str, Any],
             deadline: Optional[float]) -> None:
    """Pass 2: each of ``rows`` as a task of its own; a hang or a crash then fails that row
    alone. The pool's retries apply here, per row."""
    # A row is a task here: the bar counts tasks (rows a dead worker had finished but not
    # reported run again, and would be counted twice by the workers' own counts).
    single = _Runner(job.func, job.how, single=True, **dict(runner_args, count_rows=False))
    call = dict(engine, retries=opts.retries, retry_delay=opts.retry_delay,
                retry_backoff=opts.retry_backoff, retry_on=opts.retry_on,
                used_add_progress_decorator=opts.used_add_progress_decorator)
    if opts.checkpoint is not None:
        call["checkpoint"] = f"{opts.checkpoint}.rows"
    for attempt in (1, 2):
        try:
            with pool.imap(single, (job.block(i, i + 1) for i in rows), total=len(rows),
                           timeout=_left(deadline), **call) as results:
                for pos, result in zip(rows, results):
                    if type(result) is list:
                        out.values[pos] = result[0]
                        out.failures.pop(pos, None)
                    else:
                        out.failures[pos] = result
                        if opts.error_behavior == "raise":
                            raise _labelled(result, job, pos)
            return
        except CheckpointMismatchError:
            if attempt == 2 or opts.checkpoint is None:
                raise
            # Its journal was written for another set of failed blocks: it is ours, start afresh.
            call["overwrite_checkpoint"] = True


def _left(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(deadline - monotonic(), 0.001)


def _labelled(exc: BaseException, job: _Job, pos: int) -> BaseException:
    """Say on a failure which row it is: ``exc.index_label`` (and a note)."""
    if getattr(exc, "_pbar_labelled", False):
        return exc
    label = job.label(pos)
    try:
        exc.index_label = label  # type: ignore[attr-defined]
        exc._pbar_labelled = True  # type: ignore[attr-defined]
        if hasattr(exc, "add_note"):
            exc.add_note(f"(in {job.noun} with label {label!r})")
    except Exception:
        pass
    return exc


# ---------------------------------------------------------------- results, pandas' own way

class _Replay:
    """Hands out the values in the order pandas calls its function, checking each
    group's length on the way (groupby orders are the subtle ones)."""

    def __init__(self, values: Sequence[Any], sizes: Optional[Sequence[int]] = None) -> None:
        self.values = values
        self.sizes = sizes
        self.calls = 0

    def __call__(self, item: Any, *args: Any, **kwargs: Any) -> Any:
        i = self.calls
        if i >= len(self.values) or (self.sizes is not None and len(item) != self.sizes[i]):
            raise RuntimeError("parallelbar_clone.pandas: pandas called the function in an order "
                               "this version does not expect; please report it")
        self.calls += 1
        return self.values[i]

    def check(self) -> None:
        if self.calls != len(self.values):
            raise RuntimeError(f"parallelbar_clone.pandas: pandas called the function "
                               f"{self.calls} times, expected {len(self.values)}; please report it")


_END = object()


class _Sequence:
    """The values again, through pandas' own call: ``partial(next, it)(x)`` is
    ``next(it, x)``, a call in C, so replaying costs pandas' loop and little more. A
    sentinel after the last value tells whether pandas made exactly one call per value."""

    def __init__(self, values: Sequence[Any]) -> None:
        self._it = iter([*values, _END])
        self.func = functools.partial(next, self._it)

    def check(self) -> None:
        if operator.length_hint(self._it) != 1:
            raise RuntimeError("parallelbar_clone.pandas: pandas did not call the function once "
                               "per value, as this version expects; please report it")


class _Lookup:
    """A categorical's function: pandas calls it once per category (and maybe on NaN)."""

    def __init__(self, table: Dict[Any, Any], nan_value: Any) -> None:
        self.table = table
        self.nan_value = nan_value

    def __call__(self, item: Any) -> Any:
        try:
            return self.table[item]
        except (KeyError, TypeError):
            if _is_na(item):
                return self.nan_value
            raise


def _is_na(x: Any) -> bool:
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def _is_sequence(obj: Any) -> bool:
    """pandas' own test (``pandas.core.dtypes.inference.is_sequence``): iterable with a
    length, not a string."""
    try:
        iter(obj)
        len(obj)
        return not isinstance(obj, (str, bytes))
    except (TypeError, AttributeError):
        return False


def _finish(result: Any, out: _Outcomes, opts: Options, failed_labels: List[Any]) -> Any:
    if opts.error_behavior == "raise" and out.failures:
        raise out.failures[min(out.failures)]
    if opts.return_failed_tasks:
        return result, failed_labels
    return result


def _filled(out: _Outcomes, opts: Options) -> Tuple[List[Any], Optional[List[int]]]:
    """Values with failures coerced (or dropped: then also the kept positions)."""
    if not out.failures:
        return out.values, None
    if opts.error_behavior == "ignore":
        kept = [i for i in range(len(out.values)) if i not in out.failures]
        return [out.values[i] for i in kept], kept
    values = list(out.values)
    for pos, exc in out.failures.items():
        values[pos] = opts.set_error_value if opts.set_error_value is not None else exc
    return values, None


def _series_call(s: pd.Series, func: Callable[..., Any], method: str, na_action: Optional[str],
                 args: tuple, options: Dict[str, Any]) -> Any:
    check_func(func)
    opts, pool_args, call = _split_options(options)
    if args and method == "map":
        raise TypeError("Series.map takes no args; use series.pbar.apply(func, args=...)")
    if na_action not in (None, "ignore"):
        raise ValueError(f"na_action={na_action!r} is not allowed; use None or 'ignore'")

    def own(base: pd.Series, f: Callable[..., Any]) -> Any:
        if method == "map":
            return base.map(f, na_action=na_action)
        return base.apply(f, args=args) if f is func else base.apply(f)

    if len(s) == 0:
        return _finish(own(s, func), _Outcomes(0), opts, [])
    if isinstance(s.dtype, pd.CategoricalDtype):
        return _categorical_call(s, func, own, args, opts, pool_args, call)
    work = s if na_action is None else s[s.notna()]
    job = _Job("series", func, len(work), lambda a, b: work.iloc[a:b], lambda i: work.index[i],
               "the row", args)
    out = _execute(job, opts, pool_args, call)
    values, kept = _filled(out, opts)
    base = s
    if kept is not None:  # error_behavior='ignore': leave the failed rows out
        failed = np.zeros(len(s), dtype=bool)
        positions = np.flatnonzero(s.notna().to_numpy()) if na_action else np.arange(len(s))
        failed[positions[sorted(out.failures)]] = True
        base = s[~failed]
    replay = _Sequence(values)
    result = own(base, replay.func)
    replay.check()
    labels = [work.index[p] for p in sorted(out.failures)]
    return _finish(result, out, opts, labels)


def _categorical_call(s: pd.Series, func: Callable[..., Any], own: Callable[..., Any],
                      args: tuple, opts: Options, pool_args: Dict[str, Any],
                      call: Dict[str, Any]) -> Any:
    """pandas calls func once per category (and on NaN where it maps missing values):
    run those calls in parallel, then let pandas build the result from them."""
    seen: List[Any] = []
    own(s, lambda x, *a: seen.append(x))
    work = pd.Series(seen, dtype=object)
    job = _Job("series", func, len(work), lambda a, b: work.iloc[a:b], lambda i: work.iloc[i],
               "the category", args)
    out = _execute(job, opts, pool_args, call)
    table: Dict[Any, Any] = {}
    nan_value = None
    failed_rows = np.zeros(len(s), dtype=bool)
    for pos, arg in enumerate(seen):
        if pos in out.failures:
            value = None if opts.error_behavior == "ignore" else (
                opts.set_error_value if opts.set_error_value is not None else out.failures[pos])
            failed_rows |= (s.isna() if _is_na(arg) else (s == arg)).to_numpy()
        else:
            value = out.values[pos]
        if _is_na(arg):
            nan_value = value
        else:
            table[arg] = value
    base = s[~failed_rows] if opts.error_behavior == "ignore" and failed_rows.any() else s
    result = own(base, _Lookup(table, nan_value))
    return _finish(result, out, opts, list(s.index[failed_rows]))


def _frame_apply(df: pd.DataFrame, func: Callable[..., Any], axis: Any, raw: bool,
                 result_type: Optional[str], args: tuple, options: Dict[str, Any]) -> Any:
    check_func(func)
    opts, pool_args, call = _split_options(options)
    if axis not in (0, 1, "index", "columns"):
        raise ValueError(f"axis={axis!r} is not allowed; use 0 or 'index' (func gets each "
                         f"column), 1 or 'columns' (func gets each row)")
    axis = 0 if axis in (0, "index") else 1
    if result_type not in (None, "expand", "reduce", "broadcast"):
        raise ValueError(f"result_type={result_type!r} is not allowed; use None, 'expand', "
                         f"'reduce' or 'broadcast'")
    if not isinstance(raw, bool):
        raise TypeError(f"raw must be True or False, got {type(raw).__name__} {raw!r}")

    def own(base: pd.DataFrame, f: Callable[..., Any]) -> Any:
        extra = {"args": args} if f is func else {}
        return base.apply(f, axis=axis, raw=raw, result_type=result_type, **extra)

    if not all(df.shape):
        return _finish(own(df, func), _Outcomes(0), opts, [])
    if axis == 1:
        job = _Job("rows", func, len(df), lambda a, b: df.iloc[a:b], lambda i: df.index[i],
                   "the row", args, raw)
    else:
        job = _Job("columns", func, df.shape[1], lambda a, b: df.iloc[:, a:b],
                   lambda i: df.columns[i], "the column", args, raw)
    out = _execute(job, opts, pool_args, call)
    values, kept = _filled(out, opts)
    if kept is None:
        base = df
    else:
        base = df.iloc[kept] if axis == 1 else df.iloc[:, kept]
    rows = axis == 1 and not raw and all(base.shape)
    result = _rows_frame(values, base.index) if rows and result_type in (None, "expand") else None
    if result is not None:
        pass
    elif not all(base.shape):  # every row failed and was left out
        result = own(base, func)
    elif rows and result_type != "broadcast" and not _is_sequence(values[0]):
        # pandas' wrap_results for scalars, without calling back per row
        result = pd.Series(_unpacked(values))
        result.index = base.index
    else:
        values = _unpacked(values)
        replay = _Sequence(values)
        result = own(base, replay.func)
        replay.check()
    labels = [job.label(p) for p in sorted(out.failures)]
    return _finish(result, out, opts, labels)


def _grouping_columns(df: pd.DataFrame, by: Any) -> List[Any]:
    keys = by if isinstance(by, list) else [by]
    found = []
    for key in keys:
        if isinstance(key, pd.Grouper):
            key = key.key
        try:
            if key is not None and key in df.columns:
                found.append(key)
        except TypeError:  # unhashable: an array or a Series
            pass
    return found


def _subset_by(by: Any, df: pd.DataFrame, kept: np.ndarray) -> Any:
    """``by`` for ``df.iloc[kept]``: arrays and Series as long as the frame are cut too."""
    if isinstance(by, list) and not any(_is_column(df, k) for k in by if _hashable(k)) \
            and len(by) == len(df) and not all(isinstance(k, (list, np.ndarray, pd.Series,
                                                              pd.Index)) for k in by):
        return [by[i] for i in kept]  # a list of keys, one per row
    if isinstance(by, list):
        return [_subset_by(k, df, kept) for k in by]
    if isinstance(by, pd.Series) and len(by) == len(df):
        return by.iloc[kept]
    if isinstance(by, (np.ndarray, pd.Index)) and len(by) == len(df):
        return by[kept]
    return by


def _hashable(key: Any) -> bool:
    try:
        hash(key)
        return True
    except TypeError:
        return False


def _is_column(df: pd.DataFrame, key: Any) -> bool:
    try:
        return key in df.columns
    except TypeError:
        return False


def _groupby_apply(df: pd.DataFrame, by: Any, func: Callable[..., Any], args: tuple,
                   groupby_kwargs: Optional[Dict[str, Any]], options: Dict[str, Any]) -> Any:
    check_func(func)
    opts, pool_args, call = _split_options(options)
    gkw = dict(groupby_kwargs or {})
    if "by" in gkw or "axis" in gkw:
        raise TypeError("groupby_kwargs may not hold 'by' or 'axis': pass by= itself")
    excluded = _grouping_columns(df, by)
    columns = [c for c in df.columns if c not in excluded] if excluded else None

    def grouped(frame: pd.DataFrame, keys: Any) -> Any:
        gb = frame.groupby(keys, **gkw)
        return gb[columns] if columns is not None else gb

    def own(frame: pd.DataFrame, keys: Any, f: Callable[..., Any]) -> Any:
        return grouped(frame, keys).apply(f, *(args if f is func else ()))

    if len(df) == 0:
        return _finish(own(df, by, func), _Outcomes(0), opts, [])
    gb = grouped(df, by)
    keys: List[Any] = []
    frames: List[pd.DataFrame] = []
    for key, frame in gb:
        keys.append(key)
        frames.append(frame)
    job = _Job("groups", func, len(frames), lambda a, b: frames[a:b], lambda i: keys[i],
               "the group", args)
    out = _execute(job, opts, pool_args, call)
    values, kept = _filled(out, opts)
    sizes = [len(f) for f in frames]
    frame, keys_by = df, by
    if kept is not None:
        sizes = [sizes[i] for i in kept]
        group_of_row = gb.ngroup().to_numpy()
        keep_rows = np.flatnonzero(~np.isin(group_of_row, sorted(out.failures)))
        frame, keys_by = df.iloc[keep_rows], _subset_by(by, df, keep_rows)
    if len(frame) == 0:
        result = own(frame, keys_by, func)
    else:
        replay = _Replay(values, sizes)
        result = own(frame, keys_by, replay)
        replay.check()
    return _finish(result, out, opts, [keys[p] for p in sorted(out.failures)])


# =========================================================================== the accessors

_OPTIONS_DOC = """
        ``**options`` are those of :func:`parallelbar_clone.progress_map`, with the same
        meaning, counted per {unit} (``n_cpu``, ``process_timeout`` per {unit},
        ``memory_limit``, ``error_behavior``, ``set_error_value``, ``return_failed_tasks``,
        ``checkpoint``, ``retries``, ``disable``, ``executor``, ...); ``chunk_size`` is
        {unit}s per block (default: about {blocks} blocks). With ``error_behavior='coerce'``
        a failed {unit} holds ``set_error_value`` (``np.nan`` keeps a numeric result
        numeric); ``'ignore'`` leaves it out; ``return_failed_tasks=True`` returns
        ``(result, failed_labels)``. Each failure has ``.index_label``.
"""


@pd.api.extensions.register_series_accessor("pbar")
class SeriesAccessor:
    """``series.pbar``: :meth:`map` and :meth:`apply` in parallel, with progress bars."""

    def __init__(self, series: pd.Series) -> None:
        self._obj = series

    def map(self, func: Callable[[Any], Any], na_action: Optional[str] = None,
            **options: Any) -> Any:
        """What ``series.map(func, na_action)`` returns (index and name kept), with
        ``func`` run in a pool of workers.
        """
        return _series_call(self._obj, func, "map", na_action, (), options)

    def apply(self, func: Callable[..., Any], *, args: tuple = (), **options: Any) -> Any:
        """What ``series.apply(func, args=args)`` returns (a DataFrame when ``func``
        returns a Series), with ``func`` run in a pool of workers.
        """
        return _series_call(self._obj, func, "apply", None, tuple(args), options)


@pd.api.extensions.register_dataframe_accessor("pbar")
class DataFrameAccessor:
    """``df.pbar``: :meth:`apply` and :meth:`groupby_apply` in parallel, with progress bars."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._obj = frame

    def apply(self, func: Callable[..., Any], axis: Any = 0, *, raw: bool = False,
              result_type: Optional[str] = None, args: tuple = (), **options: Any) -> Any:
        """What ``df.apply(func, axis, raw=raw, result_type=result_type, args=args)``
        returns (a Series for scalar results, a DataFrame when ``func`` returns a
        Series), with ``func`` run in a pool of workers on blocks of rows (``axis=1``)
        or of columns (``axis=0``).
        """
        return _frame_apply(self._obj, func, axis, raw, result_type, tuple(args), options)

    def groupby_apply(self, by: Any, func: Callable[..., Any], *, args: tuple = (),
                      groupby_kwargs: Optional[Dict[str, Any]] = None, **options: Any) -> Any:
        """What ``df.groupby(by, **groupby_kwargs).apply(func, args)`` returns in pandas 3
        (``func`` gets each group without the grouping columns; in pandas 2 that is
        ``include_groups=False``), with ``func`` run in a pool of workers, a task per
        group: a Series indexed by the group keys for scalar results.
        """
        return _groupby_apply(self._obj, by, func, tuple(args), groupby_kwargs, options)


SeriesAccessor.map.__doc__ += _OPTIONS_DOC.format(unit="element", blocks=AUTO_BLOCKS)
SeriesAccessor.apply.__doc__ += _OPTIONS_DOC.format(unit="element", blocks=AUTO_BLOCKS)
DataFrameAccessor.apply.__doc__ += _OPTIONS_DOC.format(unit="row (column with axis=0)",
                                                       blocks=AUTO_BLOCKS)
DataFrameAccessor.groupby_apply.__doc__ += _OPTIONS_DOC.format(unit="group", blocks=AUTO_BLOCKS)
