"""Worker backends: how the manager starts, feeds, watches and stops its workers.

Both backends offer the same small interface to the manager thread in
``pool.py``: ``start``, ``encode_chunk``, ``send_chunk``, ``forget``, ``stop``,
``kill``/``force_kill``, ``alive``, ``exitcode``, ``release``, ``slot``,
``counters``, ``rss``, ``wait``, ``drain``, ``wake``, ``close``. Only the manager
thread calls them, except ``wake`` (any thread).
"""
from __future__ import annotations

import hashlib
import os
import queue
import select
import signal
import sys
import threading
from collections import deque
from multiprocessing import connection as mp_connection
from typing import Any, Deque, Dict, List, Optional, Tuple

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from . import serialize
from .errors import SerializationError
from .options import Options
from .run import SEQUENCES, InputView
from .serialize import MainRefs
from .worker import (DONE, ERR, POS, RUN, SLOT_WIDTH, SPAN, START, Abandoned, ThreadSlot,
                     WorkerSetup, main_info, process_main, thread_main, zygote_main)
from .zygote import FORK_GATE, Zygote, ZygoteChild, fork_here


def _func_name(func: Any) -> str:
    name = getattr(func, "__name__", None)
    if name is None and hasattr(func, "func"):  # functools.partial
        return _func_name(func.func)
    return name if name is not None else type(func).__name__


class Worker:
    """Parent-side handle of one worker (process or thread)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.inflight: Deque[Any] = deque()
        self.runs: set = set()               # run ids whose function it has
        self.ready = False
        self.tasks_left: Optional[int] = None
        self.retiring = False
        self.dead = False
        self.baseline_rss = 0
        self.killed_at: Optional[float] = None
        self.pid: Optional[int] = None
        self.reported_done = 0           # add_progress counts it sent with results
        self.reported_err = 0
        self.last_heard = 0.0            # monotonic time of its last message
        self.chunks_done = 0
        self.slot_free = False           # its status slot was given back
        self.task_mark: Any = None       # (run, position, start) of the task last seen...
        self.task_rss = 0                # ...and its resident memory then (memory_limit)
        self.pipe_bytes = 0              # its task pipe's size, if known to be grown

    def unread(self) -> int:
        return sum(c.nbytes for c in self.inflight if c.done == c.start)


class ProcessBackend:
    """Workers are processes; one task pipe and one result pipe each.

    With ``context='fork'`` (the default on Linux) every worker is forked by the
    pool's zygote (:mod:`.zygote`), a copy of the caller's process made when the
    pool starts. With ``'spawn'`` or ``'forkserver'``, multiprocessing starts them
    and each imports the caller's main script, as ``multiprocessing.Pool`` does.
    """

    def __init__(self, opts: Options, preload: Tuple[Any, ...] = (),
                 one_call: bool = False) -> None:
        import multiprocessing
        self.method = opts.start_method
        self.ctx = multiprocessing.get_context("spawn" if self.method == "fork"
                                               else self.method)
        self.slots_count = 2 * opts.workers   # a dying worker's slot is not reused at once
        self.slots = self.ctx.RawArray("d", self.slots_count * SLOT_WIDTH)
        self.view = memoryview(self.slots).cast("B").cast("d")
        for i in range(self.slots_count):
            self.view[i * SLOT_WIDTH + RUN] = -1.0
            self.view[i * SLOT_WIDTH + POS] = -1.0
        self.zygote: Optional[Zygote] = None
        self._preloaded: Dict[int, Any] = {}
        if self.method == "fork":
            # Fork semantics without fork's danger: forks now, from the caller's thread,
            # before any thread of this pool runs: the zygote, which forks every later
            # worker, and (see start) the first workers.
            self.main = MainRefs("snapshot")
            self._preloaded = {i: f for i, f in enumerate(preload)}
            setup = WorkerSetup(init=(opts.initializer, opts.initargs)
                                if opts.initializer is not None else None,
                                preloaded=self._preloaded, watch_parent=False)
            self._fork_args = (self.slots, setup)
            # The first workers are forked right here too, from the same thread at the same
            # moment (see start): only from the main thread, whose end is the process's
            # (a worker dies with the thread that forked it).
            self._here = threading.get_ident() \
                if threading.current_thread() is threading.main_thread() else None
            if not (one_call and self._here is not None):
                self.zygote = Zygote(zygote_main, self._fork_args)
            # else: the pool of one call (progress_map and its kin), whose caller's thread
            # stays in this library until the call ends. Most calls never replace a
            # worker: the zygote is forked when the first replacement is wanted, by that
            # thread (make_zygote), at a point where it holds no lock: its fork and its
            # exit cost a 2-core one-call map of 200 000 tasks 5 ms (8 %).
        else:
            if self.method == "forkserver":
                try:
                    self.ctx.set_forkserver_preload(["parallelbar_clone.worker"])
                except Exception:
                    pass
            info = main_info()
            self.main = MainRefs("imported" if info is not None else "none")
            init_payload = None
            if opts.initializer is not None:
                try:
                    init_payload = serialize.dumps((opts.initializer, opts.initargs),
                                                   main=self.main)
                except Exception as exc:
                    raise SerializationError(
                        f"initializer {_func_name(opts.initializer)} or its initargs cannot "
                        f"be sent to a worker process: {exc}") from exc
            self.setup = WorkerSetup(init=init_payload, main=info)
            _install_main_filter()   # the worker imports __main__ itself: see import_main
        self._wake_r, self._wake_w = self.ctx.Pipe(duplex=False)
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self._poller = select.poll() if hasattr(select, "poll") else None
        self._polled: set = set()
        self._wake_fd = self._wake_r.fileno()
        if self._poller is not None:
            self._poller.register(self._wake_fd, _POLL_IN)
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.zygote_wanted = False   # set by the manager thread, served by make_zygote
        self._closed = False
        self._live: List[Worker] = []   # started and not yet released: their fds are open

    def function_payload(self, func: Any, force_value: bool = False) -> Any:
        """What a worker needs to get ``func``: the key of a function the zygote
        inherited, or serialized bytes (by name where the worker can find it)."""
        if not force_value:
            for key, known in self._preloaded.items():
                if known is func:
                    return key
        return serialize.dumps(func, main=self.main, force_value=force_value)

    def inherited_key(self, tasks: Any) -> Optional[int]:
        """The key of ``tasks`` if every worker inherits it: a list, tuple or range
        preloaded into a 'fork' pool (made before the pool's forks), else None."""
        if self.method != "fork" or type(tasks) not in SEQUENCES:
            return None
        for key, known in self._preloaded.items():
            if known is tasks:
                return key
        return None

    def check_call(self, opts: Any) -> None:
        """Per-call options that this backend cannot honour."""
        if opts.memory_limit is not None and not rss_supported():
            raise ValueError("memory_limit needs /proc (Linux) or the psutil package: "
                             "pip install 'parallelbar_clone[memory]'")

    def start(self, w: Worker) -> None:
        here = self.method == "fork" and threading.get_ident() == self._here
        if self.method == "fork" and self.zygote is None and not here:
            self.zygote_wanted = True
            raise ZygoteWanted()
        task_r, task_w = self.ctx.Pipe(duplex=False)
        result_r, result_w = self.ctx.Pipe(duplex=False)
        w.pipe_bytes = _grow_pipe(task_w)
        _grow_pipe(result_w)
        base = w.index * SLOT_WIDTH
        self.view[base + RUN] = -1.0
        self.view[base + POS] = -1.0
        self.view[base + START] = 0.0
        self.view[base + DONE] = 0.0
        self.view[base + ERR] = 0.0
        self.view[base + SPAN] = 1.0
        try:
            if here:
                # (only the first workers: later ones are started by the manager thread)
                proc: Any = fork_here(w.index, task_r.fileno(), result_w.fileno(), zygote_main,
                                      self._fork_args, self._pool_fds(task_w, result_r))
            elif self.zygote is not None:
                proc = self.zygote.start(w.index, task_r.fileno(), result_w.fileno())
            else:
                proc = self.ctx.Process(target=process_main,
                                        name=f"parallelbar-worker-{w.index}",
                                        args=(task_r, result_w, self.slots, w.index, self.setup),
                                        daemon=True)
                _starting.without_main = True
                try:
                    proc.start()
                finally:
                    _starting.without_main = False
        except BaseException:
            for conn in (task_r, task_w, result_r, result_w):
                conn.close()
            raise
        task_r.close()
        result_w.close()
        w.proc = proc  # type: ignore[attr-defined]
        w.pid = proc.pid
        w.task_conn = task_w  # type: ignore[attr-defined]
        w.result_conn = result_r  # type: ignore[attr-defined]
        self._live.append(w)

    def _pool_fds(self, *conns: Any) -> List[int]:
        """The fds of this pool's that a process forked from the caller must close: ``conns``,
        the caller's ends of the live workers' pipes and their sentinels, the wake-up pipe,
        the zygote's socket."""
        fds = [c.fileno() for c in conns]
        for w in self._live:
            fds += [c.fileno() for c in (w.task_conn, w.result_conn)  # type: ignore[attr-defined]
                    if not c.closed]
            proc = w.proc  # type: ignore[attr-defined]
            if isinstance(proc, ZygoteChild) and not proc._closed:
                fds.append(proc.sentinel)
        fds += [self._wake_r.fileno(), self._wake_w.fileno()]
        if self.zygote is not None:
            fds.append(self.zygote.fileno())
        return fds

    def stopping(self, workers: List[Worker]) -> None:
        """The pool is stopping these workers: if the zygote forked none of them, it
        can exit now, while they do (its exit costs a copy of the caller's address
        space to tear down: 2 ms of a one-call map on 2 cores)."""
        if self.zygote is not None and not any(type(w.proc) is ZygoteChild  # type: ignore
                                               for w in workers if hasattr(w, "proc")):
            self.zygote.quit()

    def first_workers_here(self) -> bool:
        """Should the first workers be started from the creating thread, before the
        pool's threads start? (Forked there, or asked of the zygote.)"""
        return self.method == "fork"

    def make_zygote(self) -> None:
        """Fork the zygote that a one-call pool put off, now that a worker must be
        replaced. Called by the consuming thread between two steps of its own (holding
        no lock), with this pool's threads parked (FORK_GATE): the workers it knows of
        (``_pool_fds``) cannot change meanwhile."""
        with FORK_GATE.forking():
            if self.zygote is not None or self._closed:
                self.zygote_wanted = False
                return
            try:
                self.zygote = Zygote(zygote_main, self._fork_args, close_fds=self._pool_fds())
            finally:
                self.zygote_wanted = False

    def send(self, w: Worker, header: tuple, tail: Any = b"") -> bool:
        try:
            serialize.send_message(w.task_conn, header, tail)  # type: ignore[attr-defined]
            return True
        except (OSError, ValueError):
            return False  # it died; its sentinel will tell

    def send_function(self, w: Worker, run: Any) -> bool:
        return self.send(w, ("f", run.id, run.payload, run.timing, True))

    def send_chunk(self, w: Worker, chunk: Any, run: Any) -> bool:
        if run.id not in w.runs:
            if not self.send_function(w, run):
                return False
            w.runs.add(run.id)
        items = chunk.items
        if chunk.payload is None and isinstance(items, InputView):   # see encode_chunk
            return self.send(w, ("ci", run.id, chunk.start, len(items), run.inherited, items.lo))
        return self.send(w, ("c", run.id, chunk.start, len(items)), chunk.payload)

    def encode_chunk(self, chunk: Any, run: Any) -> None:
        """Serialize a chunk's tasks; raises if neither pickle nor dill can. Tasks the
        workers inherited go as positions (payload None), unless a worker found its
        copy different (see process_main): then by value, as they are now. Part of a
        range goes as a range."""
        tasks = chunk.items
        if isinstance(tasks, InputView):
            if run.inherited is not None and not run.items_by_value:
                chunk.payload, chunk.nbytes = None, 0
                return
            tasks = tasks.source[tasks.lo:tasks.hi] if type(tasks.source) is range \
                else list(tasks)
        items = serialize.dumps(tasks, main=self.main, force_value=run.items_by_value)
        if run.journal is not None and items[:1] == b"P":  # the digest the journal checks
            chunk.digest = hashlib.blake2b(memoryview(items)[1:], digest_size=16).hexdigest()
        chunk.payload = items   # (the tail of the chunk's message: see send_chunk)
        chunk.nbytes = len(items)

    def forget(self, w: Worker, run_id: int) -> None:
        if run_id in w.runs:
            w.runs.discard(run_id)
            self.send(w, ("d", run_id))

    def stop(self, w: Worker) -> None:
        self.send(w, ("s",))
        try:
            w.task_conn.close()  # type: ignore[attr-defined]
        except OSError:
            pass

    def _signal_group(self, w: Worker, sig: int) -> None:
        """Signal the worker and every process its tasks started (its process group)."""
        proc = w.proc  # type: ignore[attr-defined]
        if getattr(proc, "_closed", False) or proc.exitcode is not None:
            return
        pid = proc.pid
        try:
            if pid is not None and hasattr(os, "killpg") and os.getpgid(pid) == pid:
                os.killpg(pid, sig)
                return
        except OSError:
            pass
        try:
            if sig == signal.SIGTERM:
                proc.terminate()
            else:
                proc.kill()
        except (OSError, ValueError, AttributeError):
            pass

    def kill(self, w: Worker) -> None:
        self._signal_group(w, signal.SIGTERM)

    def force_kill(self, w: Worker) -> None:
        self._signal_group(w, getattr(signal, "SIGKILL", signal.SIGTERM))

    def alive(self, w: Worker) -> bool:
        return w.proc.is_alive()  # type: ignore[attr-defined]

    def exitcode(self, w: Worker) -> Optional[int]:
        w.proc.join(0.5)  # type: ignore[attr-defined]
        return w.proc.exitcode  # type: ignore[attr-defined]

    def release(self, w: Worker) -> None:
        if w in self._live:
            self._live.remove(w)
        for conn in (w.task_conn, w.result_conn):  # type: ignore[attr-defined]
            try:
                conn.close()
            except OSError:
                pass
        proc = w.proc  # type: ignore[attr-defined]
        try:
            proc.join(0)
            if proc.exitcode is not None:
                if not isinstance(proc, ZygoteChild) and hasattr(os, "killpg"):
                    try:   # what its tasks started and left behind goes with it
                        os.killpg(proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                proc.close()
        except (ValueError, AttributeError):
            pass

    def slot(self, w: Worker) -> Tuple[int, int, float, int]:
        """(run id, position, start, span) read consistently; start 0: between tasks."""
        return _read_slot(self.view, w.index * SLOT_WIDTH)

    def counters(self, w: Worker) -> Tuple[float, float]:
        base = w.index * SLOT_WIDTH
        return self.view[base + DONE], self.view[base + ERR]

    def rss(self, w: Worker) -> Optional[int]:
        return read_rss(w.pid, self.page)

    def wait(self, workers: List[Worker], dying: List[Worker], timeout: float
             ) -> List[Tuple[Worker, Any]]:
        """Block until a message, a death or a wake-up; return (worker, message|None).

        One ``poll`` object lives as long as the pool, its registrations changed only
        when a worker comes or goes (``multiprocessing.connection.wait`` would build
        and fill a selector on every call, in the manager's hot loop)."""
        wanted: Dict[int, Tuple[Worker, bool]] = {}
        for w in workers:
            wanted[w.result_conn.fileno()] = (w, False)  # type: ignore[attr-defined]
            wanted[w.proc.sentinel] = (w, True)  # type: ignore[attr-defined]
        for w in dying:
            wanted[w.proc.sentinel] = (w, True)  # type: ignore[attr-defined]
        if self._poller is None:
            objects = {w.result_conn if not s else w.proc.sentinel: (w, s)  # type: ignore
                       for w, s in wanted.values()}
            ready = [obj if obj is not self._wake_r else -1 for obj in
                     mp_connection.wait(list(objects) + [self._wake_r], timeout)]
            found = [objects[obj] if obj != -1 else None for obj in ready]
        else:
            for fd in [fd for fd in self._polled if fd not in wanted]:
                self._poller.unregister(fd)
                self._polled.discard(fd)
            for fd in wanted:
                if fd not in self._polled:
                    self._poller.register(fd, _POLL_IN)
                    self._polled.add(fd)
            try:
                hits = self._poller.poll(max(0.0, timeout) * 1000.0)
            except InterruptedError:
                hits = []
            found = [wanted.get(fd) if fd != self._wake_fd else None for fd, _ in hits]
        events: List[Tuple[Worker, Any]] = []
        deaths: List[Tuple[Worker, Any]] = []
        for entry in found:
            if entry is None:   # the wake-up pipe
                with self._wake_lock:
                    while self._more(self._wake_r):
                        self._wake_r.recv_bytes()
                    self._wake_pending = False
                continue
            w, is_sentinel = entry
            if is_sentinel:
                deaths.append((w, None))
            else:
                events.extend((w, m) for m in self.drain(w, block_first=True))
        return events + deaths

    def drain(self, w: Worker, block_first: bool = False) -> List[Any]:
        """Every complete message waiting on w's result pipe."""
        out = []
        conn = w.result_conn  # type: ignore[attr-defined]
        try:
            while block_first or self._more(conn):
                block_first = False
                msg, tail = serialize.recv_message(conn)
                if msg[0] == "r":   # its results travel as the message's tail
                    msg = msg[:7] + (tail,) + msg[8:]
                out.append(msg)
        except (EOFError, OSError):
            pass
        return out

    def _more(self, conn: Any) -> bool:
        """Is there more to read on conn, now? (``conn.poll()`` builds a selector each
        time: a tenth of the manager's time on 1 ms tasks.)"""
        if self._poller is None:
            return bool(conn.poll())
        return bool(select.select([conn.fileno()], [], [], 0)[0])

    def wake(self) -> None:
        with self._wake_lock:
            if self._wake_pending:
                return
            self._wake_pending = True
            try:
                self._wake_w.send_bytes(b"")
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True   # (under FORK_GATE.working(): make_zygote sees it)
        if self.zygote is not None:
            self.zygote.close()
        for conn in (self._wake_r, self._wake_w):
            try:
                conn.close()
            except OSError:
                pass


class ZygoteWanted(Exception):
    """A replacement worker waits for the zygote a one-call pool has not forked yet."""


_starting = threading.local()
_POLL_IN = (getattr(select, "POLLIN", 1) | getattr(select, "POLLHUP", 16)
            | getattr(select, "POLLERR", 8))


def _install_main_filter() -> None:
    """Make multiprocessing leave __main__ out of what it sends a worker we start:
    the worker imports it itself (:func:`worker.import_main`), stopping where a
    script without a main guard would start a pool again instead of failing."""
    from multiprocessing import spawn
    original = spawn.get_preparation_data
    if getattr(original, "_parallelbar_clone", False):
        return

    def get_preparation_data(name: str) -> Dict[str, Any]:
        data = original(name)
        if getattr(_starting, "without_main", False):
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
        return data

    get_preparation_data._parallelbar_clone = True  # type: ignore[attr-defined]
    spawn.get_preparation_data = get_preparation_data


PIPE_BYTES = 1 << 20


def _grow_pipe(conn: Any) -> int:
    """Let a pipe hold a whole chunk (1 MB, Linux's default ceiling, instead of 64 KB), so
    a large message is written in one go instead of in lockstep with its reader. Its
    size in bytes if it was grown, else 0."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", 1031) if fcntl is not None else None
    if set_size is None or not sys.platform.startswith("linux"):
        return 0
    try:
        return int(fcntl.fcntl(conn.fileno(), set_size, PIPE_BYTES))
    except OSError:
        return 0  # over /proc/sys/fs/pipe-max-size, or no pipe: keep the default


def _read_slot(view: Any, base: int) -> Tuple[int, int, float, int]:
    """A worker's slot as one consistent reading: it writes POS last... so read it twice."""
    for _ in range(3):
        run, pos, start, span = view[base + RUN], view[base + POS], view[base + START], \
            view[base + SPAN]
        if view[base + POS] == pos and view[base + RUN] == run:
            return int(run), int(pos), start, max(1, int(span))
    return int(run), int(pos), 0.0, max(1, int(span))


def read_rss(pid: Optional[int], page: int = 4096) -> Optional[int]:
    """Resident memory of a process in bytes (Linux /proc, else psutil if installed)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * page
    except OSError:
        pass
    except (ValueError, IndexError):
        return None
    try:
        import psutil  # noqa: F401
        return psutil.Process(pid).memory_info().rss
    except Exception:
        return None


def take_all(box: "queue.SimpleQueue[Any]", timeout: float) -> List[Any]:
    """What ``box`` holds: waits up to ``timeout`` seconds for the first item, then
    takes the rest without waiting."""
    items = []
    try:
        items.append(box.get(timeout=max(0.0, timeout)))
        while True:
            items.append(box.get_nowait())
    except queue.Empty:
        pass
    return items


def rss_supported() -> bool:
    if os.path.exists(f"/proc/{os.getpid()}/statm"):
        return True
    try:
        import psutil  # noqa: F401
        return True
    except ImportError:
        return False


class ThreadBackend:
    """Workers are threads of this process; nothing is pickled. A thread that runs past
    ``process_timeout`` cannot be killed: its slot is filled at the deadline, the thread
    is abandoned (an exception is injected to stop it at its next Python line) and a
    new one takes its place."""

    method = "threads"

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.outbox: "queue.SimpleQueue[Any]" = queue.SimpleQueue()

    def check_call(self, opts: Any) -> None:
        """Nothing to refuse: Options already refuses memory_limit with threads."""

    def start(self, w: Worker) -> None:
        w.inbox = queue.SimpleQueue()  # type: ignore[attr-defined]
        w.slot = ThreadSlot()  # type: ignore[attr-defined]
        t = threading.Thread(target=thread_main, name=f"parallelbar-worker-{w.index}",
                             args=(w.inbox, self.outbox, w, w.slot,  # type: ignore[attr-defined]
                                   self.opts.initializer, self.opts.initargs), daemon=True)
        t.start()
        w.thread = t  # type: ignore[attr-defined]
        w.pid = os.getpid()

    def encode_chunk(self, chunk: Any, run: Any) -> None:
        chunk.payload = None
        chunk.nbytes = 0

    def send_chunk(self, w: Worker, chunk: Any, run: Any) -> bool:
        w.inbox.put(("c", run.id, chunk.start, run.func,  # type: ignore[attr-defined]
                     chunk.items, run.timing, True))
        return True

    def forget(self, w: Worker, run_id: int) -> None:
        pass

    def stop(self, w: Worker) -> None:
        w.inbox.put(("s",))  # type: ignore[attr-defined]

    def kill(self, w: Worker) -> None:
        w.slot.abandoned = True  # type: ignore[attr-defined]
        w.inbox.put(("s",))  # type: ignore[attr-defined]
        from .wrappers import async_raise
        async_raise(w.thread, Abandoned)  # type: ignore[attr-defined]

    force_kill = kill

    def alive(self, w: Worker) -> bool:
        return not w.slot.abandoned and w.thread.is_alive()  # type: ignore[attr-defined]

    def exitcode(self, w: Worker) -> Optional[int]:
        return 0

    def release(self, w: Worker) -> None:
        pass

    def slot(self, w: Worker) -> Tuple[int, int, float, int]:
        return _read_slot(w.slot, 0)  # type: ignore[attr-defined]

    def counters(self, w: Worker) -> Tuple[float, float]:
        s = w.slot  # type: ignore[attr-defined]
        return s[DONE], s[ERR]

    def rss(self, w: Worker) -> Optional[int]:
        return None

    def wait(self, workers: List[Worker], dying: List[Worker], timeout: float
             ) -> List[Tuple[Worker, Any]]:
        return [e for e in take_all(self.outbox, timeout) if e[0] is not None]

    def drain(self, w: Worker, block_first: bool = False) -> List[Any]:
        return []

    def wake(self) -> None:
        self.outbox.put((None, None))

    def close(self) -> None:
        pass
