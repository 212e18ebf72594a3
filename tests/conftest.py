import multiprocessing
import os
import signal
import sys
import time

import psutil
import pytest

sys.path.insert(0, os.path.dirname(__file__))

# A suite started in the background (`cmd &` in a script, nohup) inherits SIGINT ignored,
# and so would every program it starts: the Ctrl-C tests and the published package's
# SIGINT-driven stopit_after_timeout would then test nothing. The tests play a user at a
# terminal, where Ctrl-C is live.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    """The dask tests go last: distributed leaves process-wide threads running (its IO
    loop, an offload pool), and every later fork in this process then draws Python
    3.12+'s warning about forking a multi-threaded process, rightly (they are not the
    pool's threads): 245 warnings on 3.13 when they ran in file order."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_dask.py"))


START_METHODS = [m for m in ("fork", "spawn", "forkserver")
                 if m in multiprocessing.get_all_start_methods()]


@pytest.fixture(params=START_METHODS)
def start_method(request):
    """Run the test once under each start method."""
    return request.param


def _is_infrastructure(proc):
    """multiprocessing's own helpers: the forkserver and the resource tracker."""
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return True
    return "resource_tracker" in cmd or ("forkserver" in cmd and proc.ppid() == os.getpid())


def live_workers():
    me = psutil.Process()
    out = []
    for child in me.children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if not _is_infrastructure(child):
                out.append(child)
        except psutil.Error:
            pass
    return out


@pytest.fixture(autouse=True)
def no_worker_outlives_the_test():
    yield
    deadline = time.monotonic() + 5
    left = live_workers()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = live_workers()
    for proc in left:  # do not let one failure cascade into the next tests
        try:
            proc.kill()
        except psutil.Error:
            pass
    assert not left, f"worker processes outlived the test: {[p.pid for p in left]}"
