"""Run by test_zygote.py, as a script or as notebook code (no file): functions the
caller defines or redefines while a ProgressPool lives, and one defined under the
main guard, where a spawned worker that imports the script does not have it."""
import json
import os
import sys

sys.path.insert(0, os.environ["PB_REPO"])

from parallelbar_clone import ProgressPool  # noqa: E402


def f(x):
    return x + 1


if __name__ == "__main__":
    context = sys.argv[1]

    def guarded(x):
        return x * 3

    with ProgressPool(n_cpu=2, context=context, disable=True) as pool:
        first = pool.map(f, range(3))

        def f(x):   # redefined after the pool started (a notebook cell run again)
            return x + 100

        redefined = pool.map(f, range(3))

        def g(x):   # defined after the pool started
            return f(x) * 2

        late = pool.map(g, range(3))
        under_guard = pool.map(guarded, range(3))
    print("RESULT " + json.dumps([first, redefined, late, under_guard]))
