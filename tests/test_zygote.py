"""Fork semantics without fork's danger: the zygote, process groups, and how a
worker finds the caller's code."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import tasks
from parallelbar_clone import (ParallelBarError, ProgressPool, SerializationError,
                               TaskTimeoutError, WorkerDiedError, progress_map)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
METHODS = [m for m in ("fork", "spawn", "forkserver")
           if m in multiprocessing.get_all_start_methods()]


def run_script(name, *args, notebook=False, timeout=120, python=sys.executable, flags=()):
    path = os.path.join(HERE, name)
    env = dict(os.environ, PB_REPO=REPO)
    if notebook:
        with open(path) as f:
            argv = [python, *flags, "-c", f"exec(compile({f.read()!r}, '<cell>', 'exec'))"]
    else:
        argv = [python, *flags, path]
    done = subprocess.run(argv + list(args), env=env, cwd=HERE, capture_output=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done.stdout.decode()


def test_fork_warning_comes_only_from_the_callers_own_threads():
    """Python 3.12+ warns when a multi-threaded process forks. Sequential calls, a pool
    started while another pool's threads run, and respawns must not trip it; with a
    thread of the caller's own alive it is the caller's warning and does show, once per
    fork made then (the two first workers: a one-call pool that replaces none forks no
    zygote), as ``Pool`` with fork shows it once per worker (on Python < 3.12 there is no
    such warning at all)."""
    out = run_script("fork_warning_script.py", flags=("-W", "error::DeprecationWarning"))
    assert "ours: 0 []" in out
    assert f"theirs: {2 if sys.version_info >= (3, 12) else 0}" in out


def test_a_collection_in_a_fresh_child_cannot_deadlock_it():
    """A garbage collection in a freshly forked child, while Python sets up its
    threading module again, may run a gc callback that waits for a lock that set-up holds
    (ipykernel's calls threading.enumerate(): a first worker hung so on Python 3.8 in a
    Jupyter kernel). Forks pause the collector, as subprocess does."""
    assert run_script("gc_fork_script.py", timeout=60).strip() == "ok"


@pytest.mark.timeout(200)
def test_zygote_is_forked_while_our_threads_hold_no_lock():
    """Another pool's bar thread writes to a stderr whose lock it holds 20 ms at a
    time; 15 pools started meanwhile must all finish (without the fork gate, a few of
    them inherit the held lock and their workers hang: run the script with
    ``nogate`` to see it)."""
    assert "hung 0 of 15" in run_script("fork_gate_script.py", timeout=180)


def test_the_fork_gate_waits_for_our_threads_and_holds_them_while_it_forks():
    """forking() waits until every thread of ours is out of working(), and keeps them
    out of it until the fork is done."""
    import threading
    from parallelbar_clone.zygote import ForkGate
    gate = ForkGate()
    inside, release, go_on, again = (threading.Event() for _ in range(4))
    log = []

    def ours():
        gate.register()
        with gate.working():
            inside.set()
            release.wait(5)
            log.append("work done")
        go_on.wait(5)                        # now the fork is on: working() must wait
        again.set()
        with gate.working():
            log.append("worked again")
        gate.unregister()

    thread = threading.Thread(target=ours)
    thread.start()
    assert inside.wait(5)
    forked = threading.Event()

    def fork():
        with gate.forking() as count:
            log.append(f"forking, {count} of ours")
            forked.wait(5)
        log.append("forked")

    forker = threading.Thread(target=fork)
    forker.start()
    time.sleep(0.1)
    assert log == []                         # our thread is at work: no fork yet
    release.set()
    deadline = time.monotonic() + 5
    while len(log) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log == ["work done", "forking, 1 of ours"]
    go_on.set()
    assert again.wait(5)
    time.sleep(0.1)
    assert log == ["work done", "forking, 1 of ours"]   # held out while forking
    forked.set()
    forker.join(5)
    thread.join(5)
    assert log[:2] == ["work done", "forking, 1 of ours"]
    assert sorted(log[2:]) == ["forked", "worked again"]


@pytest.mark.parametrize("notebook", [False, True], ids=["script", "notebook"])
@pytest.mark.parametrize("context", METHODS)
def test_functions_defined_or_redefined_while_a_pool_lives(context, notebook):
    out = run_script("main_state_script.py", context, notebook=notebook)
    first, redefined, late, under_guard = json.loads(out.split("RESULT ", 1)[1])
    assert first == [1, 2, 3]
    # a forked worker knows the first definition by name; the new one goes by value.
    # A spawned worker that imports the script finds the name there, as with Pool;
    # without a file, everything goes by value.
    stale = context != "fork" and not notebook
    assert redefined == ([1, 2, 3] if stale else [100, 101, 102])
    assert late == [200, 202, 204]         # sees the caller's f as it is now
    assert under_guard == [0, 3, 6]         # not in the imported script: sent by value


def _remember(source):
    global _inherited
    _inherited = source


def _use_inherited(x):
    return x * next(_inherited)


def test_unpicklable_initargs_are_inherited_under_fork():
    source = (2 for _ in iter(int, 1))   # a generator: neither pickle nor dill sends it
    assert progress_map(_use_inherited, range(4), n_cpu=2, initializer=_remember,
                        initargs=(source,), disable=True) == [0, 2, 4, 6]
    with pytest.raises(SerializationError, match="initializer _remember or its initargs"):
        progress_map(_use_inherited, range(4), n_cpu=2, initializer=_remember,
                     initargs=(source,), disable=True, context="spawn")


def test_unpicklable_function_is_inherited_by_a_one_call_pool():
    source = (1 for _ in iter(int, 1))

    def closure_over_a_generator(x):
        return x + next(source)
    assert progress_map(closure_over_a_generator, range(3), n_cpu=2,
                        disable=True) == [1, 2, 3]
    with pytest.raises(SerializationError, match="cannot be sent"):
        progress_map(closure_over_a_generator, range(3), n_cpu=2, disable=True,
                     context="spawn")


def _start_sleep_then(x, fault, folder):
    child = subprocess.Popen(["sleep", "100"])
    open(os.path.join(folder, str(child.pid)), "w").close()
    if x == 1:
        if fault == "timeout":
            time.sleep(60)
        elif fault == "exit":
            os._exit(3)
        elif fault == "segfault":
            import ctypes
            import faulthandler
            faulthandler.disable()
            ctypes.string_at(0)
    return child.pid


def _alive(folder):
    """The processes the tasks started (each wrote its pid there) that still run: by
    pid, since one whose worker died without taking it along is no child of ours."""
    alive = []
    for name in os.listdir(folder):
        try:
            if psutil.Process(int(name)).status() != psutil.STATUS_ZOMBIE:
                alive.append(int(name))
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.parametrize("fault", ["timeout", "exit", "segfault", "none"])
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_processes_a_task_started_end_with_its_worker(context, fault, tmp_path):
    import functools
    func = functools.partial(_start_sleep_then, fault=fault, folder=str(tmp_path))
    try:
        result = progress_map(func, range(3), n_cpu=2, chunk_size=1, process_timeout=2,
                              error_behavior="coerce", disable=True, context=context)
        if fault != "none":
            assert isinstance(result[1], (TaskTimeoutError, WorkerDiedError))
        assert len(os.listdir(tmp_path)) >= 3      # (each task that ran wrote its pid)
        deadline = time.monotonic() + 3
        while _alive(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _alive(tmp_path) == []
    finally:
        for pid in _alive(tmp_path):
            os.kill(pid, signal.SIGKILL)


PARENT_SCRIPT = """
import os, sys, time
sys.path.insert(0, {tests!r})
import tasks
from parallelbar_clone import ProgressPool
with ProgressPool(n_cpu=2, context={context!r}, disable=True) as pool:
    results = pool.imap(tasks.always_c_hangs, range(4), chunk_size=1)
    print("started", flush=True)
    next(results)
"""


@pytest.mark.parametrize("context", METHODS)
def test_nothing_outlives_a_killed_caller(context):
    """SIGKILL the caller (as an OOM kill or a closed terminal would): its zygote and
    workers go too, within seconds."""
    proc = subprocess.Popen([sys.executable, "-c",
                             PARENT_SCRIPT.format(tests=HERE, context=context)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout.readline().strip() == b"started"
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 20
    family = []
    while time.monotonic() < deadline:
        family = [p for p in parent.children(recursive=True)
                  if "resource_tracker" not in " ".join(p.cmdline())]
        if len(family) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    family = parent.children(recursive=True)
    assert len(family) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(family, timeout=5)
    for p in alive:
        p.kill()
    assert not alive, [p.cmdline() for p in alive]


def test_a_dead_zygote_is_a_clear_error_not_a_hang():
    with ProgressPool(n_cpu=2, maxtasksperchild=1, disable=True) as pool:
        assert pool.map(tasks.times_ten, range(4)) == [0, 10, 20, 30]
        os.kill(pool._backend.zygote.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(ParallelBarError, match="starts this pool's workers"):
            pool.map(tasks.times_ten, range(20))
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("when", ["first workers", "replacement"])
def test_a_fork_that_fails_is_a_clear_error(monkeypatch, when):
    """A fork that cannot be made (EAGAIN: a process limit), of a first worker (by the
    caller) or of a replacement (by the zygote), is the pool's error, naming the cause."""
    import errno
    from parallelbar_clone import zygote
    real_fork = zygote._Server._fork

    def refused(*args, **kwargs):
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    def fork(self, index, *args, **kwargs):
        if index >= 2:   # (the zygote inherits this patch)
            for fd in args[:3]:
                os.close(fd)
            refused()
        return real_fork(self, index, *args, **kwargs)

    if when == "first workers":
        monkeypatch.setattr(zygote, "_fork", refused)
    else:
        monkeypatch.setattr(zygote._Server, "_fork", fork)
    with pytest.raises(ParallelBarError, match="could not fork a worker: "
                                               + os.strerror(errno.EAGAIN)):
        with ProgressPool(n_cpu=2, maxtasksperchild=1, disable=True) as pool:
            pool.map(tasks.times_ten, range(20))


def _links(pid="self"):
    links = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.add(_link(fd, pid))
        except OSError:
            pass
    return links


def _family(x):
    return os.getpid(), os.getppid(), sorted(_links())


def _link(fd, pid="self"):
    """What fd is: a pipe's or socket's inode, a file's path, or the process a pidfd
    watches (all pidfds have the same link)."""
    link = os.readlink(f"/proc/{pid}/fd/{fd}")
    if link == "anon_inode:[pidfd]":
        with open(f"/proc/{pid}/fdinfo/{fd}") as info:
            link += " " + [line for line in info if line.startswith("Pid:")][0].split()[1]
    return link


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.filterwarnings("ignore:.*use of fork:DeprecationWarning")  # (the main thread
@pytest.mark.parametrize("thread", ["main", "other"])                   # is the caller's)
def test_first_workers_are_forked_by_the_caller_and_replacements_by_the_zygote(thread):
    """The first workers are forked from the caller's main thread when the pool starts,
    at the same moment as the zygote and before any thread of the pool runs (a copy
    of the same program state, without a request to the zygote and its round trips):
    their parent is the caller. Every later one is the zygote's. A pool started from
    another thread has the zygote fork all (a worker dies with the thread that forked
    it). A worker holds none of the pool's own fds (the zygote's socket, the wake-up
    pipe)."""
    import threading
    out = {}

    def run():
        with ProgressPool(n_cpu=2, maxtasksperchild=3, disable=True) as pool:
            own = {_link(pool._backend.zygote.fileno()), _link(pool._backend._wake_r.fileno()),
                   _link(pool._backend._wake_w.fileno())}
            out["zygote"] = pool._backend.zygote.pid
            out["seen"] = pool.map(_family, range(12), chunk_size=1)
            out["own"] = own
    if thread == "main":
        run()
    else:
        t = threading.Thread(target=run)
        t.start()
        t.join()
    parents = {}
    for pid, ppid, links in out["seen"]:
        parents[pid] = ppid
        assert not out["own"] & set(links), (pid, out["own"] & set(links))
    first = {out["seen"][0][0], out["seen"][1][0]}        # (tasks 0 and 1: one each)
    later = set(parents) - first
    assert len(first) == 2 and len(later) >= 2               # (replacements came)
    expected_first = os.getpid() if thread == "main" else out["zygote"]
    assert [parents[p] for p in first] == [expected_first] * 2
    assert all(parents[p] == out["zygote"] for p in later)


def test_workers_are_led_by_their_own_process_group():
    pids = set(progress_map(tasks.pid_of, range(40), n_cpu=2, chunk_size=1, disable=True))
    assert os.getpid() not in pids
    with ProgressPool(n_cpu=2, disable=True) as pool:
        groups = pool.map(_group_and_name, range(4), chunk_size=1)
    assert all(pgid == pid for pid, pgid, _ in groups)
    assert all(name.startswith("ParallelBarWorker-") for _, _, name in groups)


def _group_and_name(x):
    return os.getpid(), os.getpgid(0), multiprocessing.current_process().name


@pytest.mark.parametrize("maxtasksperchild", [None, 2])
def test_what_tasks_printed_is_printed_when_the_pool_closes(maxtasksperchild):
    """A worker's output not yet flushed is flushed when the pool closes: the first
    workers (the caller's children) and replacements (the zygote's, which it would kill
    if it went first) alike."""
    code = ("import sys\nsys.path.insert(0, %r)\nsys.path.insert(0, %r)\nimport tasks\n"
            "from parallelbar_clone import progress_map\n"
            "progress_map(tasks.prints_unflushed, range(9), n_cpu=2, chunk_size=1, "
            "maxtasksperchild=%r, disable=True)\n") % (REPO, HERE, maxtasksperchild)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}   # buffered
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                          env=env)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    lines = sorted(done.stdout.decode().split("\n")[:-1])
    assert lines == sorted(f"task {x} was here" for x in range(9)), done.stdout


def test_what_the_caller_printed_before_the_pool_prints_once():
    """The zygote forks with the caller's output buffers: flushed first, else every
    worker would print them once more when it exits."""
    code = ("import sys\nsys.path.insert(0, %r)\n"
            "from parallelbar_clone import progress_map\n"
            "print('printed once', end='')\n"
            "progress_map(abs, [-1, 2, -3, 4], n_cpu=2, disable=True)\n"
            "print()\n") % REPO
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.stdout.decode().count("printed once") == 1, done.stdout


def _counting_zygotes(monkeypatch):
    from parallelbar_clone import backends
    made = []

    class Counted(backends.Zygote):
        def __init__(self, *args, **kwargs):
            made.append(threading_ident())
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(backends, "Zygote", Counted)
    return made


def threading_ident():
    import threading
    return threading.get_ident()


@pytest.mark.parametrize("case", ["none-replaced", "maxtasksperchild", "crash", "timeout"])
def test_a_one_call_map_forks_its_zygote_only_when_a_worker_is_replaced(monkeypatch, case):
    """progress_map's pool lives for one call, whose caller's thread stays in the
    library: its zygote is forked by that thread when the first replacement is wanted
    (most calls want none: a fork and an exit saved). A pool made with ProgressPool
    forks it at once (test above)."""
    made = _counting_zygotes(monkeypatch)
    kwargs = dict(n_cpu=2, chunk_size=1, disable=True, error_behavior="coerce")
    if case == "maxtasksperchild":
        got = progress_map(tasks.times_ten, range(30), maxtasksperchild=2, **kwargs)
    elif case == "crash":
        got = progress_map(tasks.exits, range(30), **kwargs)
    elif case == "timeout":
        got = progress_map(tasks.c_hang, range(30), process_timeout=0.3, **kwargs)
    else:
        got = progress_map(tasks.times_ten, range(30), **kwargs)
    expected = [x * 10 for x in range(30)]
    fault = {"crash": WorkerDiedError, "timeout": TaskTimeoutError}.get(case)
    if fault is not None:
        assert isinstance(got[tasks.FAULT_AT], fault)
        got[tasks.FAULT_AT] = expected[tasks.FAULT_AT]
    assert got == expected
    assert made == ([] if case == "none-replaced" else [threading_ident()])


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_zygote_forked_after_the_first_workers_leaves_their_pipes_behind():
    """The zygote a one-call pool forks late holds none of the caller's ends of the
    first workers' pipes, nor the pool's own fds, and neither do the workers it forks:
    their parent is the zygote, whose parent is the caller."""
    with ProgressPool(n_cpu=2, maxtasksperchild=3, disable=True, _one_call=True) as pool:
        backend = pool._backend
        assert backend.zygote is None
        callers = {_link(fd) for fd in backend._pool_fds()}   # (the wake-up pipe too)
        seen = pool.map(_family, range(12), chunk_size=1)
        zygote = backend.zygote.pid
        zygote_links = _links(zygote)
    assert len(callers) >= 6   # (two task pipes, two result pipes, two pidfds or pipes...)
    assert not callers & zygote_links, callers & zygote_links
    first = {seen[0][0], seen[1][0]}
    later = {pid for pid, _, _ in seen} - first
    assert len(later) >= 2
    for pid, ppid, links in seen:
        assert ppid == (os.getpid() if pid in first else zygote)
        if pid in later:
            assert not callers & set(links), (pid, callers & set(links))
