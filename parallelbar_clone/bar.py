"""The one thread that owns the progress bars.

The pool's manager thread sends it small events (batched counts, at most every
``UPDATE_INTERVAL`` per run), never one per task; nothing else in the library
writes to the terminal or to a notebook's output.

Events, on a ``queue.SimpleQueue``::

    ('open', run_id, total, desc, initial, postfix)  show the DONE bar
    ('update', run_id, done, failed, postfix)  add to DONE / ERROR (ERROR appears on the first failure)
    ('summary', run_id, text)                  one line to show under the run's bars when they
                                               close (e.g. ``RunSummary.line()``); shown at once
                                               if the run has no open bars
    ('close', run_id, threading.Event)         final state, warning style if anything failed
    None                                       stop the thread

Where the bars are drawn is decided at each 'open' (:func:`frontend`):

``'terminal'``
    tqdm on stderr. DONE on the cursor's line, ERROR on the line below it from the
    first failure on, and the final redraw keeps that order. Both bars have the
    same layout: labels padded to one width, bars of one width, a count and a rate.
``'widgets'``
    tqdm's ipywidgets bars in a Jupyter kernel that has ipywidgets. Each bar is
    displayed with a display id and re-displayed when it closes, so a saved
    notebook also holds the final bar as text.
``'notebook-text'``
    a Jupyter kernel without ipywidgets: the same text lines, each an output of
    its own redrawn in place with ``display(..., display_id=...)`` (Jupyter's
    output area understands no cursor movement), and once per kernel a line on
    how to get the widgets. tqdm's own fallback would warn ``IProgress not
    found`` and draw the ERROR bar with cursor-up codes.

The percentage is rounded down, so DONE reads 100 % only when every task succeeded.
"""
from __future__ import annotations

import logging
import queue
import shutil
import sys
import threading
from time import monotonic
from typing import Any, Dict, List, Optional

from .zygote import FORK_GATE

log = logging.getLogger("parallelbar_clone")

__all__ = ["BarThread", "frontend", "bar_format", "TERMINAL", "WIDGETS", "NOTEBOOK_TEXT",
           "WIDGETS_HINT"]

UPDATE_INTERVAL = 0.05

TERMINAL, WIDGETS, NOTEBOOK_TEXT = "terminal", "widgets", "notebook-text"

WIDGETS_HINT = ("parallelbar_clone: text progress bars; for widget bars: "
                "pip install 'parallelbar_clone[notebook]' and restart the kernel")

ERROR_LABEL = "ERROR"
TEXT_BAR_WIDTH = 25       # the bar of the notebook text form, in characters
MIN_BAR_WIDTH = 10        # the terminal's bar never gets narrower (tqdm's own default)
MAX_BAR_WIDTH = 50
RIGHT_RESERVE = 32        # room kept right of the counts for times and rate (and postfix)

_hint_shown = False


def _jupyter_shell() -> Any:
    """The IPython kernel's shell when running inside one (Jupyter, VS Code,
    Colab...), else None. Only looks: never imports IPython."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        shell = ipython.get_ipython()
        return shell if shell is not None and "IPKernelApp" in shell.config else None
    except Exception:
        return None


def frontend() -> str:
    """Where bars opened now would be drawn: TERMINAL, WIDGETS or NOTEBOOK_TEXT."""
    if _jupyter_shell() is None:
        return TERMINAL
    try:
        from tqdm.notebook import IProgress
    except Exception:
        IProgress = None
    return WIDGETS if IProgress is not None else NOTEBOOK_TEXT


def bar_format(label: str, total: Optional[int], *, width: int, bar_width: Optional[int] = None,
               eta: bool = True) -> str:
    """A tqdm ``bar_format`` that lines up with the other bar of the run.

    ``label`` is padded so both bars start at one column; ``bar_width`` fixes the
    bar's width (None: tqdm's ``{bar}``, which the widgets need); the count is
    padded to the width of ``total``; ``{pct}`` is the percentage rounded down
    (see :class:`_Meter`). Without a total: label, count, elapsed time and rate.
    """
    head = f"{label + ':':<{width + 1}} ".replace("{", "{{").replace("}", "}}")
    if not total:
        return head + "{n_fmt}{unit} [{elapsed}, {rate_fmt}{postfix}]"
    bar = "{bar}" if bar_width is None else f"{{bar:{bar_width}}}"
    times = "[{elapsed}<{remaining}, {rate_fmt}{postfix}]" if eta else "[{elapsed}, {rate_fmt}{postfix}]"
    return (head + "{pct:3d}%|" + bar + f"| {{n_fmt:>{len(str(total))}}}/{{total_fmt}} "
            + times)


class _Meter:
    """Mixed into each tqdm class we draw with.

    ``hidden`` keeps a bar from drawing until it is shown (the ERROR bar is made
    hidden and shown with its first count, never as ``0/80``); ``{pct}`` in the
    format is the percentage rounded down.
    """

    hidden = False
    # No tqdm monitor thread: our bar thread refreshes the bars itself, and a thread that
    # lingers after the run would make every later fork (a new pool's zygote) a fork of
    # a multi-threaded process.
    monitor_interval = 0

    @property
    def format_dict(self) -> Dict[str, Any]:
        d = super().format_dict  # type: ignore[misc]
        n, total = d.get("n") or 0, d.get("total")
        d["pct"] = min(100, int(n * 100 // total)) if total else 0
        return d

    def display(self, *args: Any, **kwargs: Any) -> Any:
        if self.hidden:
            return True
        return super().display(*args, **kwargs)  # type: ignore[misc]


class _Discard:
    """A file for tqdm to write nothing to (the notebook text form draws through IPython)."""

    encoding = "utf-8"

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


def _classes(widgets: bool = False) -> Dict[str, type]:
    """The tqdm subclasses, made on first use; the widget bar only when asked for:
    importing tqdm.notebook imports IPython, ipywidgets and traitlets, which took a
    script's first bar 150 ms where they are installed."""
    if _CLASSES and (not widgets or "widgets" in _CLASSES):
        return _CLASSES
    if not _CLASSES:
        _terminal_classes()
    if widgets:
        _widget_class()
    return _CLASSES


def _terminal_classes() -> None:
    from tqdm.std import tqdm as std_tqdm

    class TerminalBar(_Meter, std_tqdm):
        pass

    class TextBar(_Meter, std_tqdm):
        """Draws its line as a display of its own, updated in place."""

        handle: Any = None

        def display(self, msg: Optional[str] = None, pos: Optional[int] = None) -> bool:
            if self.hidden:
                return True
            text = self.__str__() if msg is None else msg
            if not text:  # tqdm clearing the line: keep the last state on screen
                return True
            bundle = {"text/plain": text}
            if self.handle is None:
                from IPython.display import display
                self.handle = display(bundle, raw=True, display_id=True)
            else:
                self.handle.update(bundle, raw=True)
            return True

    _CLASSES["terminal"] = TerminalBar
    _CLASSES["text"] = TextBar


def _widget_class() -> None:
    try:
        from tqdm.notebook import tqdm_notebook
    except Exception:  # no IPython: terminal only
        return

    class WidgetBar(_Meter, tqdm_notebook):
        handle: Any = None

        def show(self) -> None:
            from IPython.display import display
            self.handle = display(self.container, display_id=True)
            self.displayed = True

        def show_final(self) -> None:
            """Display the closed bar again in place, with today's text as its plain-text
            form: a saved notebook then shows the final counts even where widgets don't
            render."""
            mimebundle = getattr(self.container, "_repr_mimebundle_", None)  # ipywidgets 8
            if self.handle is None or mimebundle is None:
                return
            bundle = dict(mimebundle() or {})
            d = self.format_dict
            d.update(colour=None, ascii=False)
            bundle["text/plain"] = self.format_meter(**d)
            self.handle.update(bundle, raw=True)

    _CLASSES["widgets"] = WidgetBar


_CLASSES: Dict[str, type] = {}


class _Bars:
    """The bars of one run and how they are drawn."""

    __slots__ = ("face", "done", "error", "total", "label_width", "bar_width", "notes")

    def __init__(self, face: str, done: Any, total: Optional[int], label_width: int,
                 bar_width: Optional[int]) -> None:
        self.face = face
        self.done = done
        self.error: Any = None
        self.total = total
        self.label_width = label_width
        self.bar_width = bar_width
        self.notes: List[str] = []


def _terminal_bar_width(label_width: int, total: Optional[int],
                        postfix: Optional[str] = None) -> Optional[int]:
    """The bar width for a terminal of today's width; tqdm's 10 when not a terminal."""
    stream = sys.stderr
    try:
        tty = stream.isatty()
    except Exception:
        tty = False
    if not tty:
        return MIN_BAR_WIDTH
    columns = shutil.get_terminal_size().columns
    counts = 2 * len(str(total or 0)) + 1
    room = columns - (label_width + 2) - 5 - 2 - counts - RIGHT_RESERVE - len(postfix or "")
    return max(MIN_BAR_WIDTH, min(MAX_BAR_WIDTH, room))


class BarThread:
    """Owns the bars of every run of one pool."""

    def __init__(self) -> None:
        self._events: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="parallelbar-bars", daemon=True)
        self._thread.start()

    def send(self, event: Any) -> None:
        self._events.put(event)

    def stop(self, timeout: float = 2.0) -> None:
        self._events.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        FORK_GATE.register()
        try:
            self._serve()
        finally:
            FORK_GATE.unregister()

    def _serve(self) -> None:
        bars: Dict[int, _Bars] = {}
        while True:
            event = self._events.get()
            with FORK_GATE.working():  # (a zygote is forked only while we wait)
                if event is None:
                    for run_id in list(bars):
                        self._close(bars.pop(run_id))
                    return
                try:
                    self._handle(bars, event)
                except Exception:  # a broken terminal must not break the run
                    log.exception("progress bar update failed")
                    if event[0] == "close":
                        event[2].set()

    def _handle(self, bars: Dict[int, _Bars], event: Any) -> None:
        kind, run_id = event[0], event[1]
        if kind == "open":
            _, _, total, desc, initial, postfix, since = event
            bars[run_id] = entry = self._open(total, desc, initial, postfix)
            # Opened late (the pool's manager opens it once work is sent): its clock, and
            # the time its first rate is measured over, start when the run was submitted.
            lag = max(0.0, monotonic() - since)
            entry.done.start_t -= lag
            entry.done.last_print_t -= lag
        elif kind == "update":
            _, _, done, failed, postfix = event
            entry = bars.get(run_id)
            if entry is None:
                return
            if failed:
                if entry.error is None:
                    self._open_error(entry, failed)
                else:
                    entry.error.update(failed)
            if postfix:
                entry.done.set_postfix_str(postfix, refresh=False)
            if done:
                entry.done.update(done)
            elif postfix:
                entry.done.refresh()
        elif kind == "summary":
            entry = bars.get(run_id)
            if entry is not None:
                entry.notes.append(event[2])
            else:
                self._note(frontend(), event[2])
        elif kind == "close":
            entry = bars.pop(run_id, None)
            try:
                if entry is not None:
                    self._close(entry)
            finally:
                event[2].set()

    # -- drawing ----------------------------------------------------------------------
    def _open(self, total: Optional[int], desc: str, initial: int,
              postfix: Optional[str]) -> _Bars:
        face = frontend()
        classes = _classes(widgets=face == WIDGETS)
        label_width = max(len(desc), len(ERROR_LABEL))
        kwargs: Dict[str, Any] = dict(total=total, initial=initial, postfix=postfix,
                                      leave=True)
        if face == WIDGETS:
            bar_width = None
            done = classes["widgets"](bar_format=bar_format(desc, total, width=label_width),
                                      display=False, **kwargs)
            _align_widget(done)
            done.show()
            done.refresh()
        elif face == NOTEBOOK_TEXT:
            self._hint_once()
            bar_width = TEXT_BAR_WIDTH
            done = classes["text"](bar_format=bar_format(desc, total, width=label_width,
                                                         bar_width=bar_width),
                                   file=_Discard(), ascii=False, **kwargs)
        else:
            bar_width = _terminal_bar_width(label_width, total, postfix)
            done = classes["terminal"](bar_format=bar_format(desc, total, width=label_width,
                                                             bar_width=bar_width),
                                       file=sys.stderr, **kwargs)
        return _Bars(face, done, total, label_width, bar_width)

    def _open_error(self, entry: _Bars, failed: int) -> None:
        """The ERROR bar, below DONE, drawn first with its first count. It keeps DONE's
        clock, so its elapsed time and rate are over the whole run."""
        classes = _classes(widgets=entry.face == WIDGETS)
        fmt = bar_format(ERROR_LABEL, entry.total, width=entry.label_width,
                         bar_width=entry.bar_width, eta=False)
        kwargs: Dict[str, Any] = dict(total=entry.total, bar_format=fmt, colour="red",
                                      leave=True)
        if entry.face == WIDGETS:
            cls = classes["widgets"]
            kwargs["display"] = False
        elif entry.face == NOTEBOOK_TEXT:
            cls = classes["text"]
            kwargs.update(file=_Discard(), ascii=False)
        else:
            cls = classes["terminal"]
            kwargs["file"] = sys.stderr
        error = _hidden(cls, **kwargs)
        error.start_t = error.last_print_t = entry.done.start_t
        error.update(failed)  # counts, and feeds the rate; drawn below
        error.hidden = False
        if entry.face == WIDGETS:
            _align_widget(error)
            error.show()
        error.refresh()
        entry.error = error

    def _close(self, entry: _Bars) -> None:
        """Final redraw: DONE first, then ERROR below it, then any summary line."""
        failed = entry.error is not None
        if failed and entry.face != WIDGETS:
            entry.done.colour = "yellow"
        entry.done.close()
        if entry.face == WIDGETS:
            if failed:
                entry.done.disp(bar_style="warning")
            entry.done.show_final()
        if failed:
            entry.error.close()
            if entry.face == WIDGETS:
                entry.error.show_final()
        for note in entry.notes:
            self._note(entry.face, note)

    @staticmethod
    def _note(face: str, text: str) -> None:
        if face == TERMINAL:
            from tqdm.std import tqdm as std_tqdm
            std_tqdm.write(text, file=sys.stderr)
        else:
            from IPython.display import display
            display({"text/plain": text}, raw=True)

    @staticmethod
    def _hint_once() -> None:
        global _hint_shown
        if not _hint_shown:
            _hint_shown = True
            from IPython.display import display
            display({"text/plain": WIDGETS_HINT}, raw=True)


def _hidden(cls: type, **kwargs: Any) -> Any:
    """A bar made without drawing (``hidden`` is read by display() during __init__)."""
    bar = cls.__new__(cls, **kwargs)
    bar.hidden = True
    bar.__init__(**kwargs)
    return bar


def _align_widget(bar: Any) -> None:
    """Fixed widths for the label and the bar of a widget, so that DONE's and ERROR's
    bars start and end at the same place whatever the text beside them."""
    try:
        label, progress, counts = bar.container.children
        label.layout.width = "7.5em"
        label.layout.flex = "none"
        if bar.total:
            progress.layout.flex = "1 1 auto"
            counts.layout.min_width = "24em"    # '9999/9999 [00:00<00:00, 999.99it/s]' fits
            counts.layout.flex = "none"
    except Exception:
        pass
