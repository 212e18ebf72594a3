"""Exceptions raised by parallelbar_clone.

Every error the library makes itself derives from :class:`ParallelBarError`, and
also from the standard type users already catch: a task timeout is a
``TimeoutError``, a memory-guard trip is a ``MemoryError``, a payload that cannot
cross the process boundary is a ``pickle.PicklingError``.

A task's own exception is re-raised (or put in its result slot) as its original
type; the worker's traceback text hangs off it twice: as ``exc.traceback`` (a
string) and as ``exc.__cause__`` (a :class:`RemoteTraceback`), so the default
traceback print shows where in the user's code it happened.
"""
from __future__ import annotations

import multiprocessing
import pickle
import signal
from typing import Optional

__all__ = [
    "ParallelBarError",
    "TaskTimeoutError",
    "MemoryLimitError",
    "WorkerDiedError",
    "InitializerError",
    "SerializationError",
    "RunTimeoutError",
    "TaskExitError",
    "RemoteTraceback",
]


class ParallelBarError(Exception):
    """Base class of every error this library raises itself."""


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised in a worker."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n" + self.tb.rstrip("\n")


class TaskTimeoutError(ParallelBarError, TimeoutError):
    """A task ran past ``process_timeout``; its worker was killed and replaced."""

    def __init__(self, message: str, *, task_position: Optional[int] = None,
                 timeout: Optional[float] = None) -> None:
        super().__init__(message)
        self.task_position = task_position
        self.timeout = timeout


class MemoryLimitError(ParallelBarError, MemoryError):
    """A task's worker grew past ``memory_limit``; the worker was killed and replaced."""

    def __new__(cls, *args: object, **kwargs: object) -> "MemoryLimitError":
        # ``cls.__new__`` would find MemoryError's, which refuses this class (its layout
        # comes from ParallelBarError); tblib, which dask installs for every exception
        # class once distributed is imported, rebuilds exceptions with ``cls.__new__(cls)``.
        return Exception.__new__(cls, *args)

    def __init__(self, message: str, *, task_position: Optional[int] = None,
                 limit: Optional[int] = None, used: Optional[int] = None) -> None:
        super().__init__(message)
        self.task_position = task_position
        self.limit = limit
        self.used = used


class WorkerDiedError(ParallelBarError):
    """The worker process running a task died (segfault, ``os._exit``, OOM kill...).

    Attributes: ``pid``, ``exitcode`` (negative for a signal, as in
    ``multiprocessing``), ``signal_name`` (``'SIGSEGV'`` or ``None``) and
    ``task_position``.
    """

    def __init__(self, message: str, *, pid: Optional[int] = None, exitcode: Optional[int] = None,
                 task_position: Optional[int] = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.task_position = task_position

    @property
    def signal_name(self) -> Optional[str]:
        return signal_name(self.exitcode)


class InitializerError(ParallelBarError):
    """The pool's ``initializer`` raised in a worker: no task can run, so the run stops."""


class SerializationError(ParallelBarError, pickle.PicklingError):
    """A function, task, result or exception could not be sent between processes."""


class RunTimeoutError(ParallelBarError, multiprocessing.TimeoutError, TimeoutError):
    """The whole call ran past its ``timeout``; the pool was stopped."""


class TaskExitError(ParallelBarError):
    """A task called ``sys.exit()`` (or raised another exception that is not an
    ``Exception``, such as ``KeyboardInterrupt``). That ends the task, not the
    caller's program: in ``'raise'`` mode the caller gets this error, never a silent
    exit with the task's status. ``code`` is what ``sys.exit`` was given."""

    def __init__(self, message: str, *, code: object = None,
                 original: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.original = original


def signal_name(exitcode: Optional[int]) -> Optional[str]:
    """``'SIGSEGV'`` for an exit code of -11, ``None`` for a normal exit code."""
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


_LIKELY_CAUSE = {
    "SIGSEGV": "the task crashed the interpreter (a segmentation fault in C code: "
               "a bad ctypes call, a buggy extension, or a stack overflow)",
    "SIGBUS": "the task crashed the interpreter (bus error in C code)",
    "SIGABRT": "the task aborted (a failed assertion in C code or a fatal Python error)",
    "SIGFPE": "the task crashed on an arithmetic fault in C code",
    "SIGILL": "the task crashed on an illegal instruction in C code",
    "SIGKILL": "the worker was killed with SIGKILL: most likely by the kernel's "
               "out-of-memory killer (see `dmesg`), or by another program",
    "SIGTERM": "the worker was terminated by another program (SIGTERM)",
}


def describe_death(exitcode: Optional[int]) -> str:
    """Say in words how a worker ended and what probably caused it."""
    name = signal_name(exitcode)
    if name is not None:
        cause = _LIKELY_CAUSE.get(name, "the worker was killed by a signal")
        return f"was killed by {name} (signal {-exitcode}): {cause}"
    if exitcode is None:
        return "vanished with an unknown exit status"
    return (f"exited with code {exitcode}: the task ended its process "
            f"(os._exit() or a C library calling exit())")
