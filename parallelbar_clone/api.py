"""The published ``parallelbar`` functions, as thin wrappers over ProgressPool.

Each makes a pool for one call, runs it, and always stops its workers (also on
an error or Ctrl-C). The parameters, their order and defaults are those of
``parallelbar`` 2.x; new options are keyword-only. One docstring, written once
below, serves all four.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Optional

from .options import NEW_OPTION_NAMES, NewOptions, Options, check_func
from .pool import ProgressPool, _Star

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["progress_map", "progress_starmap", "progress_imap", "progress_imapu"]

_DOC = """{summary}

Runs ``func`` on every task in a pool of {{n_cpu}} workers, with a live ``DONE`` bar
and, from the first failure on, a red ``ERROR`` bar. A task that raises, times out,
runs out of memory, crashes its worker or returns something unpicklable becomes
an outcome in its own slot; the rest of the run is untouched.

Returns a list {order}, or ``(results, failed_tasks)`` with
``return_failed_tasks=True``.

Parameters are those of :class:`parallelbar_clone.options.Options` (all
validated before any process starts), in the published order::

    func, tasks, initializer=None, initargs=(), n_cpu=None, chunk_size=None,
    context=None, total=None, disable=False, process_timeout=None,
    error_behavior='raise', set_error_value=None, executor='processes',
    need_serialize=False, maxtasksperchild=None,
    used_add_progress_decorator=False, return_failed_tasks=False, timeout=None,
    **options   # keyword-only, new: memory_limit, retries, retry_delay, retry_backoff,
                # retry_on, checkpoint, overwrite_checkpoint, keep_failures
"""


# Options of parallelbar 1.x that its README still shows (2.x refuses them): accepted, unused.
_RETIRED = ("core_progress", "bar_step")


def _arguments(local_vars: Dict[str, Any]) -> Dict[str, Any]:
    """The call's arguments as one dict; unknown keyword options are refused by name."""
    kwargs = dict(local_vars)
    extra = kwargs.pop("options")
    for name in _RETIRED:
        if name in extra:
            del extra[name]
            warnings.warn(f"{name}= is ignored: it was removed from parallelbar in 2.0",
                          DeprecationWarning, stacklevel=3)
    unknown = sorted(set(extra) - NEW_OPTION_NAMES)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; the options "
                        f"beyond the published ones are: {', '.join(sorted(NEW_OPTION_NAMES))}")
    kwargs.update(extra)
    return kwargs


def _run(mode: str, func: Callable[..., Any], tasks: Iterable[Any], kwargs: dict) -> Any:
    pool_args = {k: kwargs.pop(k) for k in ("n_cpu", "executor", "context", "initializer",
                                            "initargs", "maxtasksperchild")}
    Options(**pool_args, **kwargs)  # every argument is checked before any process starts
    if "memory_limit" in kwargs:   # (with executor='dask': the limit of the workers it starts)
        pool_args["memory_limit"] = kwargs["memory_limit"]
    check_func(func)
    if type(tasks).__name__ == "DataFrame" and type(tasks).__module__.startswith("pandas"):
        warnings.warn("iterating a DataFrame yields its column names, so these are the tasks; "
                      "for rows use df.pbar.apply(func, axis=1) after "
                      "`import parallelbar_clone.pandas`", UserWarning, stacklevel=3)
    # The zygote of a 'fork' pool inherits func: no pickling, even of what cannot pickle.
    pool = ProgressPool(**pool_args, _preload=(func,))
    ok = False
    try:
        if mode == "map":
            result = pool.map(func, tasks, **kwargs)
        else:
            result = pool._gather(func, tasks, mode, kwargs)
        ok = True
        return result
    finally:
        if ok:
            pool.close()
        else:
            pool.terminate()


def progress_map(func: Callable[[Any], Any], tasks: Iterable[Any],
                 initializer: Optional[Callable[..., Any]] = None, initargs: tuple = (),
                 n_cpu: Optional[int] = None, chunk_size: Optional[int] = None,
                 context: Optional[str] = None, total: Optional[int] = None,
                 disable: bool = False, process_timeout: Optional[float] = None,
                 error_behavior: str = "raise", set_error_value: Any = None,
                 executor: Any = "processes", need_serialize: bool = False,
                 maxtasksperchild: Optional[int] = None,
                 used_add_progress_decorator: bool = False, return_failed_tasks: bool = False,
                 timeout: Optional[float] = None, **options: Unpack[NewOptions]) -> Any:
    kwargs = _arguments(locals())
    return _run("map", kwargs.pop("func"), kwargs.pop("tasks"), kwargs)


def progress_starmap(func: Callable[..., Any], tasks: Iterable[Iterable[Any]],
                     initializer: Optional[Callable[..., Any]] = None, initargs: tuple = (),
                     n_cpu: Optional[int] = None, chunk_size: Optional[int] = None,
                     context: Optional[str] = None, total: Optional[int] = None,
                     disable: bool = False, process_timeout: Optional[float] = None,
                     error_behavior: str = "raise", set_error_value: Any = None,
                     executor: Any = "processes", need_serialize: bool = False,
                     maxtasksperchild: Optional[int] = None,
                     used_add_progress_decorator: bool = False,
                     return_failed_tasks: bool = False, timeout: Optional[float] = None,
                     **options: Unpack[NewOptions]) -> Any:
    kwargs = _arguments(locals())
    return _run("map", _Star(kwargs.pop("func")), kwargs.pop("tasks"), kwargs)


def progress_imap(func: Callable[[Any], Any], tasks: Iterable[Any],
                  initializer: Optional[Callable[..., Any]] = None, initargs: tuple = (),
                  n_cpu: Optional[int] = None, chunk_size: Optional[int] = None,
                  context: Optional[str] = None, total: Optional[int] = None,
                  disable: bool = False, process_timeout: Optional[float] = None,
                  error_behavior: str = "raise", set_error_value: Any = None,
                  executor: Any = "processes", need_serialize: bool = False,
                  maxtasksperchild: Optional[int] = None,
                  used_add_progress_decorator: bool = False, return_failed_tasks: bool = False,
                  timeout: Optional[float] = None, **options: Unpack[NewOptions]) -> Any:
    kwargs = _arguments(locals())
    return _run("imap", kwargs.pop("func"), kwargs.pop("tasks"), kwargs)


def progress_imapu(func: Callable[[Any], Any], tasks: Iterable[Any],
                   initializer: Optional[Callable[..., Any]] = None, initargs: tuple = (),
                   n_cpu: Optional[int] = None, chunk_size: Optional[int] = None,
                   context: Optional[str] = None, total: Optional[int] = None,
                   disable: bool = False, process_timeout: Optional[float] = None,
                   error_behavior: str = "raise", set_error_value: Any = None,
                   executor: Any = "processes", need_serialize: bool = False,
                   maxtasksperchild: Optional[int] = None,
                   used_add_progress_decorator: bool = False, return_failed_tasks: bool = False,
                   timeout: Optional[float] = None, **options: Unpack[NewOptions]) -> Any:
    kwargs = _arguments(locals())
    return _run("imapu", kwargs.pop("func"), kwargs.pop("tasks"), kwargs)


progress_map.__doc__ = _DOC.format(summary="Parallel ``map`` with progress bars.",
                                   order="in task order")
progress_starmap.__doc__ = _DOC.format(summary="Parallel ``starmap``: ``func(*task)`` for each "
                                       "task, with progress bars.", order="in task order")
progress_imap.__doc__ = _DOC.format(summary="Parallel ``imap`` with progress bars (collected "
                                    "into a list; for a lazy iterator use "
                                    "``ProgressPool.imap``).", order="in task order")
progress_imapu.__doc__ = _DOC.format(summary="Parallel ``imap_unordered`` with progress bars.",
                                     order="in completion order")
