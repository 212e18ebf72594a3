"""parallelbar_clone: parallel map with live progress bars that survives its tasks.

How one call flows, which thread or process runs what, and which channel carries
which message::

    caller thread                      manager thread (one per pool)          workers
    (map, or whoever iterates imap)    (manager.py)                           (worker.py)
    -------------------------------    ----------------------------           -----------
    feed.py: pull the input, replay
    the journal, encode chunks
      --run.ready (encoded chunks)-->  dispatch (<= 2 chunks per worker) --task pipe--> run_chunk()
      <--run.requeue (to encode again)  collect results (plain data)  <--result pipe--  status slot in
                                        reap deaths (sentinels)                         shared memory
                                        deadlines, memory (slots)  <------reads---------/
                                        retries, journal, respawn
    results.py: load values and   <--run.out (pieces of outcomes: bytes and records)
    exceptions, yield or collect        |
                                        +--bar events (batched)--> bar thread (bar.py, owns tqdm)

    zygote (zygote.py): a single-threaded fork of the caller made when the pool starts,
    with its first workers; it forks every later one (context='fork', the default on Linux).

- The manager never runs the caller's code: input generators, ``__reduce__`` of
  tasks and loading of results happen in the caller's thread, so deadlines,
  deaths and Ctrl-C are handled on time whatever they do (:mod:`.outcomes`).
- Each task position is delivered once (:class:`.run.Delivered`). What a dead worker
  had not begun goes back to the front of ``run.ready`` as it was; the rest of a
  chunk it had begun, to ``run.requeue``.
- Input is read as results are consumed, bounded in tasks, bytes and seconds
  of work (:mod:`.schedule`).
"""
from .api import progress_imap, progress_imapu, progress_map, progress_starmap
from .errors import (InitializerError, MemoryLimitError, ParallelBarError, RunTimeoutError,
                     SerializationError, TaskExitError, TaskTimeoutError, WorkerDiedError)
from .journal import Checkpoint, CheckpointMismatchError, load_checkpoint
from .options import Options
from .pool import ProgressPool, last_summary
from .summary import RunSummary
from . import tools, wrappers  # noqa: E402  (published: parallelbar.tools...)

__version__ = "0.1.0"

__all__ = [
    "progress_map", "progress_starmap", "progress_imap", "progress_imapu", "ProgressPool",
    "Options", "ParallelBarError", "TaskTimeoutError", "MemoryLimitError", "WorkerDiedError",
    "InitializerError", "SerializationError", "RunTimeoutError", "TaskExitError",
    "CheckpointMismatchError", "Checkpoint", "load_checkpoint", "last_summary", "RunSummary",
]


def __getattr__(name: str):  # PEP 562
    """``parallelbar_clone.parallelbar`` (the published module's names, among them its
    ``tqdm.auto`` ProgressBar) loads on first use: importing ``tqdm.auto`` in a Jupyter
    kernel without ipywidgets warns 'IProgress not found', which a plain
    ``import parallelbar_clone`` must not do (our own bars need no tqdm.auto)."""
    if name == "parallelbar":
        import importlib
        return importlib.import_module(".parallelbar", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
