"""Functions and classes defined in the user's script (__main__) under every start
method; scripts without an `if __name__ == '__main__':` guard work too, because new
workers never re-run the script."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("guard", ["guarded", "unguarded"])
def test_script_functions_and_classes(start_method, guard):
    env = dict(os.environ)
    if guard == "unguarded":
        env["UNGUARDED"] = "1"
    done = subprocess.run([sys.executable, os.path.join(HERE, "main_script.py"), start_method],
                          env=env, capture_output=True, timeout=120)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert "made True [0, 3, 6, 9, 12, 15]" in out
    assert "grown True [1, 2, 3, 4, 5, 6]" in out
