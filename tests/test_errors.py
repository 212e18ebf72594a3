"""The library's errors: the standard types they also are, what they carry, and how a
lost worker is described. No pool here: part of ``make mutate``'s fast set."""
import multiprocessing
import pickle
import signal

import pytest

from parallelbar_clone.errors import (InitializerError, MemoryLimitError, ParallelBarError,
                                      RemoteTraceback, RunTimeoutError, SerializationError,
                                      TaskExitError, TaskTimeoutError, WorkerDiedError,
                                      describe_death, signal_name)


def test_each_error_is_also_the_standard_type_users_catch():
    assert issubclass(TaskTimeoutError, TimeoutError)
    assert issubclass(MemoryLimitError, MemoryError)
    assert issubclass(SerializationError, pickle.PicklingError)
    assert issubclass(RunTimeoutError, multiprocessing.TimeoutError)
    assert issubclass(RunTimeoutError, TimeoutError)
    for cls in (TaskTimeoutError, MemoryLimitError, WorkerDiedError, InitializerError,
                SerializationError, RunTimeoutError, TaskExitError):
        assert issubclass(cls, ParallelBarError) and issubclass(cls, Exception)


def test_a_remote_traceback_prints_below_its_exception():
    tb = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: no\n\n"
    remote = RemoteTraceback(tb)
    assert remote.tb == tb and remote.args == (tb,)
    assert str(remote) == "\nTraceback (most recent call last):\n  File \"x.py\", line 1\n" \
                          "ValueError: no"
    assert str(RemoteTraceback("\n\nkept above\n")) == "\n\n\nkept above"
    assert str(RemoteTraceback("ends in spaces  \n")) == "\nends in spaces  "
    assert str(RemoteTraceback("ends in X\n")) == "\nends in X"


def test_what_each_error_carries():
    timeout = TaskTimeoutError("late", task_position=3, timeout=1.5)
    assert (str(timeout), timeout.args, timeout.task_position, timeout.timeout) == \
        ("late", ("late",), 3, 1.5)
    bare = TaskTimeoutError("late")
    assert bare.task_position is None and bare.timeout is None

    memory = MemoryLimitError("big", task_position=4, limit=100, used=150)
    assert (str(memory), memory.task_position, memory.limit, memory.used) == \
        ("big", 4, 100, 150)
    bare = MemoryLimitError("big")
    assert (bare.task_position, bare.limit, bare.used) == (None, None, None)

    died = WorkerDiedError("gone", pid=42, exitcode=-11, task_position=5)
    assert (str(died), died.pid, died.exitcode, died.task_position, died.signal_name) == \
        ("gone", 42, -11, 5, "SIGSEGV")
    bare = WorkerDiedError("gone")
    assert (bare.pid, bare.exitcode, bare.task_position, bare.signal_name) == \
        (None, None, None, None)
    assert WorkerDiedError("exit", exitcode=3).signal_name is None

    exited = TaskExitError("bye", code=0, original="SystemExit")
    assert (str(exited), exited.code, exited.original) == ("bye", 0, "SystemExit")
    bare = TaskExitError("bye")
    assert bare.code is None and bare.original is None


@pytest.mark.parametrize("exitcode,name", [
    (None, None), (0, None), (3, None), (1, None), (-9, "SIGKILL"), (-11, "SIGSEGV"),
    (-1, "SIGHUP"), (-15, "SIGTERM"), (-200, "signal 200"),
])
def test_signal_names(exitcode, name):
    assert signal_name(exitcode) == name


@pytest.mark.parametrize("exitcode,text", [
    (-11, "was killed by SIGSEGV (signal 11): the task crashed the interpreter (a "
          "segmentation fault in C code: a bad ctypes call, a buggy extension, or a stack "
          "overflow)"),
    (-9, "was killed by SIGKILL (signal 9): the worker was killed with SIGKILL: most likely "
         "by the kernel's out-of-memory killer (see `dmesg`), or by another program"),
    (-15, "was killed by SIGTERM (signal 15): the worker was terminated by another program "
          "(SIGTERM)"),
    (-signal.SIGUSR1, f"was killed by SIGUSR1 (signal {int(signal.SIGUSR1)}): the worker was "
                      f"killed by a signal"),
    (-200, "was killed by signal 200 (signal 200): the worker was killed by a signal"),
    (None, "vanished with an unknown exit status"),
    (3, "exited with code 3: the task ended its process (os._exit() or a C library calling "
        "exit())"),
    (0, "exited with code 0: the task ended its process (os._exit() or a C library calling "
        "exit())"),
])
def test_a_lost_worker_is_described_with_its_likely_cause(exitcode, text):
    assert describe_death(exitcode) == text
