"""Run the notebooks top to bottom in a fresh kernel each, and save them with their outputs.

    python notebooks/execute.py [NOTEBOOK ...]      # default: every notebook here
    make notebooks                                  # the same, in the project's .venv

Each runs in a scratch directory, so the files it writes stay out of the repository. Each
bar is saved as its widget view and its final text; JupyterLab shows that text when it
opens a saved notebook (it draws widgets only from a live kernel). The widgets' state
(some 9 KB a bar) and timing metadata are left out, so the files stay small. The test suite runs every notebook the same way (tests/test_notebook.py)
and fails on any error.
"""
from __future__ import annotations

import glob
import os
import sys
import tempfile

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
CELL_TIMEOUT = 120


def run(notebook: "nbformat.NotebookNode", cwd: str) -> "nbformat.NotebookNode":
    """Execute ``notebook`` in place in a fresh kernel started in ``cwd``; raises
    ``nbclient.exceptions.CellExecutionError`` on the first failing cell."""
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                            record_timing=False, store_widget_state=False,
                            resources={"metadata": {"path": cwd}})
    client.execute()
    return notebook


def main(paths: "list[str]") -> None:
    for path in paths or sorted(glob.glob(os.path.join(HERE, "*.ipynb"))):
        notebook = nbformat.read(path, as_version=4)
        with tempfile.TemporaryDirectory() as scratch:
            run(notebook, scratch)
        nbformat.write(notebook, path)
        print(f"{os.path.relpath(path)}: {os.path.getsize(path) // 1024} KB")


if __name__ == "__main__":
    main(sys.argv[1:])
