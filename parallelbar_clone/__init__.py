"""parallelbar_clone: parallel map with live progress bars that survives its tasks."""
from .api import progress_imap, progress_imapu, progress_map, progress_starmap
from .errors import (InitializerError, MemoryLimitError, ParallelBarError, RunTimeoutError,
                     SerializationError, TaskTimeoutError, WorkerDiedError)
from .journal import Checkpoint, CheckpointMismatchError, load_checkpoint
from .options import Options
from .pool import ProgressPool
from .summary import RunSummary
from . import tools, wrappers  # noqa: E402  (published: parallelbar.tools...)

__version__ = "0.1.0"

__all__ = [
    "progress_map", "progress_starmap", "progress_imap", "progress_imapu", "ProgressPool",
    "Options", "ParallelBarError", "TaskTimeoutError", "MemoryLimitError", "WorkerDiedError",
    "InitializerError", "SerializationError", "RunTimeoutError", "CheckpointMismatchError",
    "Checkpoint", "load_checkpoint", "RunSummary",
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
