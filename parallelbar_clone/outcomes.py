"""Outcomes of tasks as they travel: made in a worker, moved by the manager as plain
data, turned back into the caller's objects by the thread that consumes them.

The manager thread never unpickles what a task made: an exception whose class
the main process cannot import, or a result whose ``__setstate__`` raises or
hangs, must not stop the thread that enforces deadlines. So a worker sends its
results as one blob of bytes and each exception as a :class:`Failure` of plain
fields (its pickle, traceback text, type name, ``str()``, and the qualified
names of its classes, against which ``retry_on`` is matched); the consuming
thread decodes them with :func:`decode_values` and :meth:`Failure.exception`,
where an object that cannot be loaded fails only its own slot.
"""
from __future__ import annotations

import io
import pickle
import traceback
import types
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

from . import serialize
from .errors import RemoteTraceback, SerializationError, TaskExitError

__all__ = ["Failure", "pack_exception", "decode_values", "safe_text", "qualified_names"]


def safe_text(exc: BaseException) -> str:
    """``str(exc)``, even when its ``__str__`` raises."""
    try:
        return str(exc)
    except BaseException:
        try:
            return repr(exc)
        except BaseException:
            return "<str() failed>"


def _format_traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # e.g. MemoryError under a tight RLIMIT_AS, a raising __str__
        return f"{type(exc).__name__}: (traceback unavailable)\n"


def qualified_names(cls: type) -> Tuple[str, ...]:
    """``module.QualName`` of ``cls`` and every class it derives from."""
    return tuple(f"{getattr(k, '__module__', '?')}.{getattr(k, '__qualname__', k.__name__)}"
                 for k in getattr(cls, "__mro__", (cls,)))


class Failure:
    """How one task failed, as plain data (see the module docstring).

    Either ``exc`` is an exception the main process made itself (a timeout, a
    worker's death), or ``data`` is a worker's pickle of the task's exception.
    ``attempts`` and ``history`` say how often it ran (with ``retries``)."""

    __slots__ = ("exc", "data", "tb", "type_name", "text", "classes", "attempts", "history",
                 "_loaded")

    def __init__(self, *, exc: Optional[BaseException] = None, data: Optional[bytes] = None,
                 tb: str = "", type_name: str = "", text: str = "",
                 classes: Tuple[str, ...] = ()) -> None:
        self.exc = exc
        self.data = data
        self.tb = tb
        self.type_name = type_name or (serialize.describe(exc) if exc is not None else "?")
        self.text = text if exc is None else safe_text(exc)
        self.classes = classes or (qualified_names(type(exc)) if exc is not None else ())
        self.attempts = 1
        self.history: List[str] = []
        self._loaded: Optional[BaseException] = None

    @classmethod
    def made_here(cls, exc: BaseException) -> "Failure":
        return cls(exc=exc)

    @classmethod
    def from_worker(cls, packed: Tuple[Optional[bytes], str, str, str, Tuple[str, ...]]
                    ) -> "Failure":
        data, tb, type_name, text, classes = packed
        return cls(data=data, tb=tb, type_name=type_name, text=text, classes=classes)

    def summary(self) -> str:
        return f"{self.type_name}: {self.text}"

    def matches(self, classes: Union[Type[BaseException], Tuple[Type[BaseException], ...]]
                ) -> bool:
        """Is it an instance of ``classes``? Judged by class names for a worker's
        exception, so the manager never loads it."""
        if self.exc is not None:
            return isinstance(self.exc, classes)
        wanted = classes if isinstance(classes, tuple) else (classes,)
        names = set(self.classes)
        return any(qualified_names(k)[0] in names for k in wanted)

    def pack(self) -> Tuple[bytes, str, str, str]:
        """``(pickle, traceback, type name, text)`` for the journal."""
        data = self.data
        if data is None:
            try:
                data = serialize.dumps(self.exc)
            except Exception as problem:
                data = serialize.dumps(SerializationError(
                    f"the task raised {self.type_name}: {self.text!r}, which cannot be stored "
                    f"({type(problem).__name__}: {problem})"))
        tb = self.tb or (getattr(self.exc, "traceback", None) or "")
        if not tb:
            tb = f"{self.type_name}: {self.text}\n"
        return data, tb, self.type_name, self.text

    def exception(self) -> BaseException:
        """The exception, as the caller sees it: its own type, with ``.traceback`` and
        ``__cause__`` (the worker's traceback); a :class:`SerializationError` saying
        why if it cannot be loaded here. Call it in the consuming thread; it is loaded
        once."""
        if self._loaded is not None:
            return self._loaded
        exc = self.exc
        if exc is None:
            try:
                exc = _tolerant_loads(self.data or b"")
                missing = _stubs_in(exc)
                if missing:
                    raise ImportError(f"cannot import {missing}")
                if not isinstance(exc, BaseException):
                    raise TypeError(f"found {serialize.describe(exc)}, not an exception")
            except Exception as problem:
                why = problem.args[0] if isinstance(problem, ImportError) and problem.args \
                    else f"{type(problem).__name__}: {problem}"
                exc = SerializationError(
                    f"the task raised {self.type_name}: {self.text!r}, which cannot be loaded "
                    f"in the main process ({why})")
            if self.tb:
                try:
                    exc.traceback = self.tb  # type: ignore[attr-defined]
                except Exception:
                    pass
                exc.__cause__ = RemoteTraceback(self.tb)
        if self.attempts > 1:
            try:
                exc.attempts = self.attempts  # type: ignore[attr-defined]
                exc.previous_errors = list(self.history)  # type: ignore[attr-defined]
                if hasattr(exc, "add_note"):
                    exc.add_note(f"(failed on all {self.attempts} attempts; before: "
                                 + "; ".join(self.history) + ")")
            except Exception:
                pass
        self._loaded = exc
        return exc

    def __reduce__(self) -> Any:  # (only our tests pickle one)
        state = {k: getattr(self, k) for k in self.__slots__ if k != "_loaded"}
        return (_rebuild_failure, (state,))

    def __repr__(self) -> str:
        return f"<Failure {self.summary()}>"


def _rebuild_failure(state: Dict[str, Any]) -> Failure:
    failure = Failure.__new__(Failure)
    failure._loaded = None
    for key, value in state.items():
        setattr(failure, key, value)
    return failure


def _as_task_error(exc: BaseException) -> Tuple[str, BaseException]:
    """(traceback text, the exception to report). The frames are let go; ``SystemExit``
    and the other exceptions that are not an ``Exception`` become a TaskExitError."""
    tb = _format_traceback(exc)
    exc.__traceback__ = None  # let go of the frames (and what they hold)
    if not isinstance(exc, Exception):
        code = getattr(exc, "code", None) if isinstance(exc, SystemExit) else None
        what = (f"called sys.exit({code!r})" if isinstance(exc, SystemExit)
                else f"raised {type(exc).__name__}")
        exc = TaskExitError(f"the task {what}; that ends a task, not the program",
                            code=code, original=type(exc).__name__)
    return tb, exc


def pack_exception(exc: BaseException, check_pickle: bool = True
                   ) -> Tuple[Optional[bytes], str, str, str, Tuple[str, ...]]:
    """In a worker: a task's exception as plain data for :meth:`Failure.from_worker`.

    ``SystemExit`` (``sys.exit()`` in a task) and other exceptions that are not an
    ``Exception`` become a :class:`TaskExitError`: raised in the caller, a task's
    ``sys.exit(0)`` must not end the caller's program with status 0."""
    tb, exc = _as_task_error(exc)
    type_name, text = serialize.describe(exc), safe_text(exc)
    classes = qualified_names(type(exc))
    try:
        data = pickle.dumps(exc, serialize.PROTOCOL)
        if check_pickle:
            pickle.loads(data)   # many exceptions pickle fine but fail to unpickle
    except BaseException as problem:
        data = pickle.dumps(SerializationError(
            f"the task raised {type_name}: {text!r}, which cannot be sent back to the main "
            f"process ({type(problem).__name__}: {safe_text(problem)})"), serialize.PROTOCOL)
        type_name, classes = "parallelbar_clone.errors.SerializationError", \
            qualified_names(SerializationError)
    return serialize._PICKLE + data, tb, type_name, text, classes


def local_failure(exc: BaseException) -> Failure:
    """In a thread worker: the task's exception itself, with its traceback text."""
    tb, exc = _as_task_error(exc)
    try:
        exc.traceback = tb  # type: ignore[attr-defined]
        exc.__cause__ = RemoteTraceback(tb)
    except Exception:
        pass
    failure = Failure(exc=exc)
    failure.tb = tb
    return failure


# ------------------------------------------------------------------ tolerant unpickling

class _Missing:
    """Stands for an object whose class the main process cannot import."""

    _pb_missing = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __reduce__(self) -> Any:
        raise pickle.PicklingError(self._pb_missing)


class _TolerantUnpickler(pickle.Unpickler):
    """Loads what it can: a class it cannot import becomes a stand-in class (so the
    other values of the same blob still load), remembered in ``missing``."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.missing: Dict[str, str] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except Exception as problem:
            why = f"{module}.{name}: {type(problem).__name__}: {problem}"
            self.missing[f"{module}.{name}"] = why
            stand_in = types.new_class(name, (_Missing,), {})
            stand_in._pb_missing = why  # type: ignore[attr-defined]
            stand_in.__module__ = "parallelbar_clone.outcomes"
            return stand_in


def _tolerant_loads(data: bytes) -> Any:
    view = memoryview(data)
    if data[:1] == serialize._DILL:
        return serialize.loads(data)
    if data[:1] == serialize._PICKLE:
        view = view[1:]
    return _TolerantUnpickler(io.BytesIO(view)).load()


def _stubs_in(obj: Any, depth: int = 0) -> Optional[str]:
    """Why ``obj`` (or something it holds, a few levels down) could not be loaded."""
    if isinstance(obj, _Missing):
        return type(obj)._pb_missing
    if depth > 4:
        return None
    if isinstance(obj, (list, tuple, set, frozenset)):
        items: Sequence[Any] = list(obj)
    elif isinstance(obj, dict):
        items = list(obj.keys()) + list(obj.values())
    else:
        state = getattr(obj, "__dict__", None)
        items = list(state.values()) if isinstance(state, dict) else []
        if isinstance(obj, BaseException):
            items = list(items) + list(obj.args)
    for item in items:
        found = _stubs_in(item, depth + 1)
        if found:
            return found
    return None


def decode_values(blob: serialize.Bytes, start: int, n: int, dilled: bool,
                  failures: Dict[int, Failure]) -> List[Any]:
    """A worker's pickled list of results, in the consuming thread. A value that cannot
    be loaded here (its class cannot be imported, its ``__setstate__`` raises) fails
    its own slot: ``failures`` gets a :class:`Failure` for it."""
    unpickler = None
    try:
        values = pickle.loads(blob)   # (from the buffer the message landed in: no copy)
    except Exception:
        try:
            unpickler = _TolerantUnpickler(io.BytesIO(blob))
            values = unpickler.load()
        except Exception as problem:
            return _all_failed(problem, start, n, failures)
    if unpickler is not None and unpickler.missing:
        for i, value in enumerate(values):
            why = _stubs_in(value)
            if why:
                values[i] = None
                failures.setdefault(start + i, Failure.made_here(SerializationError(
                    f"the result of task {start + i} could not be loaded in the main process "
                    f"(cannot import {why})")))
    if dilled:
        for i, value in enumerate(values):
            if isinstance(value, serialize.Dilled):
                try:
                    values[i] = value.load()
                except Exception as problem:
                    values[i] = None
                    failures.setdefault(start + i, Failure.made_here(SerializationError(
                        f"the result of task {start + i} could not be loaded by dill in the "
                        f"main process: {serialize.describe(problem)}: {safe_text(problem)}")))
    return values


def _all_failed(problem: BaseException, start: int, n: int,
                failures: Dict[int, Failure]) -> List[Any]:
    for i in range(n):
        failures.setdefault(start + i, Failure.made_here(SerializationError(
            f"the result of task {start + i} could not be loaded in the main process: "
            f"{serialize.describe(problem)}: {safe_text(problem)}")))
    return [None] * n


def materialize(failures: Optional[Dict[int, Failure]]) -> Dict[int, BaseException]:
    if not failures:
        return {}
    return {pos: f.exception() for pos, f in failures.items()}

