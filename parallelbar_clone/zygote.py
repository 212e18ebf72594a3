"""The zygote: a copy of the caller's process that forks the workers of one pool.

Why: a worker forked from the caller sees the program exactly as the user wrote
it (``__main__`` globals, module state changed after import, open connections,
objects that cannot be pickled), as ``multiprocessing`` gives with ``fork``. But
forking a process whose other threads may hold locks (ours: the manager, the
bar, the journal; the caller's own) can hand the child a lock that is never
released. So a pool forks only from the caller's thread, before any thread of the
pool starts: the zygote, which is single-threaded and stays so, and the first
workers (:func:`fork_here`). The zygote forks every later worker (each
replacement after a timeout, a crash, a memory trip or ``maxtasksperchild``)::

    caller process                          zygote (1 thread)            worker
    --------------                          -----------------            ------
    ProgressPool() --os.fork()--> zygote
                   --os.fork()-----------------------------------------> process_main()
                   (the first workers: the caller's children, reaped by it)
    manager thread --('start', i) + fds--> os.fork() -------------------> process_main()
                   <---------- pid ------- reaps it (SIGCHLD)
                   <-- exit code on the worker's status pipe --

The first workers come from the caller's main thread only (a worker dies with the
thread that forked it, ``PR_SET_PDEATHSIG``); a pool started from another thread
has the zygote fork them. The pool of a one-call function (``progress_map`` and
its kin), whose caller's thread stays in the library until the call returns, puts
the zygote off until a worker must be replaced (most calls replace none): that
thread forks it then, between two of its own steps, with the pool's threads parked
(:data:`FORK_GATE`), and the zygote closes the caller's ends of the first workers'
pipes (``ProcessBackend.make_zygote``). Forked here they cost no request to the zygote (whose
answer the manager thread waited for, for the GIL, while the caller encoded tasks)
and no fork of a fork: the call's start-up is as short as ``Pool``'s.

Each worker leads its own process group, so killing a worker also kills the
processes its task started. The zygote exits when the pool closes it or when
the caller's process goes away (its control socket reaches EOF); a worker dies
with whoever forked it (``PR_SET_PDEATHSIG`` on Linux, a watcher thread elsewhere).

Forking is where fork's danger would be: while the caller's process runs other
threads of ours (another live pool), they are first parked at a point where they
hold no lock (:data:`FORK_GATE`).
"""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import select
import signal
import socket
import struct
import sys
import threading
import traceback
import warnings
from contextlib import contextmanager
from multiprocessing import reduction
from typing import Any, Callable, Dict, Iterator, Optional

log = logging.getLogger("parallelbar_clone")

__all__ = ["Zygote", "ZygoteChild", "DirectChild", "fork_here", "FORK_GATE", "supported"]

_STATUS = struct.Struct("<i")
_UNKNOWN_EXIT = -(1 << 30)        # the zygote vanished before it could say


def supported() -> bool:
    return hasattr(os, "fork") and hasattr(socket, "AF_UNIX") and sys.platform != "win32"


# ---------------------------------------------------------------- parking our threads

class ForkGate:
    """Lets the caller's thread fork while every thread of this library that is
    running is parked where it holds no lock.

    Our long-lived threads wrap each stretch of work in :meth:`working`; they wait
    (in ``select``, a queue, ...) outside it. :meth:`forking` waits until no thread
    is inside, and keeps them out until the fork is done."""

    def __init__(self) -> None:
        self._after_fork()
        self._working = _Working(self)

    def _after_fork(self) -> None:
        """(Also in a forked child, where only the forking thread exists.)"""
        self._cond = threading.Condition(threading.Lock())
        self._busy = 0
        self._forking = 0
        self._ours: Dict[int, int] = {}   # thread ident -> nesting depth, for the count

    def register(self) -> None:
        """Count the calling thread as ours (for the fork warning check)."""
        with self._cond:
            self._ours[threading.get_ident()] = 0

    def unregister(self) -> None:
        with self._cond:
            self._ours.pop(threading.get_ident(), None)

    def working(self) -> "_Working":
        """``with FORK_GATE.working():`` around a stretch of work of one of our threads."""
        return self._working

    def _enter(self) -> None:
        me = threading.get_ident()
        with self._cond:
            depth = self._ours.get(me, 0)
            if depth == 0:
                while self._forking:
                    self._cond.wait()
                self._busy += 1
            self._ours[me] = depth + 1

    def _exit(self) -> None:
        me = threading.get_ident()
        with self._cond:
            self._ours[me] -= 1
            if self._ours[me] == 0:
                self._busy -= 1
                if self._busy == 0 and self._forking:
                    self._cond.notify_all()

    @contextmanager
    def forking(self) -> Iterator[int]:
        """Hold our threads parked; yields how many threads of ours exist."""
        me = threading.get_ident()
        with self._cond:
            self._forking += 1
            mine = self._ours.get(me, 0)   # a fork from inside one of our threads
            while self._busy - (1 if mine else 0) > 0:
                self._cond.wait()
            ours = len([t for t in self._ours if t != me])
        try:
            yield ours
        finally:
            with self._cond:
                self._forking -= 1
                self._cond.notify_all()


class _Working:
    """The context manager :meth:`ForkGate.working` returns (no generator: it runs
    twice per turn of the manager's loop)."""

    __slots__ = ("gate",)

    def __init__(self, gate: ForkGate) -> None:
        self.gate = gate

    def __enter__(self) -> None:
        self.gate._enter()

    def __exit__(self, *exc: Any) -> None:
        self.gate._exit()


FORK_GATE = ForkGate()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=FORK_GATE._after_fork)


def _os_threads() -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


@contextmanager
def _quiet_fork_warning(ours: int) -> Iterator[None]:
    """Python 3.12+ warns when a process with several threads forks. If the only other
    threads are ours, parked by the gate, this fork is safe: say nothing. If the
    caller runs threads of its own, the warning is theirs to see, as with ``fork``."""
    if not ours or sys.version_info < (3, 12):   # (no thread of ours, or no warning)
        yield
        return
    threads = _os_threads()
    if threads is not None and threads == ours + 1:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks",
                                    category=DeprecationWarning)
            yield
    else:
        yield


# ---------------------------------------------------------------- parent side

class ZygoteChild:
    """Parent-side handle of a worker the zygote forked: the subset of
    ``multiprocessing.Process`` the pool uses."""

    def __init__(self, pid: int, status_fd: int) -> None:
        self.pid = pid
        self.sentinel = status_fd     # readable once the zygote has reaped it (or died)
        self._exitcode: Optional[int] = None
        self._closed = False

    def _poll(self, timeout: Optional[float]) -> None:
        if self._exitcode is not None or self._closed:
            return
        ready, _, _ = select.select([self.sentinel], [], [], timeout)
        if not ready:
            return
        self._exitcode = self._read_exit()
        if self._exitcode != _UNKNOWN_EXIT:
            self.kill_group()  # what its tasks started goes with it

    def _read_exit(self) -> int:
        """Its exit code, once the sentinel is readable: what the zygote wrote."""
        data = b""
        try:
            while len(data) < _STATUS.size:
                more = os.read(self.sentinel, _STATUS.size - len(data))
                if not more:
                    break
                data += more
        except OSError:
            pass
        return _STATUS.unpack(data)[0] if len(data) == _STATUS.size else _UNKNOWN_EXIT

    @property
    def exitcode(self) -> Optional[int]:
        self._poll(0)
        code = self._exitcode
        return None if code == _UNKNOWN_EXIT else code

    def is_alive(self) -> bool:
        self._poll(0)
        return self._exitcode is None

    def join(self, timeout: Optional[float] = None) -> None:
        self._poll(timeout)

    def _signal(self, sig: int) -> None:
        if self._exitcode is not None:
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(self.pid, sig)
            except OSError:
                pass

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def kill_group(self) -> None:
        """SIGKILL whatever is left in its process group (its tasks' children)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                os.close(self.sentinel)
            except OSError:
                pass


class ZygoteError(RuntimeError):
    pass


class DirectChild(ZygoteChild):
    """Parent-side handle of a first worker, forked from the caller's thread itself
    (:func:`fork_here`): its end shows on a pidfd (Linux 5.3+, Python 3.9+) or on a
    pipe only it holds open, and its exit code is the caller's to reap."""

    def _read_exit(self) -> int:
        try:
            _, status = os.waitpid(self.pid, 0)
            return exit_code(status)
        except ChildProcessError:   # reaped by someone else (SIGCHLD ignored, say)
            return _UNKNOWN_EXIT


def _pidfds() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))  # type: ignore[attr-defined]
        return True
    except (AttributeError, OSError):
        return False


_PIDFDS: Optional[bool] = None


def _flush_output() -> None:
    """Flush the caller's output before a fork: else each child, flushing its streams
    on exit, prints the caller's unflushed text once more (seen in Jupyter: ipykernel
    forwards a forked child's output)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _os_fork() -> int:
    """``os.fork()`` with the garbage collector paused across it, as ``subprocess``
    does: a collection in the child while Python sets up its threading module again can
    run a callback that waits forever for a lock that set-up holds (ipykernel's gc
    callback calls ``threading.enumerate()``: a first worker hung so on Python 3.8 in a
    Jupyter kernel)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return os.fork()
    finally:
        if enabled:
            gc.enable()


def _fork() -> int:
    """The fork of a first worker (a seam for the tests)."""
    return _os_fork()


def fork_here(index: int, task_fd: int, result_fd: int, target: Callable[..., None],
              args: tuple, close_fds: Any) -> DirectChild:
    """Fork a worker from the calling thread, the caller's main thread, while no thread
    of this pool runs yet: a pool's first workers (see :class:`Zygote`). In the child,
    ``close_fds`` (the pool's own fds) are closed and ``target(index, task_fd,
    result_fd, *args)`` runs, as in a worker the zygote forks."""
    global _PIDFDS
    if _PIDFDS is None:
        _PIDFDS = _pidfds()
    _load_prctl()
    pipe = None if _PIDFDS else os.pipe()
    _flush_output()
    # Ctrl-C stays blocked in the child until it ignores it (it may come between the
    # fork and then): only the caller sees it.
    masked = hasattr(signal, "pthread_sigmask")
    if masked:
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with FORK_GATE.forking() as ours, _quiet_fork_warning(ours):
            try:
                pid = _fork()
            except OSError as exc:
                raise ZygoteError(f"the caller's process could not fork a worker: "
                                  f"{os.strerror(exc.errno or 0)}") from exc
            if pid == 0:
                try:
                    _leave_parent([*close_fds, *(pipe[:1] if pipe else ())])
                except BaseException:
                    _print_exc()
                    os._exit(1)
                _run_worker(index, task_fd, result_fd, target, args)   # never returns
    finally:
        if masked:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    try:
        os.setpgid(pid, pid)   # (the child does it too: whoever is first wins the race)
    except OSError:
        pass
    if pipe is not None:
        os.close(pipe[1])
        return DirectChild(pid, pipe[0])
    try:
        return DirectChild(pid, os.pidfd_open(pid))  # type: ignore[attr-defined]
    except OSError as exc:   # (a process limit on fds): it runs, but cannot be watched
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise ZygoteError(f"cannot watch a new worker: {exc}") from exc


class Zygote:
    """Forks the zygote now, from the calling thread; :meth:`start` asks it for a worker.

    ``target(index, task_fd, result_fd, *args)`` is what a worker runs; it and
    ``args`` are inherited through the fork, never pickled. ``close_fds``: fds of
    the caller's that the zygote must not keep."""

    def __init__(self, target: Callable[..., None], args: tuple, close_fds: Any = ()) -> None:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        _load_prctl()   # (inherited by the zygote and the workers it forks)
        _flush_output()
        with FORK_GATE.forking() as ours, _quiet_fork_warning(ours):
            try:
                pid = _os_fork()
            except OSError as exc:
                parent_sock.close()
                child_sock.close()
                raise ZygoteError(f"the caller's process could not fork the zygote: "
                                  f"{os.strerror(exc.errno or 0)}") from exc
            if pid == 0:  # the zygote
                code = 1
                try:
                    parent_sock.close()
                    for fd in close_fds:   # (a zygote made after the first workers: theirs)
                        try:
                            os.close(fd)
                        except OSError:
                            pass
                    _Server(child_sock, target, args).serve()
                    code = 0
                except BaseException:
                    _print_exc()
                finally:
                    os._exit(code)
        child_sock.close()
        self.pid = pid
        self._sock = parent_sock
        self._lock = threading.Lock()
        self._closed = False
        self._quit = False       # told to exit (close() waits for it)

    def fileno(self) -> int:
        """The caller's end of the zygote's control socket."""
        return self._sock.fileno()

    def start(self, index: int, task_fd: int, result_fd: int, timeout: float = 30.0
              ) -> ZygoteChild:
        """A new worker running ``target(index, task_fd, result_fd, *args)``.
        The two fds are the worker's ends of its pipes; the caller closes its copies."""
        status_r, status_w = os.pipe()
        try:
            with self._lock:
                if self._closed or self._quit:
                    raise ZygoteError("the pool's zygote is closed")
                try:
                    self._sock.sendall(struct.pack("<ci", b"s", index))
                    reduction.sendfds(self._sock, [task_fd, result_fd, status_w])
                    self._sock.settimeout(timeout)
                    data = _recv_exact(self._sock, 8)
                except (OSError, EOFError) as exc:
                    raise ZygoteError(f"the process that starts this pool's workers (pid "
                                      f"{self.pid}) is gone: {exc}") from exc
                finally:
                    self._sock.settimeout(None)
        finally:
            os.close(status_w)
        pid, errno = struct.unpack("<ii", data)
        if pid <= 0:
            os.close(status_r)
            raise ZygoteError(f"the zygote (pid {self.pid}) could not fork a worker: "
                              f"{os.strerror(errno)}")
        return ZygoteChild(pid, status_r)

    def quit(self) -> None:
        """Tell the zygote to exit (it kills what it forked that still runs), without
        waiting: :meth:`close` does."""
        with self._lock:
            if self._closed or self._quit:
                return
            self._quit = True
            try:
                self._sock.sendall(b"q\0\0\0\0")
            except OSError:
                pass

    def close(self, timeout: float = 2.0) -> None:
        """Tell the zygote to exit and reap it."""
        self.quit()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                # Its end closes when it exits: wait for that, not in polling steps.
                self._sock.settimeout(timeout)
                while self._sock.recv(4096):
                    pass
            except OSError:
                pass
            self._sock.close()
        _reap(self.pid, timeout)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            raise EOFError("connection closed")
        data += more
    return data


def _reap(pid: int, timeout: float) -> None:
    import time
    deadline = time.monotonic() + timeout
    pause = 0.0001
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() > deadline:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            return
        time.sleep(pause)
        pause = min(pause * 2, 0.002)


def _print_exc() -> None:
    try:
        traceback.print_exc()
    except BaseException:
        pass


def exit_code(status: int) -> int:
    """``os.waitstatus_to_exitcode`` (Python 3.9+), for 3.8 too."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return _UNKNOWN_EXIT


# ---------------------------------------------------------------- the zygote itself

_PR_SET_PDEATHSIG = 1


_prctl: Any = None


def _load_prctl() -> None:
    """Look prctl up before forking: in each fresh worker, loading libc through ctypes
    (a class built per CDLL) cost a third of a millisecond."""
    global _prctl
    if _prctl is None and sys.platform.startswith("linux"):
        try:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except Exception:
            _prctl = False


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the process that forked it exits."""
    _load_prctl()
    if not _prctl:
        return
    try:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


class _Server:
    """The zygote's loop: fork a worker per request, report each one's exit code."""

    def __init__(self, sock: socket.socket, target: Callable[..., None], args: tuple) -> None:
        self.sock = sock
        self.target = target
        self.args = args
        self.status: Dict[int, int] = {}    # worker pid -> write end of its status pipe
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)

    def serve(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the pool's business
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD, signal.SIGTERM})
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        try:
            self._loop()
        finally:
            for pid in list(self.status):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            self._reap_all(block=True)

    def _loop(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.sock, self.wake_r], [], [])
            except InterruptedError:
                continue
            if self.wake_r in ready:
                try:
                    os.read(self.wake_r, 4096)
                except BlockingIOError:
                    pass
            self._reap_all(block=False)
            if self.sock not in ready:
                continue
            try:
                head = _recv_exact(self.sock, 5)
            except (OSError, EOFError):
                return  # the caller's process is gone: so are we
            kind, index = head[:1], struct.unpack("<i", head[1:])[0]
            if kind != b"s":
                return
            fds = reduction.recvfds(self.sock, 3)
            self._fork_worker(index, *fds)

    def _fork_worker(self, index: int, task_fd: int, result_fd: int, status_w: int) -> None:
        try:
            pid = self._fork(index, task_fd, result_fd, status_w)
        except OSError as exc:
            self.sock.sendall(struct.pack("<ii", -1, exc.errno or 0))
            return
        self.sock.sendall(struct.pack("<ii", pid, 0))

    def _fork(self, index: int, task_fd: int, result_fd: int, status_w: int) -> int:
        """Fork a worker on these fds (closed here either way); its pid."""
        try:
            pid = _os_fork()
        except OSError:
            for fd in (task_fd, result_fd, status_w):
                os.close(fd)
            raise
        if pid == 0:
            self._become_worker(index, task_fd, result_fd, status_w)  # never returns
        try:
            os.setpgid(pid, pid)   # (the child does it too: whoever is first wins the race)
        except OSError:
            pass
        os.close(task_fd)
        os.close(result_fd)
        self.status[pid] = status_w
        return pid

    def _become_worker(self, index: int, task_fd: int, result_fd: int, status_w: int) -> None:
        try:
            _leave_parent([self.wake_r, self.wake_w, status_w, *self.status.values()])
            self.sock.close()
        except BaseException:
            _print_exc()
            os._exit(1)
        _run_worker(index, task_fd, result_fd, self.target, self.args)

    def _reap_all(self, block: bool) -> None:
        while self.status:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                for fd in self.status.values():
                    os.close(fd)
                self.status.clear()
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            fd = self.status.pop(pid, None)
            if fd is None:
                continue
            try:
                os.write(fd, _STATUS.pack(exit_code(status)))
            except OSError:
                pass
            os.close(fd)


def _leave_parent(close_fds: Any) -> None:
    """A freshly forked worker's first steps: lead its own process group, keep the
    signal handling of a worker whatever the forking process had (no wake-up fd, no
    SIGCHLD or SIGTERM handler, Ctrl-C ignored), and close the fds of the forking
    process's that are not its own."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _run_worker(index: int, task_fd: int, result_fd: int, target: Callable[..., None],
                args: tuple) -> None:
    """A freshly forked worker (by the zygote or the caller): die with the process
    that forked it, then run ``target``; never returns."""
    code = 1
    try:
        parent = os.getppid()
        _die_with_parent()
        if os.getppid() != parent:   # it died before prctl: follow it
            os._exit(70)
        _become_worker_process(index)
        target(index, task_fd, result_fd, *args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        _print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)


def _become_worker_process(index: int) -> None:
    """What ``multiprocessing`` does in a child it forks, so that code that asks
    ``multiprocessing.current_process()`` (or uses objects it inherited, such as a
    ``multiprocessing.Lock`` or a manager proxy) sees a worker, as under ``Pool``."""
    try:
        from multiprocessing import process, util
        me = process.BaseProcess.__new__(process.BaseProcess)
        me._identity = (index + 1,)
        me._config = dict(process._current_process._config)
        me._config["daemon"] = True    # like Pool workers: no child processes of their own
        me._parent_pid = os.getppid()
        me._parent_name = "MainProcess"
        me._popen = None
        me._closed = False
        me._target = None
        me._args = ()
        me._kwargs = {}
        me._name = f"ParallelBarWorker-{index + 1}"
        process._current_process = me
        process._children = set()
        util._finalizer_registry.clear()
        util._run_after_forkers()
    except Exception:  # best effort: private parts of multiprocessing
        log.debug("could not set up multiprocessing's view of the worker", exc_info=True)
