"""Drop-in: a user's own script, run side by side with the published parallelbar 2.5.

compat_script.py is written the way users write scripts: an initializer that sets
a global, module-level connections and caches, module state changed before the
call, the published README's examples verbatim. It runs once with the published
package and once with ours, concurrently, under each start method, and what
each returns, raises and leaves on its bars must agree, except for the
differences the README lists ("Moving from parallelbar"), which are asserted
here as differences.
"""
import inspect
import json
import multiprocessing
import os
import re
import subprocess
import sys

import pytest

import parallelbar as published  # the oracle (installed by the test extra)
import parallelbar.parallelbar  # noqa: F401
import parallelbar.tools  # noqa: F401
import parallelbar.wrappers  # noqa: F401

import parallelbar_clone as ours

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "compat_script.py")
CONTEXTS = ["default"] + [m for m in ("fork", "spawn", "forkserver")
                          if m in multiprocessing.get_all_start_methods()]

# What the published package gives under fork (checked against it below), so that a
# change on either side cannot pass by agreeing on something else.
ZERO_DIV = ["ZeroDivisionError", "ArithmeticError", "Exception", "BaseException", "object"]
TIMEOUT = ["TimeoutError", "OSError", "Exception", "BaseException", "object"]
FORK_RESULTS = {
    "initializer_global": [0, 3, 6, 9, 12],
    "sqlite_connection": [k * k for k in range(10)],
    "thread_local_cache": list(range(1, 11)),
    "module_state": [0, 7, 14, 21, 28],          # the state at the call
    "starmap_imap_imapu": [[[3, 1], [2, 1]], [0, 1, 2, 3], [0, 1, 2, 3]],
    "add_progress_flag": [300] * 4,
    "add_progress_maxtasksperchild": [300] * 8,
    "readme_cpu_bench": list(range(2000)),
}
IMPORT_TIME_STATE = [0, 1, 2, 3, 4]   # module_state where workers import the script
FORK_BARS = {
    "initializer_global": {"DONE": (5, 5)},
    "module_state": {"DONE": (5, 5)},
    "add_progress_flag": {"DONE": (100, 100)},
    "add_progress_maxtasksperchild": {"DONE": (200, 200)},
    # verbatim README example, no used_add_progress_decorator: 100 inner calls, 10 fail
    "readme_add_progress": {"DONE": (90, 100), "ERROR": (10, 100)},
    "readme_exceptions_coerce": {"DONE": (17, 20), "ERROR": (3, 20)},
}
ROWS = ["initializer_global", "sqlite_connection", "thread_local_cache", "module_state",
        "starmap_imap_imapu", "add_progress_flag", "add_progress_maxtasksperchild",
        "readme_add_progress", "readme_cpu_bench", "readme_exceptions",
        "readme_exceptions_coerce", "readme_stopit", "readme_imap_fibonacci"]


def _fork_semantics(context):
    return context in ("default", "fork")


def launch(lib, context, cases, notebook=False):
    env = dict(os.environ, PB_LIB=lib, PB_REPO=REPO)
    env.pop("PYTHONFAULTHANDLER", None)
    if notebook:  # as a notebook runs code: __main__ has no file
        with open(SCRIPT) as f:
            code = f.read()
        argv = [sys.executable, "-c", f"exec(compile({code!r}, '<cell>', 'exec'))"]
    else:
        argv = [sys.executable, SCRIPT]
    return subprocess.Popen(argv + [context] + cases, env=env, cwd=HERE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def bars(stderr_part):
    """The final n/total drawn on the DONE and ERROR bars."""
    found = {}
    for desc in ("DONE", "ERROR"):
        counts = re.findall(desc + r":\s+\d+%\|[^|]*\|\s*(-?\d+)/(\d+)", stderr_part)
        if counts:
            found[desc] = tuple(map(int, counts[-1]))
    return found


def collect(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    out, err = out.decode(), err.decode().replace("\r", "\n")
    assert proc.returncode == 0, err[-3000:]
    outcomes = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            _, case, data = line.split(" ", 2)
            outcomes[case] = json.loads(data)
    drawn = {}
    for part in err.split("=== ")[1:]:
        case = part.split("\n", 1)[0].strip()
        drawn[case] = bars(part)
    return outcomes, drawn


def same_error(mine, theirs):
    """Ours is the published exception's type, or a subclass of it."""
    return theirs[0] in mine


def assert_same(case, mine, theirs):
    if "raised" in theirs:
        assert "raised" in mine, (case, mine)
        assert same_error(mine["raised"], theirs["raised"]), (case, mine, theirs)
        return
    assert "result" in mine, (case, mine)
    a, b = mine["result"], theirs["result"]
    assert len(a) == len(b), case
    for x, y in zip(a, b):
        if isinstance(y, dict) and "error" in y:
            assert isinstance(x, dict) and same_error(x["error"], y["error"]), (case, x, y)
        else:
            assert x == y, (case, x, y)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("context", CONTEXTS)
def test_users_script_gives_what_published_gives(context):
    # Published parallelbar's default is multiprocessing's (fork on Linux up to Python
    # 3.13); ours is fork semantics on every Python.
    theirs_ctx = "fork" if context == "default" else context
    mine_proc = launch("ours", context, ROWS + ["add_progress_crash"])
    theirs_proc = launch("published", theirs_ctx, ROWS)
    mine, mine_bars = collect(mine_proc)
    theirs, theirs_bars = collect(theirs_proc)
    assert all(o["library"] == "parallelbar_clone" for o in mine.values())
    assert all(o["library"] == "parallelbar" for o in theirs.values())

    # the one deliberate difference among these rows: retired 1.x options are accepted
    assert "raised" in theirs["readme_imap_fibonacci"]
    assert theirs["readme_imap_fibonacci"]["raised"][0] == "TypeError"
    assert mine["readme_imap_fibonacci"]["result"] == [
        ours.tools.fibonacci(20 + i) for i in range(15)]
    for case in ROWS:
        if case != "readme_imap_fibonacci":
            assert_same(case, mine[case], theirs[case])

    # ... and what both give is what the published package gives under fork, or, where
    # workers import the script (spawn, forkserver), its import-time state
    for outcome in (mine, theirs):
        for case, expected in FORK_RESULTS.items():
            if case == "module_state" and not _fork_semantics(context):
                expected = IMPORT_TIME_STATE
            assert outcome[case]["result"] == expected, case
        assert outcome["readme_exceptions"]["raised"][0] == "ZeroDivisionError"
        assert outcome["readme_stopit"]["result"][0] == 3
        assert "TimeoutError" in outcome["readme_stopit"]["result"][1]["error"]

    # the bars end where the published bars end, counting add_progress calls
    for case, expected in FORK_BARS.items():
        assert mine_bars[case] == expected, (case, mine_bars[case])
        assert theirs_bars[case] == expected, (case, theirs_bars[case])

    # beyond the published package, which hangs when a worker dies: a crash fails its
    # own task, and the bar counts each completed task's 25 calls exactly once
    crash = mine["add_progress_crash"]["result"]
    assert crash[3]["error"][0] == "WorkerDiedError"
    assert [c for i, c in enumerate(crash) if i != 3] == [300] * 7
    assert mine_bars["add_progress_crash"] == {"DONE": (175, 200), "ERROR": (1, 200)}


NOTEBOOK_ROWS = ["initializer_global", "module_state", "thread_local_cache",
                 "add_progress_flag", "add_progress_maxtasksperchild", "readme_add_progress",
                 "sqlite_connection"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("context", CONTEXTS)
def test_notebook_code_works_on_every_start_method(context):
    """Code with no file behind it (a notebook cell): the published package fails
    under spawn and forkserver; ours sends it by value, with the program's state
    as it was at the call."""
    mine, drawn = collect(launch("ours", context, NOTEBOOK_ROWS, notebook=True))
    for case in NOTEBOOK_ROWS:
        if case == "sqlite_connection" and not _fork_semantics(context):
            # a connection cannot travel to a fresh interpreter: say so, and what works
            message = mine[case]["message"]
            assert mine[case]["raised"][0] == "SerializationError"
            assert "sqlite3.Connection" in message and "context='fork'" in message
            continue
        if case in FORK_RESULTS:
            assert mine[case]["result"] == FORK_RESULTS[case], case
        if case in FORK_BARS:
            assert drawn[case] == FORK_BARS[case], case
    assert len(mine["readme_add_progress"]["result"]) == 4


def _public(module):
    return {name for name in vars(module) if not name.startswith("_")
            and (getattr(getattr(module, name), "__module__", "") or "").startswith("parallelbar")}


@pytest.mark.parametrize("module", ["parallelbar", "tools", "wrappers"])
def test_every_published_name_exists_with_its_signature(module):
    theirs, mine = getattr(published, module), getattr(ours, module)
    names = _public(theirs) | ({"tqdm"} if module == "parallelbar" else set())
    assert names, module
    for name in sorted(names):
        assert hasattr(mine, name), f"{module}.{name} is missing"
        obj = getattr(theirs, name)
        if not callable(obj) or name == "tqdm":
            continue
        want = [(p.name, p.default) for p in inspect.signature(obj).parameters.values()]
        have = [(p.name, p.default) for p in inspect.signature(getattr(mine, name)).parameters.values()
                if p.kind is not p.VAR_KEYWORD or p.name != "options"]
        if name in ("progress_imap", "progress_imapu"):
            # deliberate: adaptive chunks by default, and the whole-call timeout
            want = [(n, None if n == "chunk_size" else d) for n, d in want] + [("timeout", None)]
        assert have == want, f"{module}.{name}"


def test_import_as_parallelbar_in_a_fresh_interpreter():
    code = ("import parallelbar_clone as parallelbar\n"
            "assert parallelbar.tools.cpu_bench(10) == 10\n"
            "assert parallelbar.tools.fibonacci(10) == 55\n"
            "assert callable(parallelbar.wrappers.add_progress)\n"
            "assert issubclass(parallelbar.parallelbar.ProgressBar, parallelbar.parallelbar.tqdm)\n"
            "print(parallelbar.progress_map(abs, [-1, 2], disable=True))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "[1, 2]"


def test_published_helpers_behave_the_same():
    pt, mt = published.tools, ours.tools
    for args in [([1, 2, 3], None), ([1, 2, 3], 7), (iter([1]), None), (iter([1]), 0)]:
        assert mt.get_len(*args) == pt.get_len(*args)
    for size in (1, 2, 3, 10):
        assert list(mt.iterate_by_pack(range(7), size)) == list(pt.iterate_by_pack(range(7), size))
        assert mt.get_packs_count(list(range(7)), size) == pt.get_packs_count(list(range(7)), size)
    with pytest.raises(ValueError, match="pack_size must be greater than 0"):
        list(mt.iterate_by_pack(range(3), 0))
    assert mt.func_args_unpack(divmod, (7, 2)) == pt.func_args_unpack(divmod, (7, 2))
    assert mt.func_args_unpack(dict, (), worker_queue="q") == {"worker_queue": "q"}
    pw, mw = published.wrappers, ours.wrappers
    for args, kwargs in [((1,), {}), ((1, 2), {}), ((1,), {"k": 2})]:
        assert mw._make_args(*args, **kwargs) == pw._make_args(*args, **kwargs)
    status = mw.ProgressStatus()
    assert (status.next_update, status.last_update_val) == (1, 0)
    seen = []
    mw.init_worker("queue", seen.append, ("initialized",))
    assert seen == ["initialized"] and mw._WORKER_QUEUE == "queue"
    with pytest.raises(KeyboardInterrupt):
        mw.stop_function()
        import time
        time.sleep(5)  # the signal lands here at the latest


def test_add_progress_accepts_the_windows_recipe():
    """The published README's Windows recipe passes worker_queue= to the decorated
    function; there it made every call fail. Here it is dropped unless taken."""
    calls = []

    @ours.wrappers.add_progress(error_handling="coerce")
    def foo(n):
        calls.append(n)
        return n

    @ours.wrappers.add_progress()
    def takes_it(n, worker_queue=None):
        return worker_queue

    assert foo(3, worker_queue=None) == 3 and calls == [3]
    assert takes_it(1, worker_queue="q") == "q"
