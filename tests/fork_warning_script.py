"""Run by test_zygote.py: forks of ours must not trip Python 3.12+'s warning about
forking a multi-threaded process while only our threads run; with a thread of the
caller's own alive, the warning is the caller's and does appear."""
import os
import sys
import threading
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tasks  # noqa: E402
from parallelbar_clone import ProgressPool, progress_map  # noqa: E402


def fork_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)
            and "fork" in str(w.message)]


def main():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        progress_map(tasks.times_ten, range(5), n_cpu=2)
        progress_map(tasks.times_ten, range(5), n_cpu=2)       # our threads of the first are gone
        with ProgressPool(n_cpu=2) as pool:
            results = pool.imap(tasks.sleep_then, range(40))
            next(results)
            # a second pool while the first one's manager and bar threads run
            assert progress_map(tasks.times_ten, range(5), n_cpu=2) == [0, 10, 20, 30, 40]
            # respawns: workers forked by a zygote, which has one thread
            timed = progress_map(tasks.c_hang, range(12), n_cpu=2, process_timeout=0.2,
                                 error_behavior="coerce")
            assert type(timed[5]).__name__ == "TaskTimeoutError"
            assert len(list(results)) == 39
        ours = fork_warnings(caught)
    print("ours:", len(ours), ours[:1])

    stop = threading.Event()
    theirs_thread = threading.Thread(target=stop.wait)
    theirs_thread.start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            progress_map(tasks.times_ten, range(5), n_cpu=2, disable=True)
        theirs = fork_warnings(caught)
    finally:
        stop.set()
        theirs_thread.join()
    print("theirs:", len(theirs))


if __name__ == "__main__":
    main()
