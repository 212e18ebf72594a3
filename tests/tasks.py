"""Task functions for the tests: module level, so every start method can import them."""
import ctypes
import faulthandler
import os
import signal
import sys
import time

from parallelbar_clone.wrappers import add_progress, memory_limit

FAULT_AT = 5


def times_ten(x):
    return x * 10


def megabytes(n):
    return b"x" * (n << 20)


def type_name(x):
    return type(x).__name__


def fails_on_odd(x):
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def busy_ms(x):
    """Busy (not sleeping) for 1 ms: keeps a core, as real work does."""
    end = time.monotonic() + 0.001
    while time.monotonic() < end:
        pass
    return x


def _ok_or(x, fault):
    if x != FAULT_AT:
        return x * 10
    return fault()


def _raise():
    raise ValueError("task five is bad")


def _python_hang():
    while True:
        time.sleep(0.01)


def _c_hang():
    ctypes.CDLL(None).sleep(60)


def _exit():
    os._exit(3)


def _segfault():
    # pytest turns faulthandler on and forked workers inherit it: without this, every
    # deliberate crash prints a "Fatal Python error" dump that reads like a real one.
    # The worker still dies of SIGSEGV, which is what the tests check.
    faulthandler.disable()
    ctypes.string_at(0)


def _blow_up():
    chunks = []
    for _ in range(400):               # up to 4 GB, 10 MB at a time, touched
        chunks.append(bytearray(10_000_000))
        time.sleep(0.001)
    return len(chunks)


def _unpicklable_result():
    return (i for i in range(3))       # a generator: neither pickle nor dill can send it


class UnpicklableError(Exception):
    def __init__(self, a, b):          # pickles, but does not unpickle: args mismatch
        super().__init__(f"{a}-{b}")


def _unpicklable_exception():
    raise UnpicklableError(1, 2)


def raises(x):
    return _ok_or(x, _raise)


def python_hang(x):
    return _ok_or(x, _python_hang)


def c_hang(x):
    return _ok_or(x, _c_hang)


def exits(x):
    return _ok_or(x, _exit)


def segfaults(x):
    return _ok_or(x, _segfault)


def blows_up(x):
    return _ok_or(x, _blow_up)


def unpicklable_result(x):
    return _ok_or(x, _unpicklable_result)


def unpicklable_exception(x):
    return _ok_or(x, _unpicklable_exception)


def always_exits(x):
    os._exit(7)


def always_c_hangs(x):
    ctypes.CDLL(None).sleep(60)


def failing_initializer():
    raise RuntimeError("initializer refuses")


def sleep_then(x, seconds=0.05):
    time.sleep(seconds)
    return x


def slow_unless_zero(x):
    if x == 0:
        raise KeyError("zero")
    time.sleep(30)
    return x


def pid_of(x):
    return os.getpid()


def add(a, b):
    return a + b


@add_progress()
def inner_step(i):
    return i


def calls_inner_25_times(x):
    return sum(inner_step(i) for i in range(25))


@add_progress(error_handling="coerce", set_error_value=-1)
def inner_maybe_fails(i):
    if i % 10 == 3:
        raise ValueError(i)
    return i


def calls_inner_failing(x):
    return [inner_maybe_fails(x * 10 + i) for i in range(10)]


@memory_limit("50MB")
def greedy(n_mb):
    return len(bytearray(n_mb * 1_000_000))


def sigterm_ignoring_hang(x):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctypes.CDLL(None).sleep(60)


def touch_then_sleep(path):
    open(path, "a").close()
    time.sleep(60)


def touch_then_c_sleep(path):
    open(path, "a").close()
    ctypes.CDLL(None).sleep(60)


def set_size(s):
    return len(s)


def fails_first_time(marker_dir, kind):
    """Fail (raise, hang in C, or exit) on a task's first attempt, succeed after."""
    def run(x):
        marker = os.path.join(marker_dir, f"{kind}-{x}")
        if x % 4 == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            if kind == "raise":
                raise ConnectionError(f"flaky {x}")
            if kind == "hang":
                ctypes.CDLL(None).sleep(60)
            os._exit(9)
        return x * 10
    return run


def _sigkill():
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does


def _regex():
    import re
    re.match(r"(a+)+$", "a" * 40 + "b")  # catastrophic backtracking, in C, GIL held


def oom_killed(x):
    return _ok_or(x, _sigkill)


def regex_hang(x):
    return _ok_or(x, _regex)


# -- issue 8's rows: the engine under real streams and rare faults

def sleep_a_hundredth(x):
    time.sleep(0.01)       # right at process_timeout=0.01: a race with the deadline
    return x


def plugin_error(args):
    """Raise (or return, on x == 'return') an object of a class only this worker can
    import: its module lives in a folder the worker adds to sys.path."""
    import sys
    folder, x = args
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import pb_plugin
    if x == "raise":
        raise pb_plugin.PluginError("from the plugin")
    if x == "return":
        return pb_plugin.PluginResult(7)
    return x


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("__str__ is broken too")


def raises_bad_str(x):
    if x == FAULT_AT:
        raise BadStr()
    return x * 10


def slow_then(x):
    time.sleep(30 if x < 100 else 0)
    return x


def exits_zero(x):
    import sys
    if x == 3:
        sys.exit(0)
    return x


def hold_then_grow(x):
    """Task 0 keeps 300 MB in a module global; task 1 adds 150 MB and holds it."""
    global _cache
    if x == 0:
        _cache = bytearray(300_000_000)
        return 0
    extra = bytearray(150_000_000)
    time.sleep(2)
    return len(extra)


def length(s):
    return len(s)


def identity(x):
    return x


def raises_on_multiples_of_three(x):
    if x % 3 == 0:
        time.sleep(0.05 if x < 10 else 0)   # the first failures come last
        raise ValueError(x)
    return x


class SlowToSend:
    """A task that takes ``seconds`` to pickle in the caller (a big or clever object)
    and arrives in the worker as the int ``i``; ``sent[i]`` says when it was encoded."""

    def __init__(self, i, seconds, sent):
        self.i, self.seconds, self.sent = i, seconds, sent

    def __reduce__(self):
        time.sleep(self.seconds)
        self.sent[self.i] = time.monotonic()
        return (int, (self.i,))


def started_at(x):
    return x, time.monotonic()


def _int_after(i, seconds):
    time.sleep(seconds)
    return i


class SlowToLoad:
    """Pickles at once; loading it (in the worker) takes ``seconds``."""

    def __init__(self, i, seconds):
        self.i, self.seconds = i, seconds

    def __reduce__(self):
        return (_int_after, (self.i, self.seconds))


def slow_to_return(x):
    """A result whose pickling (in the worker) takes 4 ms."""
    return SlowToSend(x, 0.004, {})


def ten_times_or_fails(x):
    """x * 10; a negative x raises ValueError(x), and -1000 calls sys.exit(3)."""
    if x == -1000:
        sys.exit(3)
    if x < 0:
        raise ValueError(x)
    return x * 10


def prints_unflushed(x):
    """Prints a line without flushing (stdout to a pipe is block-buffered): the line is
    seen only if the worker exits as a worker should, flushing its streams. The
    worker's stdout takes 50 ms to flush, so a worker killed as it exits (its zygote
    quit first) loses the line every time, not only when it loses the race."""
    if not isinstance(sys.stdout, _SlowFlush):
        sys.stdout = _SlowFlush(sys.stdout)
    print(f"task {x} was here")
    return x


class _SlowFlush:
    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        return self.stream.write(text)

    def flush(self):
        time.sleep(0.05)
        self.stream.flush()


def sched_policy(x):
    """This worker's scheduling policy (Linux)."""
    return os.sched_getscheduler(0)


def c_hang_if_even(x):
    """Even tasks hang inside C (only killing the worker ends them); odd ones return
    (x, when they started)."""
    if x % 2 == 0:
        _c_hang()
    return x, time.monotonic()
