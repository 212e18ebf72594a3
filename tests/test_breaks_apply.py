"""`make breaks` stays usable: every one-line break still finds its line, and names
tests that exist (an engine change that moved a line used to show up only when
someone ran `make breaks`)."""
import os
import re
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "mutation"))

import breaks  # noqa: E402


@pytest.mark.parametrize("brk", breaks.BREAKS, ids=lambda b: b.name)
def test_each_break_finds_its_line_and_its_tests(brk):
    with open(os.path.join(REPO, brk.path)) as f:
        assert f.read().count(brk.old) == 1, f"{brk.path}: {brk.old.strip()!r}"
    for test in brk.tests:
        path, name = test.split("::")
        base = name.split("[")[0]
        with open(os.path.join(REPO, path)) as f:
            assert re.search(rf"^def {base}\(", f.read(), re.MULTILINE), test
        if "[" in name:
            assert " " not in name, f"{test}: breaks.py reads test ids up to a space"
