"""parallelbar_clone: parallel map with live progress bars that survives its tasks."""
from .api import progress_imap, progress_imapu, progress_map, progress_starmap
from .errors import (InitializerError, MemoryLimitError, ParallelBarError, RunTimeoutError,
                     SerializationError, TaskTimeoutError, WorkerDiedError)
from .journal import Checkpoint, CheckpointMismatchError, load_checkpoint
from .options import Options
from .pool import ProgressPool
from .summary import RunSummary
from . import parallelbar, tools, wrappers  # noqa: E402  (published: parallelbar.tools...)

__version__ = "0.1.0"

__all__ = [
    "progress_map", "progress_starmap", "progress_imap", "progress_imapu", "ProgressPool",
    "Options", "ParallelBarError", "TaskTimeoutError", "MemoryLimitError", "WorkerDiedError",
    "InitializerError", "SerializationError", "RunTimeoutError", "CheckpointMismatchError",
    "Checkpoint", "load_checkpoint", "RunSummary",
]
