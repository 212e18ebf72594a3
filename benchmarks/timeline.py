"""Timeline of one-call maps of trivial tasks: where the time of a ``progress_map``
goes, beside ``Pool.map``'s phases. A diagnostic, not a benchmark: it wraps the
engine's internals (worker starts, chunk sends, messages, encoding and decoding in
the caller) to stamp each with ``time.monotonic()``.

    python benchmarks/timeline.py [--workers 16] [--tasks 200000] [--calls 5] [--events FILE]

Prints one line a call (ms from the call: workers started, first chunk sent, every
worker served, first and last result, total; the first chunk sizes) and Pool.map's
phases; ``--events`` writes every stamped event.
"""
import argparse
import multiprocessing as mp
import os
import sys
from operator import invert
from time import monotonic

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import parallelbar_clone.api as api  # noqa: E402
import parallelbar_clone.backends as backends  # noqa: E402
import parallelbar_clone.feed as feed  # noqa: E402
import parallelbar_clone.manager as manager  # noqa: E402
import parallelbar_clone.pool as pool  # noqa: E402
import parallelbar_clone.results as results  # noqa: E402

EVENTS = []


def mark(label):
    EVENTS.append((monotonic(), label))


def around(owner, name, label):
    inner = getattr(owner, name)

    def wrapped(*args, **kwargs):
        mark(label + ">")
        try:
            return inner(*args, **kwargs)
        finally:
            mark("<" + label)
    setattr(owner, name, wrapped)


def instrument():
    around(backends.ProcessBackend, "start", "start")
    around(pool.ProgressPool, "close", "close")
    around(manager.Manager, "_stop_workers", "stop_workers")
    dispatch_one, on_message = manager.Manager._dispatch_one, manager.Manager._on_message
    encode, decode = feed.Feeder._encode, results.decode

    def dispatch(self, w):
        sent = dispatch_one(self, w)
        if sent:
            chunk = w.inflight[-1]
            mark("send w%d %d" % (w.index, chunk.end - chunk.start))
        return sent

    def message(self, w, msg):
        mark("msg w%d %s" % (w.index, msg[0]))
        return on_message(self, w, msg)

    def encoded(self, start, items, front=False, size=None):
        made = encode(self, start, items, front, size)
        mark("enc %d" % len(items))
        return made

    def decoded(piece):
        out = decode(piece)
        mark("dec %d" % piece.n)
        return out

    manager.Manager._dispatch_one = dispatch
    manager.Manager._on_message = message
    feed.Feeder._encode = encoded
    results.decode = decoded


def summary(label, t0, t1):
    ms = lambda t: (t - t0) * 1e3  # noqa: E731
    sends = [(t, s) for t, s in EVENTS if s.startswith("send")]
    first_by_worker = {}
    for t, s in sends:
        first_by_worker.setdefault(s.split()[1], t)
    answers = [t for t, s in EVENTS if s.startswith("msg") and s.endswith(" r")]
    starts = [t for t, s in EVENTS if s == "<start"]
    parts = ["%s: total %.1f" % (label, ms(t1))]
    if starts:
        parts.append("%d workers started by %.1f" % (len(starts), ms(starts[-1])))
    if sends:
        parts.append("first send %.1f, all %d served by %.1f" % (
            ms(sends[0][0]), len(first_by_worker), ms(max(first_by_worker.values()))))
    if answers:
        parts.append("results %.1f to %.1f" % (ms(answers[0]), ms(answers[-1])))
    parts.append("first sizes %s" % [int(s.split()[2]) for _, s in sends][:40])
    print("; ".join(parts))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--events", help="write every event to this file")
    args = parser.parse_args()
    instrument()
    tasks = list(range(args.tasks))
    log = open(args.events, "w") if args.events else None
    print(f"ms from the call; {args.tasks} x invert, {args.workers} workers "
          "(the first call of each kind warms up)")
    for i in range(args.calls):
        EVENTS.clear()
        t0 = monotonic()
        api.progress_map(invert, tasks, n_cpu=args.workers)
        t1 = monotonic()
        summary("ours progress_map %d" % i, t0, t1)
        if log:
            log.write("== call %d\n" % i)
            log.writelines("%8.2f %s\n" % ((t - t0) * 1e3, s) for t, s in EVENTS)
    for i in range(args.calls):
        t0 = monotonic()
        p = mp.get_context("fork").Pool(args.workers)
        t1 = monotonic()
        p.map(invert, tasks)
        t2 = monotonic()
        p.close()
        p.join()
        t3 = monotonic()
        print("Pool.map %d: total %.1f; Pool() %.1f, map %.1f, close and join %.1f" % (
            i, (t3 - t0) * 1e3, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3))
    if log:
        log.close()


if __name__ == "__main__":
    main()
