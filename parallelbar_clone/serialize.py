"""Turning functions, tasks and results into bytes and back.

Plain pickle first (fast, C; a function goes by reference, its module and
name). dill when pickle cannot (lambdas, closures) or when the worker could not
find the object by name: what a :class:`MainRefs` policy decides for objects
defined in the caller's ``__main__``. The first byte of each payload says which
was used. Both sides import this module; it stays small.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import threading
import types
from typing import Any, Dict, List, Optional, Tuple, Union

PROTOCOL = pickle.HIGHEST_PROTOCOL
Bytes = Union[bytes, bytearray, memoryview]   # a payload, where it landed
_PICKLE = b"P"
_DILL = b"D"

_state = threading.local()


class Dilled:
    """A value that plain pickle could not carry, carried as dill bytes instead."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def load(self) -> Any:
        import dill
        return dill.loads(self.data)


_MISSING = object()


class MainValue:
    """An object sent by value from the caller's ``__main__``, with the names of the
    ``__main__`` globals it uses that the caller changed since the pool started:
    the worker's own copies of those are stale, its copies of the others are kept
    (an initializer may have set them)."""

    __slots__ = ("obj", "fresh")

    def __init__(self, obj: Any, fresh: frozenset) -> None:
        self.obj = obj
        self.fresh = fresh


class MainRefs:
    """How a worker can find what the caller's ``__main__`` defines.

    - ``'imported'``: the worker imports the main script itself (spawn and
      forkserver, when the script has a file): by reference.
    - ``'none'``: the worker has no such module (a notebook or ``python -c`` under
      spawn): anything from ``__main__`` goes by value.
    - ``'snapshot'``: the worker is a fork of the caller taken when the pool
      started: what ``__main__`` held then goes by reference, what was defined or
      redefined since (a re-run notebook cell) by value.

    Each keeps ``__main__``'s names as they were when the pool started, to tell
    the worker which of the globals a by-value function uses changed since.
    """

    __slots__ = ("kind", "names")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        main = sys.modules.get("__main__")
        self.names: Dict[str, Any] = dict(vars(main)) if main is not None else {}

    def fresh(self, obj: Any) -> frozenset:
        """Names of ``__main__`` globals ``obj`` uses whose value changed since the start."""
        main = sys.modules.get("__main__")
        if main is None:
            return frozenset()
        now = vars(main)
        return frozenset(name for name in _main_names(obj)
                         if now.get(name, _MISSING) is not self.names.get(name, _MISSING))

    def reachable(self, obj: Any) -> bool:
        """Can the worker find every ``__main__`` object that ``obj`` refers to by name?"""
        if self.kind == "imported":
            return True
        if self.kind == "none":
            return False
        checker = _SnapshotChecker(io.BytesIO(), self.names)
        try:
            checker.dump(obj)
        except _Unreachable:
            return False
        except Exception:
            return True   # not ours to judge: the caller's plain pickle succeeded
        return True


class _Unreachable(Exception):
    pass


class _SnapshotChecker(pickle.Pickler):
    """Pickles into the void, raising at the first ``__main__`` object by name that
    is not, by identity, what ``__main__`` held when the worker's zygote forked."""

    def __init__(self, file: Any, names: Dict[str, Any]) -> None:
        super().__init__(file, PROTOCOL)
        self.names = names

    def reducer_override(self, obj: Any) -> Any:
        if getattr(obj, "__module__", None) == "__main__" and (
                isinstance(obj, (types.FunctionType, type)) or hasattr(obj, "__wrapped__")):
            target: Any = self.names
            for i, part in enumerate(getattr(obj, "__qualname__", "").split(".")):
                target = target.get(part) if i == 0 else getattr(target, part, None)
                if target is None:
                    break
            if target is not obj:
                raise _Unreachable(obj)
        return NotImplemented


def _main_names(obj: Any, depth: int = 0) -> set:
    """The ``__main__`` globals that the code in ``obj`` uses (looking through the
    wrappers we know and into containers of tasks), and the names of its classes."""
    names: set = set()
    if depth > 3:
        return names
    if isinstance(obj, types.FunctionType):
        if obj.__globals__.get("__name__") in ("__main__", "__mp_main__"):
            names.add(obj.__name__)
            try:
                import dill.detect
                names.update(dill.detect.globalvars(obj, recurse=True, builtin=False))
            except Exception:
                names.update(obj.__code__.co_names)
        return names
    kind = type(obj)
    if kind in (list, tuple, set, frozenset):
        for item in obj:
            names |= _main_names(item, depth + 1)
        return names
    if getattr(kind, "__module__", None) == "__main__":
        names.add(kind.__qualname__.split(".")[0])
    for attr in ("func", "__wrapped__"):   # functools.partial, _Star, our decorators
        inner = getattr(obj, attr, None)
        if inner is not None and inner is not obj:
            names |= _main_names(inner, depth + 1)
    return names


def by_value() -> bool:
    """True while :func:`dumps` is sending ``__main__`` objects by value (for
    objects whose ``__reduce__`` would otherwise name themselves)."""
    return getattr(_state, "by_value", False)


def dill_dumps(obj: Any) -> bytes:
    """dill by value, recursing into the globals a function uses. A thread-local
    object (a per-thread cache) arrives as a new, empty one: what any other thread
    would see."""
    import dill
    global _DillPickler
    if _DillPickler is None:
        class _DillPickler(dill.Pickler):  # type: ignore[no-redef]
            def reducer_override(self, obj: Any) -> Any:
                if type(obj) is threading.local:
                    return (threading.local, ())
                return NotImplemented
    previous = by_value()
    _state.by_value = True
    try:
        buffer = io.BytesIO()
        _DillPickler(buffer, PROTOCOL, recurse=True).dump(obj)
        return buffer.getvalue()
    finally:
        _state.by_value = previous


_DillPickler: Any = None


def dumps(obj: Any, *, main: Optional[MainRefs] = None, force_value: bool = False) -> bytes:
    """Pickle ``obj``; dill when pickle cannot, or when ``obj`` names something in
    ``__main__`` that ``main`` says the worker cannot find. Raises the dill error if
    both fail. ``force_value``: dill for anything from ``__main__`` whatever ``main``
    says (after the worker failed to load it by name); raises if dill cannot.

    With ``main``, what goes by value is a :class:`MainValue`: load it with
    ``worker.rebind_main``."""
    def by_value(value: Any) -> bytes:
        if main is not None:
            value = MainValue(value, main.fresh(value))
        return _DILL + dill_dumps(value)

    try:
        data = pickle.dumps(obj, PROTOCOL)
    except Exception:
        return by_value(obj)
    if (main is not None or force_value) and (b"__main__" in data or b"__mp_main__" in data):
        if force_value:
            return by_value(obj)
        if not main.reachable(obj):  # type: ignore[union-attr]
            try:
                return by_value(obj)
            except Exception:
                pass  # keep pickle's bytes: maybe the name does resolve over there
    return _PICKLE + data


def loads(data: bytes) -> Any:
    """Inverse of :func:`dumps`."""
    view = memoryview(data)[1:]
    if data[:1] == _DILL:
        import dill
        return dill.loads(view)
    return pickle.loads(view)


def is_by_value(data: bytes) -> bool:
    return data[:1] == _DILL


def describe(obj: Any) -> str:
    """``'module.Type'`` for messages."""
    cls = type(obj)
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module in (None, "builtins") else f"{module}.{name}"


def main_module() -> Optional[types.ModuleType]:
    return sys.modules.get("__main__")


# --------------------------------------------------------------------------- messages
# A message between the manager and a process worker: a header of plain data,
# pickled, and a tail of bytes that travels as it is (a chunk's pickled tasks, a
# piece's pickled results). One frame of multiprocessing's Connection format:
#
#     size (4 bytes; or -1 and 8 bytes) | header length (4) | header pickle | tail
#
# The tail is written from the sender's buffer and read into the one buffer the
# message lands in: nesting it in the header's pickle cost a copy on each side, and
# Connection.recv_bytes two more (a 100 KB chunk is 25 pages to fault in each time).

_SIZE = struct.Struct("!i")
_BIG_SIZE = struct.Struct("!Q")
_HEAD = struct.Struct("<I")
_VECTORED = hasattr(os, "writev") and hasattr(os, "readv") and sys.platform != "win32"


def send_message(conn: Any, header: tuple, tail: Any = b"") -> None:
    """Write ``header`` (plain data) and ``tail`` (bytes-like) to ``conn`` as one
    message. Raises OSError (or ValueError, conn closed) if the other end is gone."""
    head = pickle.dumps(header, PROTOCOL)
    size = _HEAD.size + len(head) + len(tail)
    if not _VECTORED:
        conn.send_bytes(_HEAD.pack(len(head)) + head + bytes(tail))
        return
    frame = _SIZE.pack(size) if size <= 0x7FFFFFFF else _SIZE.pack(-1) + _BIG_SIZE.pack(size)
    parts: List[Any] = [frame + _HEAD.pack(len(head)) + head]
    if len(tail):
        parts.append(tail)
    fd = conn.fileno()
    while parts:
        written = os.writev(fd, parts)
        while parts and written >= len(parts[0]):
            written -= len(parts[0])
            parts.pop(0)
        if written:
            parts[0] = memoryview(parts[0])[written:]


def recv_message(conn: Any) -> Tuple[Any, memoryview]:
    """The next message on ``conn``: (header, tail). Blocks until it is whole; raises
    EOFError when the other end closed."""
    if not _VECTORED:
        data: Any = conn.recv_bytes()
    else:
        fd = conn.fileno()
        size = _SIZE.unpack(_read_exact(fd, _SIZE.size))[0]
        if size == -1:
            size = _BIG_SIZE.unpack(_read_exact(fd, _BIG_SIZE.size))[0]
        data = os.read(fd, size)   # whole, as a rule: the pipes are sized for a message
        if len(data) < size:
            if not data:
                raise EOFError("the other end closed the pipe")
            whole = bytearray(size)
            whole[:len(data)] = data
            view = memoryview(whole)
            got = len(data)
            while got < size:
                more = os.readv(fd, [view[got:]])
                if not more:
                    raise EOFError("the other end closed the pipe")
                got += more
            data = whole
    view = memoryview(data)
    end = _HEAD.size + _HEAD.unpack_from(data)[0]
    return pickle.loads(view[_HEAD.size:end]), view[end:]


def _read_exact(fd: int, n: int) -> bytes:
    data = os.read(fd, n)
    while len(data) < n:
        more = os.read(fd, n - len(data))
        if not more:
            raise EOFError("the other end closed the pipe")
        data += more
    return data
