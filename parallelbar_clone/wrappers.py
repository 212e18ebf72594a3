"""Decorators applied to task functions: soft timeouts, inner progress, memory caps.

``stopit_after_timeout`` and ``add_progress`` keep the published ``parallelbar``
signatures. Unlike there, no SIGINT is sent: in a process's main thread (where
worker processes run tasks) a SIGALRM interval timer interrupts the function,
elsewhere an exception is injected into the thread running it, so it works in
worker processes, worker threads and the main thread alike and never touches
another thread. ``add_progress`` needs no queue plumbing: it finds the worker it
runs in by itself. For a timeout that also stops C code, use the pool's
``process_timeout=`` instead: that one kills the worker.

``stop_function``, ``ProgressStatus`` and ``init_worker`` are the published
helpers, kept for code that imports them.
"""
from __future__ import annotations

import ctypes
import inspect
import signal
import sys
import threading
import time
from functools import update_wrapper
from types import MethodType
from typing import Any, Callable, Optional, TypeVar, Union

from . import serialize
from .errors import MemoryLimitError
from .options import parse_memory
from .worker import DONE, ERR, _local

__all__ = ["stopit_after_timeout", "add_progress", "memory_limit", "stop_function",
           "ProgressStatus", "init_worker"]

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


class _Wrapper:
    """Base of the decorators' wrapper objects.

    A wrapper is an object rather than a closure so that it crosses to a worker
    process however the worker finds code: by name where its module-level name
    refers to it (a module, the user's script), by value (the original function
    and the decorator's arguments) where it does not, or where ``__main__`` goes
    by value (a notebook under spawn). It binds like a function when it
    decorates a method."""

    def __init__(self, func: Callable[..., Any]) -> None:
        update_wrapper(self, func)

    def _args(self) -> tuple:
        raise NotImplementedError

    def __reduce__(self) -> Any:
        if not (getattr(self, "__module__", None) == "__main__" and serialize.by_value()):
            module = sys.modules.get(getattr(self, "__module__", ""), None)
            target: Any = module
            for part in getattr(self, "__qualname__", "").split("."):
                target = getattr(target, part, None)
            if target is self:
                return self.__qualname__
        return (type(self), (self.__wrapped__,) + self._args())

    def _rebind_main(self, rebind: Callable[[Any], Any]) -> None:
        self.__wrapped__ = rebind(self.__wrapped__)

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        return self if instance is None else MethodType(self, instance)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.__wrapped__!r}>"


class _StopIt(_Wrapper):
    def __init__(self, func: Callable[..., Any], seconds: float, raise_exception: bool) -> None:
        super().__init__(func)
        self.seconds = seconds
        self.raise_exception = raise_exception

    def _args(self) -> tuple:
        return (self.seconds, self.raise_exception)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return call_with_timeout(self.__wrapped__, self.seconds, args, kwargs)
        except TimeoutError as exc:
            if self.raise_exception:
                raise
            return str(exc)


def stopit_after_timeout(s: float, raise_exception: bool = True) -> Callable[[F], F]:
    """Stop the decorated function after ``s`` seconds (soft: Python code only).

    Raises ``TimeoutError('function "name" took longer than s s.')``, or returns that
    message instead when ``raise_exception`` is False.
    """
    def decorator(func: F) -> F:
        return _StopIt(func, s, raise_exception)  # type: ignore[return-value]
    return decorator


def stop_function() -> None:
    """Interrupt the main thread of this process (SIGINT; ``interrupt_main`` on Windows):
    what the published ``stopit_after_timeout`` used to stop a function."""
    if sys.platform == "win32":
        import _thread
        _thread.interrupt_main()
    else:
        import os
        os.kill(os.getpid(), signal.SIGINT)


class ProgressStatus:
    """The published bookkeeping of how often a worker reported progress."""

    def __init__(self) -> None:
        self.next_update = 1
        self.last_update_t = time.perf_counter()
        self.last_update_val = 0


_WORKER_QUEUE: Any = None


def init_worker(worker_queue: Any, init_progress: Optional[Callable[..., Any]],
                init_progress_args: tuple) -> None:
    """The published worker initializer: keep ``worker_queue`` (unused here: progress
    needs no queue) and call ``init_progress(*init_progress_args)`` if given."""
    global _WORKER_QUEUE
    _WORKER_QUEUE = worker_queue
    if init_progress is not None:
        init_progress(*init_progress_args)


def _make_args(*args: Any, **kwargs: Any) -> Any:
    """The published helper: how a failed call's arguments are listed among the
    failed tasks (one argument alone, several as a tuple, keywords as a last dict)."""
    if kwargs:
        return args + (kwargs,)
    if len(args) == 1:
        return args[0]
    return args


def _accepts(func: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


class _Progress(_Wrapper):
    def __init__(self, func: Callable[..., Any], error_handling: str, set_error_value: Any,
                 timeout: Optional[float]) -> None:
        super().__init__(func)
        self.error_handling = error_handling
        self.set_error_value = set_error_value
        self.timeout = timeout
        self._takes_queue = _accepts(func, "worker_queue")

    def _args(self) -> tuple:
        return (self.error_handling, self.set_error_value, self.timeout)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if "worker_queue" in kwargs and not self._takes_queue:
            del kwargs["worker_queue"]   # the published Windows recipe passes it along
        where = getattr(_local, "slot", None)
        try:
            if self.timeout is None:
                result = self.__wrapped__(*args, **kwargs)
            else:
                result = call_with_timeout(self.__wrapped__, self.timeout, args, kwargs)
        except Exception as exc:
            if self.error_handling == "raise":
                raise  # the task fails, and is counted as such
            if where is not None:
                where[0][where[1] + ERR] += 1
                _local.inner_failures.append(_make_args(*args, **kwargs))
            return exc if self.set_error_value is None else self.set_error_value
        if where is not None:
            where[0][where[1] + DONE] += 1
        return result


def add_progress(error_handling: str = "raise", set_error_value: Any = None,
                 timeout: Optional[float] = None) -> Callable[[F], F]:
    """Count each call of the decorated function on the pool's bars.

    For functions called many times inside one task: as soon as a run's tasks call
    such a function, its DONE bar counts those calls instead of tasks (with or
    without ``used_add_progress_decorator=True``; give ``total=`` the expected
    number of calls). ``error_handling='coerce'`` returns ``set_error_value`` (or
    the exception) instead of raising, counts the call on the ERROR bar, and lists
    its arguments among the failed tasks. ``timeout`` stops a call after that many
    seconds, as :func:`stopit_after_timeout` does. Outside a pool it just calls.
    A ``worker_queue=`` keyword (the published package's Windows recipe) is
    accepted and dropped unless the function takes it.
    """
    if error_handling not in ("raise", "coerce"):
        raise ValueError(f"error_handling={error_handling!r} is not allowed; use 'raise' or "
                         f"'coerce'")

    def decorator(func: F) -> F:
        return _Progress(func, error_handling, set_error_value, timeout)  # type: ignore
    return decorator


def _address_space() -> Optional[int]:
    try:
        import os
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class _MemoryLimited(_Wrapper):
    """A function whose calls may add at most ``limit`` bytes of address space."""

    def __init__(self, func: Callable[..., Any], limit: int) -> None:
        super().__init__(func)
        self.limit = limit

    def _args(self) -> tuple:
        return (self.limit,)

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
