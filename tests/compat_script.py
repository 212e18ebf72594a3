"""A user's script, run by test_compat.py with the published parallelbar or with ours.

    PB_LIB=published|ours python compat_script.py CONTEXT CASE [CASE ...]

Everything the tasks use is defined here, in the script (``__main__``), the way
users write it: a global set by the initializer, a module-level sqlite3
connection and thread-local cache, module state changed before the call, the
published README's add_progress example. For each case it prints one line
``RESULT <case> <json>`` to stdout and a line ``=== <case>`` to stderr before the
case's bars, so the test can compare results and the bars' final counts.
"""
import json
import os
import sqlite3
import sys
import threading
import time

if os.environ.get("PB_LIB") == "published":
    import parallelbar
    from parallelbar.wrappers import add_progress
else:
    sys.path.insert(0, os.environ["PB_REPO"])   # (a notebook has no __file__)
    import parallelbar_clone as parallelbar
    from parallelbar_clone.wrappers import add_progress

progress_map, progress_starmap = parallelbar.progress_map, parallelbar.progress_starmap
progress_imap, progress_imapu = parallelbar.progress_imap, parallelbar.progress_imapu

# -- an initializer that sets a global: the most common data-science pattern
model = None


def load_model():
    global model
    model = {"weight": 3}


def predict(x):
    return model["weight"] * x


# -- module-level resources that cannot be pickled
conn = sqlite3.connect(":memory:", check_same_thread=False)
conn.execute("CREATE TABLE squares (k INTEGER, v INTEGER)")
conn.executemany("INSERT INTO squares VALUES (?, ?)", [(k, k * k) for k in range(10)])
cache = threading.local()


def lookup(k):
    return conn.execute("SELECT v FROM squares WHERE k = ?", (k,)).fetchone()[0]


def cached(x):
    if not hasattr(cache, "seen"):
        cache.seen = 0
    cache.seen += 1
    return x + 1


# -- module state changed in the parent before the call
CONFIG = {"scale": 1}


def scaled(x):
    return x * CONFIG["scale"]


# -- the published README's add_progress example, as written there
@add_progress(error_handling='coerce', timeout=.5)
def foo(n):
    if n == 5 or n == 17:
        1 / 0
    elif n == 10:
        time.sleep(1)
    else:
        time.sleep(.1)
    return n


def bar(x):
    return [foo(i) for i in range(x)]


# -- quick add_progress calls, for worker replacement
@add_progress()
def step(i):
    return i


def twenty_five_steps(x):
    return sum(step(i) for i in range(25))


def steps_or_crash(x):
    if x == 3:
        import ctypes
        import faulthandler
        faulthandler.disable()
        ctypes.string_at(0)   # a segfault, before this task's calls
    return twenty_five_steps(x)


# -- the published README's exception-handling example, as written there
def readme_foo(n):
    if n == 5 or n == 17:
        1 / 0
    elif n == 10:
        time.sleep(2)
    else:
        time.sleep(1)
    return n


@parallelbar.wrappers.stopit_after_timeout(.5, raise_exception=True)
def stopit_foo(n):
    if n == 5:
        time.sleep(1)
    else:
        time.sleep(.1)
    return n


def describe(value):
    """JSON-able: exceptions by the names of their classes, the rest as is."""
    if isinstance(value, BaseException):
        return {"error": [k.__name__ for k in type(value).__mro__]}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    return value


def run(case, context):
    kw = dict(n_cpu=2, context=context)
    if case == "initializer_global":
        return progress_map(predict, range(5), initializer=load_model, **kw)
    if case == "sqlite_connection":
        return progress_map(lookup, range(10), **kw)
    if case == "thread_local_cache":
        return progress_map(cached, range(10), **kw)
    if case == "module_state":
        CONFIG["scale"] = 7
        try:
            return progress_map(scaled, range(5), **kw)
        finally:
            CONFIG["scale"] = 1
    if case == "readme_add_progress":   # verbatim: no used_add_progress_decorator
        return progress_map(bar, [10, 20, 30, 40], n_cpu=4, total=100, context=context)
    if case == "add_progress_flag":
        return progress_map(twenty_five_steps, range(4), total=100,
                            used_add_progress_decorator=True, **kw)
    if case == "add_progress_maxtasksperchild":
        return progress_map(twenty_five_steps, range(8), total=200, maxtasksperchild=1, **kw)
    if case == "add_progress_crash":   # (the published package hangs on a dead worker)
        return progress_map(steps_or_crash, range(8), total=200, error_behavior="coerce", **kw)
    if case == "readme_cpu_bench":   # the README's first example (on fewer tasks)
        return progress_map(parallelbar.tools.cpu_bench, range(2000), context=context)
    if case == "readme_imap_fibonacci":   # as written there, with an option 2.x removed
        tasks = [20 + i for i in range(15)]
        return progress_imap(parallelbar.tools.fibonacci, tasks, chunk_size=1,
                             core_progress=False, context=context)
    if case == "readme_exceptions":
        return progress_map(readme_foo, range(20), process_timeout=5, n_cpu=8, context=context)
    if case == "readme_exceptions_coerce":
        return progress_map(readme_foo, range(20), process_timeout=1.5, n_cpu=8,
                            error_behavior="coerce", context=context)
    if case == "readme_stopit":
        first = stopit_foo(3)
        try:
            stopit_foo(5)
        except TimeoutError as exc:
            return [first, describe(exc)]
        return [first, "no timeout"]
    if case == "starmap_imap_imapu":
        return [progress_starmap(divmod, [(7, 2), (9, 4)], **kw),
                progress_imap(scaled, range(4), **kw),
                sorted(progress_imapu(scaled, range(4), **kw))]
    raise SystemExit(f"unknown case {case}")


def main():
    context = None if sys.argv[1] == "default" else sys.argv[1]
    for case in sys.argv[2:]:
        print(f"=== {case}", file=sys.stderr, flush=True)
        try:
            outcome = {"result": describe(run(case, context))}
        except Exception as exc:
            outcome = {"raised": [k.__name__ for k in type(exc).__mro__],
                       "message": str(exc)[:300]}
        sys.stderr.flush()
        outcome["library"] = parallelbar.__name__
        print(f"RESULT {case} {json.dumps(outcome)}", flush=True)


if __name__ == "__main__":
    main()
