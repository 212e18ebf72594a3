"""Every notebook in notebooks/ runs top to bottom in a fresh kernel, as a reader runs it
(functions defined in the notebook travel to the workers by value), with the settings
notebooks/execute.py saves them with; and the bars of a kernel without ipywidgets."""
import glob
import importlib.util
import os
import re

import nbformat
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOK_DIR = os.path.join(HERE, "..", "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
WIDGET = "application/vnd.jupyter.widget-view+json"

_spec = importlib.util.spec_from_file_location("execute_notebooks",
                                               os.path.join(NOTEBOOK_DIR, "execute.py"))
execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute)

# What each notebook must print; a notebook added without an entry fails the test.
EXPECTED = {
    "quickstart.ipynb": ["[0.0, 1.0, 1.4142135623730951, 1.7320508075688772] 400",
                         "[1, 2, 4, 8, 16]", "sum of digit sums: 7050000 [18, 6, 22]"],
    "errors_and_guards.ipynb": ["results[3] = ValueError: bad input 3",
                                "results[7] = TaskTimeoutError",
                                "results[11] = MemoryLimitError",
                                "results[13] = WorkerDiedError", "SIGSEGV",
                                "results[17] = WorkerDiedError", "exited with code 3",
                                "caught KeyError('no row 5')",
                                "failed tasks: [0, 2, 4, 6, 8, 10]"],
    "resume_and_retries.ipynb": ["0 failures after retries",
                                 "ConnectionError after 3 attempts", "results journalled",
                                 "True"],
    "dask.ipynb": ["ValueError: negative amount -3.0", "3 TaskTimeoutError", "6 WorkerDiedError",
                   "[0, 1, 4, 16, 25, 49, 64, 81]", "[1.19, 2.38, 3.57]",
                   "ConnectionError after 5 s", "[2.0, 3.0, 4.0]"],
    # needs pandas: run by `make test-pandas` (.ci/run), skipped in a plain `make test`
    "pandas.ipynb": ["failed rows: ['A100123', 'A101777', 'A102042']",
                     "A102042 TaskTimeoutError", "{'normal': 8171, 'urgent': 1829}",
                     "same result: True"],
}
NEEDS = {"pandas.ipynb": "pandas"}


def outputs(notebook):
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def stream_text(notebook, name):
    return "".join(o.text for o in outputs(notebook)
                   if o.output_type == "stream" and o.name == name)


def displayed_text(notebook):
    return [o.data["text/plain"] for o in outputs(notebook)
            if o.output_type in ("display_data", "execute_result") and "text/plain" in o.data]


def test_every_notebook_has_expectations():
    assert NOTEBOOKS and sorted(map(os.path.basename, NOTEBOOKS)) == sorted(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_in_a_fresh_kernel(path, tmp_path):
    if os.path.basename(path) in NEEDS:
        pytest.importorskip(NEEDS[os.path.basename(path)])
    notebook = execute.run(nbformat.read(path, as_version=4), str(tmp_path))  # raises on error
    printed = stream_text(notebook, "stdout")
    for expected in EXPECTED[os.path.basename(path)]:
        assert printed.count(expected) == 1, (expected, printed)   # once: no echo from workers
    assert stream_text(notebook, "stderr") == ""      # no warnings, no text bars, no dumps
    bars = [o for o in outputs(notebook) if "data" in o and WIDGET in o.data]
    assert bars and all(re.match(r"(DONE|ERROR):", o.data["text/plain"]) for o in bars)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_saved_notebook_is_executed_and_small(path):
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    notebook = nbformat.reads(raw, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "run notebooks/execute.py to save outputs"
    assert any(c.outputs for c in code)
    assert len(raw) < 150_000
    assert not re.search(r"/(home|root|tmp|work|Users)/", raw), "a machine path in the outputs"


HIDE_IPYWIDGETS = "import sys\nsys.modules['ipywidgets'] = None   # as if not installed"
RUN_WITH_FAILURES = """
from parallelbar_clone import progress_map

def f(x):
    if x in (3, 7):
        raise ValueError(x)
    return x

print(sum(isinstance(r, ValueError) for r in progress_map(f, range(30), n_cpu=2,
                                                        error_behavior="coerce")))
"""


SUMMARY_UNDER_BARS = """
import threading
import time
from parallelbar_clone.bar import BarThread

bars, closed = BarThread(), threading.Event()
for event in [("open", 1, 10, "DONE", 0, None, time.monotonic()), ("update", 1, 8, 2, None),
              ("summary", 1, "2 of 10 tasks failed: ValueError 2"), ("close", 1, closed)]:
    bars.send(event)
closed.wait(10)
bars.stop()
"""


def test_bars_without_ipywidgets_are_text_jupyter_can_draw(tmp_path):
    cells = [HIDE_IPYWIDGETS, RUN_WITH_FAILURES, RUN_WITH_FAILURES, SUMMARY_UNDER_BARS]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    execute.run(notebook, str(tmp_path))
    from parallelbar_clone.bar import WIDGETS_HINT
    assert "pip install 'parallelbar_clone[notebook]'" in WIDGETS_HINT
    assert stream_text(notebook, "stderr") == ""      # no TqdmWarning, no cursor movement
    assert stream_text(notebook, "stdout") == "2\n2\n"
    shown = displayed_text(notebook)
    assert shown.count(WIDGETS_HINT) == 1             # once per kernel
    for cell in notebook.cells[1:3]:                  # each bar redrawn in place: one output
        lines = [o.data["text/plain"] for o in cell.outputs if o.output_type == "display_data"
                 and o.data["text/plain"] != WIDGETS_HINT]
        # the bars, then the run's summary line under them
        assert [line.split(":")[0] for line in lines] == ["DONE", "ERROR",
                                                          "2 of 30 tasks failed"], lines
        assert lines[2].startswith("2 of 30 tasks failed: ValueError 2")
        assert re.search(r"\b28/30\b", lines[0]) and re.search(r"\b2/30\b", lines[1])
        assert not any("\x1b[A" in line or "\r" in line for line in lines)
    summary_cell = [o.data["text/plain"].split(":")[0] for o in notebook.cells[3].outputs]
    assert summary_cell == ["DONE", "ERROR", "2 of 10 tasks failed"]
