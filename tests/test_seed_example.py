"""The seed article's closing example gives its published result."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISHED = ("[MemoryError(), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, "
             "19, TaskTimeoutError('function \"my_awesome_foo\" took longer than 1.5 s.'), 21, "
             "22, 23, 24, 25, 26, 27, 28, 29]")


@pytest.mark.slow
def test_seed_article_example():
    done = subprocess.run([sys.executable, os.path.join(HERE, "seed_example.py")],
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    out = done.stdout.decode()
    assert PUBLISHED in out  # published: "[MemoryError(), 1, ..., TimeoutError('function ...
    assert "time took:" in out
