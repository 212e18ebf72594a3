"""One frozen options object, validated in one place.

Every public entry point (the four ``progress_*`` functions, :class:`ProgressPool`
and its methods) builds an :class:`Options` and nothing else checks arguments:
an error message here says what was given and what is allowed, before any
process starts.
"""
from __future__ import annotations

import multiprocessing
import os
import re
import sys
import textwrap
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Type, Union

try:  # Python 3.8+
    from typing import TypedDict
except ImportError:  # pragma: no cover
    TypedDict = dict  # type: ignore[assignment,misc]

__all__ = ["Options", "NewOptions", "PARAMETERS", "parameters_doc", "check_func", "parse_memory",
           "default_context", "default_n_cpu"]

ERROR_BEHAVIORS = ("raise", "coerce", "ignore")
EXECUTORS = ("processes", "threads", "dask")
SCHEDULER_SCHEMES = ("tcp://", "tls://", "ws://", "wss://", "inproc://", "ucx://")


def is_dask_client(value: Any) -> bool:
    """Is ``value`` a ``distributed.Client``? (Without importing distributed: if it was
    never imported, nothing can be one.)"""
    distributed = sys.modules.get("distributed")
    client = getattr(distributed, "Client", None)
    return isinstance(client, type) and isinstance(value, client)


def uses_dask(executor: Any) -> bool:
    return executor == "dask" or is_dask_client(executor) or (
        isinstance(executor, str) and executor.startswith(SCHEDULER_SCHEMES))


def _check_executor(value: Any) -> None:
    if isinstance(value, str) and (value in EXECUTORS or uses_dask(value)):
        return
    if is_dask_client(value):
        return
    raise ValueError(f"executor={value!r} is not allowed; use 'processes', 'threads', 'dask', "
                     f"a dask scheduler address such as 'tcp://host:8786', or a "
                     f"distributed.Client")


_UNITS = {"": 1, "b": 1,
          "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9, "t": 10 ** 12,
          "ki": 2 ** 10, "mi": 2 ** 20, "gi": 2 ** 30, "ti": 2 ** 40}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


def parse_memory(value: Union[int, str]) -> int:
    """Bytes from an int or a string such as ``'512MB'`` (10**6) or ``'2GiB'`` (2**30)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"memory_limit must be an int (bytes) or a string such as '512MB', "
                        f"got {type(value).__name__} {value!r}")
    if isinstance(value, int):
        number = value
    else:
        match = _MEMORY_RE.match(value)
        if not match:
            raise ValueError(f"memory_limit {value!r} is not a size: use bytes as an int, or a "
                             f"number with a unit: B, KB, MB, GB, TB (powers of 1000) or "
                             f"KiB, MiB, GiB, TiB (powers of 1024), e.g. '512MB' or '2GiB'")
        number = int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])
    if number <= 0:
        raise ValueError(f"memory_limit must be more than 0 bytes, got {value!r}")
    return number


def default_context() -> str:
    """The start method used when ``context`` is None.

    ``fork`` where it exists, but macOS (so Linux and other POSIX), as
    multiprocessing's own default there and the published parallelbar: workers
    see the caller's program as it stood when the pool started. Unlike plain
    fork, they are forked by the pool's zygote (:mod:`.zygote`), a single-threaded
    copy of the caller made before any thread of the pool runs, so no lock held
    by another thread of ours can be inherited. ``spawn`` on macOS and Windows,
    as Python does.
    """
    methods = multiprocessing.get_all_start_methods()
    if sys.platform != "darwin" and "fork" in methods:
        return "fork"
    return "spawn"


def default_n_cpu() -> int:
    """CPUs this process may run on (respects affinity masks and containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_func(func: Any) -> None:
    """``func`` must be callable: say what was given."""
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__} {func!r}")


def _check_positive_number(name: str, value: Any, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got "
                        f"{type(value).__name__} {value!r}")
    if not value > 0:  # also catches NaN
        raise ValueError(f"{name} must be more than 0 seconds (or None for no limit), got {value!r}")


def _check_count(name: str, value: Any, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum} (or None), got {value!r}")


def _check_choice(name: str, value: Any, allowed: Tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; use one of "
                         + ", ".join(repr(a) for a in allowed))


# One description per parameter, written once: the docstrings of Options, of the four
# progress_* functions and of ProgressPool and its methods are all made from these.
# name: (type, description)
PARAMETERS: Dict[str, Tuple[str, str]] = {
    "func": ("callable",
             "Run as ``func(task)`` in a worker for each task (``func(*task)`` for the "
             "starmap variants). Lambdas, closures and functions defined in ``__main__`` "
             "or a notebook are sent through dill."),
    "tasks": ("iterable",
              "The inputs. Any iterable, also a generator of unknown length; it is read "
              "as work is sent out, not all at once."),
    "initializer": ("callable, optional",
                    "Called as ``initializer(*initargs)`` once in each new worker. If it "
                    "raises, the run stops with ``InitializerError``."),
    "initargs": ("tuple, default ()", "Arguments for ``initializer``."),
    "n_cpu": ("int, optional",
              "Workers to run. Default: the CPUs this process may use (its affinity "
              "mask, not the machine's count)."),
    "chunk_size": ("int, optional",
                   "Tasks sent to a worker at once. Default None: chunks are sized from "
                   "measured task durations (about 0.2 s of work each, 64 KB of tasks at most, "
                   "smaller at the start and near the end)."),
    "context": ("str, optional",
                "Start method of worker processes: ``'fork'``, ``'spawn'`` or "
                "``'forkserver'``. Default: ``'fork'`` semantics where fork exists but "
                "macOS (workers forked by the pool's single-threaded zygote, so they see "
                "the program as it stood when the pool started), else ``'spawn'``."),
    "total": ("int, optional",
              "The number of tasks, for the bar. Default ``len(tasks)`` or "
              "``operator.length_hint(tasks)``; unknown is fine (the bar counts "
              "without a percentage)."),
    "disable": ("bool, default False", "Show no progress bars."),
    "process_timeout": ("float, optional",
                        "Seconds one task may run. Enforced from the parent: the worker "
                        "is killed (even inside C code) and replaced, and the task's slot "
                        "gets a ``TaskTimeoutError``."),
    "error_behavior": ("{'raise', 'coerce', 'ignore'}, default 'raise'",
                       "``'raise'``: the first failure is raised in the caller at once, "
                       "as its own type, and the run stops. ``'coerce'``: the failed "
                       "task's slot gets ``set_error_value``, or the exception itself "
                       "when that is None. ``'ignore'``: failed slots are left out of "
                       "the result."),
    "set_error_value": ("object, optional",
                        "What a failed slot holds with ``error_behavior='coerce'``; None "
                        "(the default) puts the exception there."),
    "executor": ("{'processes', 'threads', 'dask'}, scheduler address or Client, "
                 "default 'processes'",
                 "Run tasks in worker processes, or in threads of this process (no "
                 "``memory_limit``; a timeout fills the slot but cannot stop the "
                 "thread), or on a dask.distributed cluster: ``'dask'`` (the current "
                 "default client, else a ``LocalCluster`` of ``n_cpu`` single-threaded "
                 "worker processes, closed at the end), a scheduler address "
                 "(``'tcp://host:8786'``) or a ``distributed.Client`` (never closed "
                 "by us). Needs ``pip install 'parallelbar_clone[dask]'``; see "
                 ":mod:`parallelbar_clone.dask_backend` for how each guard maps onto "
                 "dask."),
    "need_serialize": ("bool, default False",
                       "Accepted for compatibility with parallelbar; functions that "
                       "pickle cannot send go through dill anyway."),
    "maxtasksperchild": ("int, optional",
                         "Replace a worker after it ran this many tasks."),
    "used_add_progress_decorator": ("bool, default False",
                                    "The bar counts calls of functions decorated with "
                                    "``wrappers.add_progress`` instead of tasks (give "
                                    "``total`` as the number of calls)."),
    "return_failed_tasks": ("bool, default False",
                            "Return ``(results, failed_tasks)``: also the tasks that "
                            "failed."),
    "timeout": ("float, optional",
                "Seconds the whole call may take; past it the run stops with "
                "``RunTimeoutError``."),
    "memory_limit": ("int or str, optional",
                     "How much a worker's resident memory may grow over what it held "
                     "when it started, across its tasks: bytes, or a size such as "
                     "``'512MB'`` or ``'2GiB'``. The task running when it is passed "
                     "gets a ``MemoryLimitError`` (saying what the worker held and "
                     "what that task added) and the worker is replaced. Not with "
                     "threads; with ``executor='dask'`` it is the memory limit of the "
                     "dask workers we start (their whole memory)."),
    "retries": ("int, default 0",
                "Run a failed task up to this many more times, on any worker, before "
                "its failure is final (timeouts and worker deaths count as failures)."),
    "retry_delay": ("float, default 0",
                    "Seconds to wait before the first retry of a task."),
    "retry_backoff": ("float, default 1",
                      "Multiplies the wait before each further retry: the k-th retry "
                      "waits ``retry_delay * retry_backoff**(k-1)``."),
    "retry_on": ("exception class or tuple of them, default Exception",
                 "The failures worth retrying (so not ``KeyboardInterrupt``)."),
    "checkpoint": ("str or os.PathLike, optional",
                   "Path of a SQLite journal of finished tasks. Calling again with the "
                   "same path after a crash (even SIGKILL or a power cut) runs only the "
                   "tasks not journalled yet and returns the full result."),
    "overwrite_checkpoint": ("bool, default False",
                             "Start the journal afresh even if a different call wrote "
                             "it (else ``CheckpointMismatchError``)."),
    "keep_failures": ("bool, default False",
                      "On resume, keep journalled failures instead of running those "
                      "tasks again."),
}


def parameters_doc(names: Iterable[str], heading: str = "Parameters") -> str:
    """A numpydoc ``Parameters`` section for ``names``, from :data:`PARAMETERS`."""
    lines = [heading, "-" * len(heading)]
    for name in names:
        kind, text = PARAMETERS[name]
        lines.append(f"{name} : {kind}")
        lines.extend(textwrap.wrap(text, width=84, initial_indent="    ",
                                   subsequent_indent="    "))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Options:
    """Everything a run can be told, after ``func`` and ``tasks``.

    Pool settings (``n_cpu`` ... ``maxtasksperchild``) fix how workers are made;
    the others may change from one call to the next on the same
    :class:`~parallelbar_clone.ProgressPool`.

    Each field is described in :data:`PARAMETERS` (shown below by ``help()``).
    """

    n_cpu: Optional[int] = None
    executor: Union[str, Any] = "processes"
    context: Optional[str] = None
    initializer: Optional[Callable[..., Any]] = None
    initargs: Tuple[Any, ...] = ()
    maxtasksperchild: Optional[int] = None
    chunk_size: Optional[int] = None
    total: Optional[int] = None
    disable: bool = False
    process_timeout: Optional[float] = None
    memory_limit: Optional[Union[int, str]] = None
    error_behavior: str = "raise"
    set_error_value: Any = None
    need_serialize: bool = False
    used_add_progress_decorator: bool = False
    return_failed_tasks: bool = False
    timeout: Optional[float] = None
    retries: int = 0
    retry_delay: float = 0.0
    retry_backoff: float = 1.0
    retry_on: Union[Type[BaseException], Tuple[Type[BaseException], ...]] = Exception
    checkpoint: Optional[Union[str, "os.PathLike[str]"]] = None
    overwrite_checkpoint: bool = False
    keep_failures: bool = False

    def __post_init__(self) -> None:
        _check_count("n_cpu", self.n_cpu, 1)
        _check_executor(self.executor)
        dask = uses_dask(self.executor)
        if dask and self.maxtasksperchild is not None:
            raise ValueError("maxtasksperchild needs executor='processes' or 'threads': dask "
                             "starts and stops its own workers")
        if self.context is not None:
            _check_choice("context", self.context, tuple(multiprocessing.get_all_start_methods()))
        if self.initializer is not None and not callable(self.initializer):
            raise TypeError(f"initializer must be callable or None, got "
                            f"{type(self.initializer).__name__} {self.initializer!r}")
        if not isinstance(self.initargs, (tuple, list)):
            raise TypeError(f"initargs must be a tuple, got {type(self.initargs).__name__} "
                            f"{self.initargs!r}")
        object.__setattr__(self, "initargs", tuple(self.initargs))
        _check_count("maxtasksperchild", self.maxtasksperchild, 1)
        _check_count("chunk_size", self.chunk_size, 1)
        _check_count("total", self.total, 0)
        _check_positive_number("process_timeout", self.process_timeout)
        _check_positive_number("timeout", self.timeout)
        if self.memory_limit is not None:
            object.__setattr__(self, "memory_limit", parse_memory(self.memory_limit))
            if self.executor == "threads":
                raise ValueError("memory_limit needs executor='processes': a thread cannot be "
                                 "stopped or measured on its own")
            if dask and self.executor != "dask":
                raise ValueError("memory_limit can only be enforced on a dask cluster this "
                                 "library starts (executor='dask'); give the workers of this "
                                 "one a memory limit where they are made "
                                 "(LocalCluster(memory_limit=...), dask worker --memory-limit)")
        _check_choice("error_behavior", self.error_behavior, ERROR_BEHAVIORS)
        _check_count("retries", self.retries, 0)
        if self.retries is None:
            raise TypeError("retries must be an int (0 for none), got None")
        for name, low in (("retry_delay", 0.0), ("retry_backoff", 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
                raise ValueError(f"{name} must be a number >= {low}, got {value!r}")
        classes = self.retry_on if isinstance(self.retry_on, tuple) else (self.retry_on,)
        if not classes or not all(isinstance(c, type) and issubclass(c, BaseException)
                                  for c in classes):
            raise TypeError(f"retry_on must be an exception class or a tuple of them, got "
                            f"{self.retry_on!r}")
        if self.checkpoint is not None:
            if not isinstance(self.checkpoint, (str, os.PathLike)):
                raise TypeError(f"checkpoint must be a file path (str or os.PathLike), got "
                                f"{type(self.checkpoint).__name__} {self.checkpoint!r}")
            object.__setattr__(self, "checkpoint", os.fspath(self.checkpoint))
        for name in ("disable", "need_serialize", "used_add_progress_decorator",
                     "return_failed_tasks", "overwrite_checkpoint", "keep_failures"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {type(value).__name__} "
                                f"{value!r}")

    @property
    def workers(self) -> int:
        return self.n_cpu if self.n_cpu is not None else default_n_cpu()

    @property
    def start_method(self) -> str:
        return self.context if self.context is not None else default_context()

    def with_call(self, **overrides: Any) -> "Options":
        """A copy with per-call settings replaced (validated again); unknown names raise."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unexpected option(s) {', '.join(unknown)}; allowed: "
                            + ", ".join(sorted(known)))
        pool_level = sorted(k for k in overrides if k in POOL_FIELDS
                            and overrides[k] != getattr(self, k))
        if pool_level:
            raise TypeError(f"{', '.join(pool_level)} fix(es) how a ProgressPool makes its workers: "
                            f"pass it to ProgressPool(...), not to one call")
        return replace(self, **overrides)


Options.__doc__ = (Options.__doc__ or "") + "\n" + parameters_doc(f.name for f in fields(Options))

POOL_FIELDS = frozenset({"n_cpu", "executor", "context", "initializer", "initargs",
                         "maxtasksperchild"})


class NewOptions(TypedDict, total=False):
    """Keyword-only options the four ``progress_*`` functions take beyond the published
    ones (documented on :class:`Options`), for ``**options: Unpack[NewOptions]``."""

    memory_limit: Union[int, str]
    retries: int
    retry_delay: float
    retry_backoff: float
    retry_on: Union[Type[BaseException], Tuple[Type[BaseException], ...]]
    checkpoint: Union[str, "os.PathLike[str]"]
    overwrite_checkpoint: bool
    keep_failures: bool


NEW_OPTION_NAMES = frozenset(NewOptions.__annotations__)
