"""Decorators applied to task functions: soft timeouts, inner progress, memory caps.

``stopit_after_timeout`` and ``add_progress`` keep the published ``parallelbar``
signatures. Unlike there, no signal is used: the timeout is an exception
injected into the thread running the function (so it works in worker
processes, in worker threads and in the main thread alike, and never touches
another thread), and ``add_progress`` needs no queue plumbing: it finds the
worker it runs in by itself. For a timeout that also stops C code, use the
pool's ``process_timeout=`` instead: that one kills the worker.
"""
from __future__ import annotations

import ctypes
import signal
import sys
import threading
import time
from functools import update_wrapper, wraps
from typing import Any, Callable, Optional, TypeVar, Union

from .errors import MemoryLimitError
from .options import parse_memory
from .worker import DONE, ERR, _local

__all__ = ["stopit_after_timeout", "add_progress", "memory_limit"]

F = TypeVar("F", bound=Callable[..., Any])


class _Deadline(BaseException):
    """Injected into a thread whose function ran out of time (not an Exception, so
    user code's ``except Exception`` cannot swallow it)."""


def async_raise(thread_or_ident: Any, exc_type: Optional[type]) -> bool:
    """Raise ``exc_type`` in another thread at its next Python line (None clears it)."""
    ident = getattr(thread_or_ident, "ident", thread_or_ident)
    if ident is None:
        return False
    arg = ctypes.py_object(exc_type) if exc_type is not None else None
    return ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), arg) == 1


def _timeout_error(func: Callable[..., Any], seconds: float) -> TimeoutError:
    return TimeoutError(f'function "{getattr(func, "__name__", func)}" took longer than '
                        f'{seconds} s.')


def call_with_timeout(func: Callable[..., Any], seconds: float, args: tuple, kwargs: dict) -> Any:
    """``func(*args, **kwargs)``; ``TimeoutError`` if it runs longer than ``seconds``.

    In a main thread (where worker processes run their tasks) a SIGALRM interval
    timer interrupts even a blocking ``time.sleep`` or socket read; an outer timer
    is restored afterwards. In other threads an exception is injected instead,
    which lands at the next Python line (a blocking C call finishes first).
    """
    if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        return _call_with_alarm(func, seconds, args, kwargs)
    ident = threading.get_ident()
    lock = threading.Lock()
    state = {"running": True, "fired": False}

    def fire() -> None:
        with lock:
            if state["running"]:
                state["fired"] = True
                async_raise(ident, _Deadline)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    try:
        try:
            timer.start()
            return func(*args, **kwargs)
        finally:
            with lock:
                state["running"] = False
            timer.cancel()
    except _Deadline:
        raise _timeout_error(func, seconds) from None
    finally:
        if state["fired"]:
            async_raise(ident, None)  # a late delivery must not escape later


def _call_with_alarm(func: Callable[..., Any], seconds: float, args: tuple, kwargs: dict) -> Any:
    def on_alarm(signum: int, frame: Any) -> None:
        raise _Deadline()

    started = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        try:
            return func(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Deadline:
        raise _timeout_error(func, seconds) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:  # an enclosing timer keeps running, less the time we took
            left = old_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), old_interval)


def stopit_after_timeout(s: float, raise_exception: bool = True) -> Callable[[F], F]:
    """Stop the decorated function after ``s`` seconds (soft: Python code only).

    Raises ``TimeoutError('function "name" took longer than s s.')``, or returns that
    message instead when ``raise_exception`` is False.
    """
    def decorator(func: F) -> F:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return call_with_timeout(func, s, args, kwargs)
            except TimeoutError as exc:
                if raise_exception:
                    raise
                return str(exc)
        return wrapper  # type: ignore[return-value]
    return decorator


def _make_args(args: tuple, kwargs: dict) -> Any:
    if kwargs:
        return args + (kwargs,)
    if len(args) == 1:
        return args[0]
    return args


def add_progress(error_handling: str = "raise", set_error_value: Any = None,
                 timeout: Optional[float] = None) -> Callable[[F], F]:
    """Count each call of the decorated function on the main bar.

    Use it for functions called many times inside one task, together with
    ``used_add_progress_decorator=True`` (and ``total=`` the expected number of
    calls). ``error_handling='coerce'`` returns ``set_error_value`` (or the
    exception) instead of raising, counts the call on the ERROR bar, and lists its
    arguments among the failed tasks. ``timeout`` stops a call after that many
    seconds, as :func:`stopit_after_timeout` does. Outside a pool it just calls.
    """
    if error_handling not in ("raise", "coerce"):
        raise ValueError(f"error_handling={error_handling!r} is not allowed; use 'raise' or "
                         f"'coerce'")

    def decorator(func: F) -> F:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            where = getattr(_local, "slot", None)
            try:
                if timeout is None:
                    result = func(*args, **kwargs)
                else:
                    result = call_with_timeout(func, timeout, args, kwargs)
            except Exception as exc:
                if error_handling == "raise":
                    raise  # the task fails, and is counted as such
                if where is not None:
                    where[0][where[1] + ERR] += 1
                    _local.inner_failures.append(_make_args(args, kwargs))
                return exc if set_error_value is None else set_error_value
            if where is not None:
                where[0][where[1] + DONE] += 1
            return result
        return wrapper  # type: ignore[return-value]
    return decorator


def _address_space() -> Optional[int]:
    try:
        import os
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class _MemoryLimited:
    """A function whose calls may add at most ``limit`` bytes of address space."""

    def __init__(self, func: Callable[..., Any], limit: int) -> None:
        update_wrapper(self, func)
        self.limit = limit

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import resource
        used = _address_space()
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = used + self.limit if used is not None else self.limit
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        try:
            return self.__wrapped__(*args, **kwargs)
        except MemoryError as exc:
            if isinstance(exc, MemoryLimitError):
                raise
            name = getattr(self.__wrapped__, "__name__", "function")
            raise MemoryLimitError(f"function {name!r} needed more than {self.limit / 1e6:.0f} MB "
                                   f"of new memory (memory_limit decorator)",
                                   limit=self.limit) from exc
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    def __reduce__(self) -> Any:
        # Decorated at module level, the name refers to this object: pickle by name.
        module = sys.modules.get(getattr(self, "__module__", ""), None)
        target: Any = module
        for part in getattr(self, "__qualname__", "").split("."):
            target = getattr(target, part, None)
        if target is self:
            return self.__qualname__
        return (_MemoryLimited, (self.__wrapped__, self.limit))


def memory_limit(limit: Union[int, str]) -> Callable[[F], F]:
    """Cap the new memory one call of the decorated function may take.

    ``limit`` is bytes or a size string (``'512MB'``, ``'2GiB'``). For the length of
    each call the process's address-space limit (``RLIMIT_AS``) is set to what it
    uses now plus ``limit``, so an allocation past it fails at once with
    :class:`~parallelbar_clone.errors.MemoryLimitError` (a ``MemoryError``), and
    the process lives on. This counts address space, not resident memory: a
    library that reserves large arenas it never touches (some BLAS builds) can
    trip it early; the pool's ``memory_limit=`` option measures resident memory
    instead. Linux only (macOS does not enforce RLIMIT_AS). The limit is
    process-wide while a call runs, so use it in process workers, not threads.
    """
    nbytes = parse_memory(limit)
    if _address_space() is None:
        raise NotImplementedError("the memory_limit decorator needs Linux (/proc and RLIMIT_AS); "
                                  "use the pool's memory_limit= option instead")

    def decorator(func: F) -> F:
        return _MemoryLimited(func, nbytes)  # type: ignore[return-value]
    return decorator
