"""Turning functions, tasks and results into bytes and back.

Plain pickle first (fast, C); dill when pickle cannot (lambdas, closures,
functions and classes defined in a notebook or at an interactive prompt, which a
spawned or forkserver worker could not import by name). The first byte of each
payload says which was used. Both sides import this module; it stays small.
"""
from __future__ import annotations

import pickle
from typing import Any

PROTOCOL = pickle.HIGHEST_PROTOCOL
_PICKLE = b"P"
_DILL = b"D"


class Dilled:
    """A value that plain pickle could not carry, carried as dill bytes instead."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def load(self) -> Any:
        import dill
        return dill.loads(self.data)


def dill_dumps(obj: Any) -> bytes:
    import dill
    return dill.dumps(obj, protocol=PROTOCOL, recurse=True)


def dumps(obj: Any, *, by_value_main: bool = False) -> bytes:
    """Pickle ``obj``; fall back to dill. Raises the dill error if both fail.

    ``by_value_main``: the receiver cannot import ``__main__`` by name (a
    notebook under spawn/forkserver), so anything that refers to it goes by
    value through dill.
    """
    try:
        data = pickle.dumps(obj, PROTOCOL)
    except Exception:
        return _DILL + dill_dumps(obj)
    if by_value_main and b"__main__" in data:
        try:
            return _DILL + dill_dumps(obj)
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


def describe(obj: Any) -> str:
    """``'module.Type'`` for messages."""
    cls = type(obj)
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module in (None, "builtins") else f"{module}.{name}"
