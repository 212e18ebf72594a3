"""The published ``parallelbar`` functions, as thin wrappers over ProgressPool.

Each makes a pool for one call, runs it, and always stops its workers (also on
an error or Ctrl-C). The parameters, their order and defaults are those of
``parallelbar`` 2.x; new options are keyword-only. One docstring, written once
below, serves all four.
"""
from __future__ import annotations

import inspect
import textwrap
from dataclasses import fields
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Optional

from .options import (NEW_OPTION_NAMES, POOL_FIELDS, NewOptions, Options, check_func,
                      parameters_doc)
from .pool import ProgressPool, _Star
from .run import SEQUENCES

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["progress_map", "progress_starmap", "progress_imap", "progress_imapu"]

PUBLISHED = ("func", "tasks", "initializer", "initargs", "n_cpu", "chunk_size", "context",
             "total", "disable", "process_timeout", "error_behavior", "set_error_value",
             "executor", "need_serialize", "maxtasksperchild", "used_add_progress_decorator",
             "return_failed_tasks", "timeout")
"""The published parameters, in the published order."""

_DOC = """{summary}

Runs ``func`` on every task in a pool of ``n_cpu`` workers (default: one per CPU
this process may use), with a live ``DONE`` bar and, from the first failure on, a
red ``ERROR`` bar below it. A task that raises, times out, runs out of memory,
crashes its worker or returns something unpicklable becomes an outcome in its own
slot; the rest of the run is untouched. Every argument is checked before any
process starts.

{parameters}
**options
    Keyword-only, beyond the published parameters: {new_names} (each described above).

Returns
-------
list
    The results {order}, or ``(results, failed_tasks)`` with
    ``return_failed_tasks=True``.
"""


def _doc(summary: str, order: str) -> str:
    new = sorted(NEW_OPTION_NAMES)
    return _DOC.format(summary=summary, order=order,
                       parameters=parameters_doc(PUBLISHED + tuple(new)).rstrip("\n"),
                       new_names=", ".join(f"``{n}``" for n in new))


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
    # The workers of a 'fork' pool inherit func (no pickling, even of what cannot pickle)
    # and a list, tuple or range of tasks (sent as positions in it: see Run.inherited).
    preload = (func, tasks) if type(tasks) in SEQUENCES else (func,)
    pool = ProgressPool(**pool_args, _preload=preload, _one_call=True)
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


progress_map.__doc__ = _doc("Parallel ``map`` with progress bars.", "in task order")
progress_starmap.__doc__ = _doc("Parallel ``starmap``: ``func(*task)`` for each task, with "
                                "progress bars.", "in task order")
progress_imap.__doc__ = _doc("Parallel ``imap`` with progress bars, collected into a list (for a "
                             "lazy iterator use ``ProgressPool.imap``).", "in task order")
progress_imapu.__doc__ = _doc("Parallel ``imap_unordered`` with progress bars, collected into a "
                              "list.", "in completion order")


# ProgressPool's docstrings, made here from the same descriptions (pool.py holds the engine;
# its own docstrings keep their first lines).
_CALL_OPTIONS = tuple(f.name for f in fields(Options) if f.name not in POOL_FIELDS)

_OPTIONS_NOTE = ("**options\n" + "\n".join(textwrap.wrap(
    "Keyword-only settings for this call, overriding the pool's defaults: "
    + ", ".join(f"``{n}``" for n in _CALL_OPTIONS)
    + " (each described in the ProgressPool class docstring). The worker settings "
    "(n_cpu, executor, context, initializer, initargs, maxtasksperchild) are the pool's.",
    width=84, initial_indent="    ", subsequent_indent="    ")) + "\n")

_POOL_EXTRA = {
    "__init__": parameters_doc(f.name for f in fields(Options)),
    "map": parameters_doc(("func", "tasks")) + _OPTIONS_NOTE,
    "starmap": parameters_doc(("func", "tasks")) + _OPTIONS_NOTE,
    "imap": parameters_doc(("func", "tasks")) + _OPTIONS_NOTE,
    "imap_unordered": parameters_doc(("func", "tasks")) + _OPTIONS_NOTE,
}


def _document_pool(cls: type) -> None:
    """Append the parameter sections to ProgressPool's docstrings, once."""
    if getattr(cls, "_parameters_documented", False):
        return
    cls.__doc__ = (inspect.cleandoc(cls.__doc__ or "") + "\n\n" + _POOL_EXTRA["__init__"])
    for name in ("map", "starmap", "imap", "imap_unordered"):
        method = getattr(cls, name)
        method.__doc__ = inspect.cleandoc(method.__doc__ or "") + "\n\n" + _POOL_EXTRA[name]
    cls._parameters_documented = True  # type: ignore[attr-defined]


_document_pool(ProgressPool)
