"""Run by test_zygote.py: a new pool's zygote is forked while a thread of ours (another
pool's bar thread) is in the middle of writing to stderr, holding the stream's lock.

Here stderr is a stream whose write holds a lock for 20 ms, so a fork that does not
wait for our threads to be parked hands the zygote (and every worker it forks) a
lock that is never released: the workers, which write to stderr, hang. With
``nogate`` as argument the gate is disabled, to show that this test can fail."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


class SlowStream:
    def __init__(self, inner):
        self.inner = inner
        self.lock = threading.Lock()

    def write(self, text):
        with self.lock:
            time.sleep(0.02)
            return self.inner.write(text)

    def flush(self):
        with self.lock:
            self.inner.flush()

    def __getattr__(self, name):
        return getattr(self.inner, name)


sys.stderr = SlowStream(sys.stderr)

import tasks  # noqa: E402
import parallelbar_clone.zygote as zygote  # noqa: E402
from parallelbar_clone import ProgressPool, RunTimeoutError, progress_map  # noqa: E402

if sys.argv[1:] == ["nogate"]:
    from contextlib import contextmanager

    @contextmanager
    def forking():
        yield 0
    zygote.FORK_GATE.forking = forking


def noisy(x):
    sys.stderr.write(f"task {x}\n")
    return x


def main():
    with ProgressPool(n_cpu=1) as busy:   # its bar thread writes to stderr all the time
        results = busy.imap(tasks.sleep_then, range(100000), chunk_size=1)
        stop = threading.Event()

        def consume():
            for _ in results:
                if stop.is_set():
                    break
        consumer = threading.Thread(target=consume)
        consumer.start()
        hung = 0
        try:
            for _ in range(15):
                try:
                    assert progress_map(noisy, range(4), n_cpu=2, disable=True,
                                        timeout=3) == [0, 1, 2, 3]
                except RunTimeoutError:
                    hung += 1
        finally:
            stop.set()
            consumer.join()
            results.close()
    print(f"hung {hung} of 15", file=sys.__stdout__, flush=True)


if __name__ == "__main__":
    main()
