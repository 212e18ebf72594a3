"""Run by test_zygote.py: a garbage collection in a freshly forked child, while Python
sets up its threading module again, must not run callbacks that wait for a lock that
set-up holds. ipykernel installs such a callback (it calls threading.enumerate()); a
collection threshold of 1 makes one run at nearly every allocation."""
import gc
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tasks  # noqa: E402
from parallelbar_clone import ProgressPool, progress_map  # noqa: E402


def enumerate_threads(phase, info):
    threading.enumerate()


def main():
    gc.callbacks.append(enumerate_threads)
    gc.set_threshold(1)
    for _ in range(3):
        assert progress_map(tasks.times_ten, range(6), n_cpu=2, disable=True) == \
            [0, 10, 20, 30, 40, 50]
    with ProgressPool(n_cpu=2, maxtasksperchild=1, disable=True) as pool:   # the zygote's
        assert pool.map(tasks.times_ten, range(6)) == [0, 10, 20, 30, 40, 50]   # forks too
    print("ok")


if __name__ == "__main__":
    main()
