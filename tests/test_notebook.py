"""The notebook runs as a notebook would: its code fed to an interpreter whose
__main__ has no file (so the functions it defines travel by value)."""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(__file__)
NOTEBOOK = os.path.join(HERE, "..", "notebooks", "tour.ipynb")


def test_notebook_code_runs(tmp_path):
    with open(NOTEBOOK) as f:
        notebook = json.load(f)
    code = "\n\n".join("".join(cell["source"]) for cell in notebook["cells"]
                       if cell["cell_type"] == "code")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          timeout=300)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert "failed tasks: {17: 'ValueError', 34: 'ValueError', 40: 'TaskTimeoutError', " \
           "51: 'ValueError'}" in out
    assert "total digit sum:" in out
    assert "2000 results, 0 failures, total 2000" in out and out.rstrip().endswith("True")
