"""The published ``parallelbar.parallelbar`` module's public names, for code that
imports them from there (``from parallelbar.parallelbar import ProgressBar``)."""
from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from .api import progress_imap, progress_imapu, progress_map, progress_starmap
from .tools import func_args_unpack, get_len
from .wrappers import ProgressStatus, init_worker, stopit_after_timeout

__all__ = ["progress_map", "progress_imap", "progress_imapu", "progress_starmap", "ProgressBar",
           "ProgressStatus", "func_args_unpack", "get_len", "init_worker",
           "stopit_after_timeout", "tqdm"]


class ProgressBar(tqdm):  # type: ignore[misc,valid-type]
    """The published bar: a ``tqdm.auto`` bar that, in a notebook, turns to the
    warning style when it closes before reaching its total."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        super().close()
        if hasattr(self, "disp") and self.total and self.n < self.total:
            self.disp(bar_style="warning")
