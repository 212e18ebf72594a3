"""The dask.distributed backend: the same engine, with futures on a dask cluster as
its workers.

``executor=`` takes a ``distributed.Client``, a scheduler address (``'tcp://host:8786'``)
or ``'dask'`` (the current default client if there is one, else a ``LocalCluster`` of
``n_cpu`` worker processes with one thread each, closed when the pool closes). A
client or cluster this module did not start is never closed by it.

How a call flows (compare the package docstring)::

    caller thread                manager thread              dask (client loop thread,
    (feed.py, results.py)        (manager.py)                scheduler, workers)
    ---------------------        ------------                ------------------------
    encode chunks: the tasks     send_chunk: client.submit(  run_remote() on a dask worker:
    cloudpickled to bytes  -->   run_remote, func bytes,  -> loads func and tasks, runs them
                                 task bytes)                 (worker.run_chunk), packs each
                                                             result blob and exception as the
                                 wait(): messages  <--+      process workers do
                                 ('r', 'lost', ...)   |
                                                      +-- fetch thread (here): the future's
                                                          done callback queues it; results are
                                                          gathered in batches and turned into
                                                          the same messages a process worker
                                                          sends

The manager's "workers" are slots for futures in flight: two per dask thread, so a
dask worker always has its next chunk at hand. Results come back as plain data (a
pickled blob of values, exceptions packed with their traceback text): neither dask's
client thread nor the manager loads an object of the caller's; the consuming thread
does, as for process workers.

Guards, as far as dask lets them go:

- ``process_timeout``: each task runs in a helper thread of the dask worker process,
  watched by the thread dask gave the chunk. At the deadline the task's slot gets a
  :class:`TaskTimeoutError` and the chunk goes on with its next task. The helper
  thread is abandoned: an exception is injected that stops Python code at its next
  line, but code blocked in C (``time.sleep``, a socket read, a C extension) keeps
  running in that dask worker process until it returns, and dask does not know it
  is there (a thread cannot be killed; dask cancels only tasks that have not
  started). Where the task never comes back to Python it runs until that worker
  process ends.
- A dask worker that dies (``os._exit``, a segfault, the nanny's memory limit):
  dask reschedules its tasks itself and gives up on a task after
  ``distributed.scheduler.allowed-failures`` deaths (``KilledWorker``, default 3),
  counting each death against every task the worker held, queued ones too. So a
  chunk of several tasks that dask gave up on runs again one task per future, and a
  lone task that dask gave up on runs once more alone (no other future of this pool
  in flight) before it gets a :class:`WorkerDiedError` naming the dask worker: only
  the task that kills its worker fails, the others complete. A result that finished
  on a worker that died before it was fetched is computed again by dask; the
  scheduler may first spend up to ``distributed.comm.timeouts.connect`` (30 s by
  default) trying to reach the dead worker.
- ``memory_limit``: the dask workers' ``memory_limit`` where this module starts the
  ``LocalCluster`` (a worker's whole memory as dask counts it; its nanny restarts a
  worker past 95 % of it, and the task that was running counts as above). Refused
  elsewhere: a cluster someone else started keeps its own limits.
- ``maxtasksperchild`` is refused: dask owns its workers' lives.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import re
import threading
import uuid
from collections import OrderedDict, deque
from typing import Any, Deque, Dict, List, Optional, Tuple

from .errors import ParallelBarError, TaskTimeoutError, WorkerDiedError
from .options import Options

log = logging.getLogger("parallelbar_clone")

__all__ = ["DaskBackend", "run_remote", "import_distributed"]

SLOTS_PER_THREAD = 2        # futures in flight per dask worker thread
CONNECT_TIMEOUT = 5.0       # seconds to reach a scheduler address
CLOSE_TIMEOUT = 5.0
GATHER_RETRIES = 20         # a result lost with its worker as it was fetched: dask makes
GATHER_PAUSE = 0.1          # it again; fetch again this often, this far apart (seconds)
EXTRA = "pip install 'parallelbar_clone[dask]'"


def import_distributed() -> Any:
    """The ``distributed`` module, or an ImportError that names the extra."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"executor='dask' needs the distributed package: {EXTRA}") from exc
    return distributed


def _client_status(client: Any) -> str:
    return str(getattr(client, "status", "?"))


# --------------------------------------------------------------------------- worker side
_FUNCS: "OrderedDict[Tuple[str, int], Any]" = OrderedDict()   # (pool token, run id) -> func
_INITIALIZED: set = set()                                     # pool tokens whose initializer ran
_LOCK = threading.Lock()


def _loads(data: bytes) -> Any:
    import cloudpickle  # (pickle would do; cloudpickle is dask's own and registers by value)
    return cloudpickle.loads(data)


def _dumps(obj: Any) -> bytes:
    import cloudpickle
    return cloudpickle.dumps(obj)


def run_remote(token: str, run_id: int, func_bytes: bytes, items_bytes: bytes, start: int,
               timeout: Optional[float], durations: bool, init: Optional[bytes]) -> Any:
    """Run one chunk on a dask worker. Returns ``('pieces', [piece, ...])`` where each
    piece is the tail of a process worker's ``'r'`` message, or ``('init_error', packed)``,
    ``('func_error', packed)``, ``('bad', packed)``. Never raises for a task's sake."""
    from . import outcomes
    from .worker import _Counted, _encode_values, _inner_blob, _local, run_chunk

    if init is not None and token not in _INITIALIZED:
        with _LOCK:
            if token not in _INITIALIZED:
                try:
                    initializer, initargs = _loads(init)
                    initializer(*initargs)
                except BaseException as exc:
                    return ("init_error", outcomes.pack_exception(exc))
                _INITIALIZED.add(token)
    key = (token, run_id)
    with _LOCK:
        func = _FUNCS.get(key)
        if func is not None:
            _FUNCS.move_to_end(key)
    if func is None:
        try:
            func = _loads(func_bytes)
        except BaseException as exc:
            return ("func_error", outcomes.pack_exception(exc))
        with _LOCK:
            _FUNCS[key] = func
            while len(_FUNCS) > 16:
                _FUNCS.popitem(last=False)
    try:
        items = _loads(items_bytes)
    except BaseException as exc:
        return ("bad", outcomes.pack_exception(exc))
    slot = [float(run_id), -1.0, 0.0, 0.0, 0.0, 1.0]
    _local.slot = (slot, 0)
    _local.inner_failures = []
    counted = _Counted(slot, 0)
    pieces: List[Any] = []

    def report(run_id: int, start: int, values: List[Any], errors: Any, busy: float,
               durs: Optional[List[float]]) -> None:
        data, dilled, errors = _encode_values(values, start, errors)
        pieces.append((start, len(values), errors, busy, _inner_blob(), data, dilled, durs,
                       counted.since_last()))

    if timeout is not None:
        func = _Deadline(func, timeout, start, slot)
    try:
        run_chunk(func, run_id, start, items, slot, 0, False, report, True, durations)
    finally:
        if isinstance(func, _Deadline):
            func.close()
        _local.slot = None
    return ("pieces", pieces)


class _Abandoned(BaseException):
    """Raised in a task's helper thread after its deadline passed."""


class _Deadline:
    """Calls the function in a helper thread and waits for it at most ``timeout``
    seconds; past that, the task's outcome is a TaskTimeoutError and the thread is
    abandoned (see the module docstring for what keeps running)."""

    def __init__(self, func: Any, timeout: float, start: int, slot: List[float]) -> None:
        self.func = func
        self.timeout = timeout
        self.pos = start
        self.slot = slot
        self.inbox: Optional["queue.SimpleQueue[Any]"] = None
        self.outbox: Optional["queue.SimpleQueue[Any]"] = None
        self.thread: Optional[threading.Thread] = None
        self.__name__ = getattr(func, "__name__", type(func).__name__)

    def _helper(self) -> None:
        from .worker import _local
        inbox, outbox = queue.SimpleQueue(), queue.SimpleQueue()
        shared_failures = _local.inner_failures

        def loop() -> None:
            _local.slot = (self.slot, 0)
            _local.inner_failures = shared_failures
            try:
                while True:
                    item = inbox.get()
                    if item is _STOP:
                        return
                    try:
                        outbox.put((True, self.func(item[0])))
                    except _Abandoned:
                        return
                    except BaseException as exc:
                        outbox.put((False, exc))
                        del exc
            except _Abandoned:
                return

        thread = threading.Thread(target=loop, name="parallelbar-dask-task", daemon=True)
        thread.start()
        self.thread, self.inbox, self.outbox = thread, inbox, outbox

    def __call__(self, item: Any) -> Any:
        if self.inbox is None:
            self._helper()
        pos, self.pos = self.pos, self.pos + 1
        self.inbox.put((item,))  # type: ignore[union-attr]
        try:
            ok, value = self.outbox.get(timeout=self.timeout)  # type: ignore[union-attr]
        except queue.Empty:
            from .wrappers import async_raise
            async_raise(self.thread, _Abandoned)   # stops Python code at its next line
            self.inbox = self.outbox = None
            raise TaskTimeoutError(
                f'function "{self.__name__}" took longer than {self.timeout} s. (dask worker '
                f'{_worker_address()}: the task was abandoned; code blocked in C keeps running '
                f'in that worker process until it returns)',
                task_position=pos, timeout=self.timeout) from None
        if ok:
            return value
        raise value

    def close(self) -> None:
        if self.inbox is not None:
            self.inbox.put(_STOP)
            self.inbox = None


_STOP = object()


def _worker_address() -> str:
    try:
        from distributed import get_worker
        return str(get_worker().address)
    except Exception:
        return "?"


# --------------------------------------------------------------------------- client side
def _killed_worker_address(exc: BaseException) -> str:
    last = getattr(exc, "last_worker", None)
    address = getattr(last, "address", None)
    if address:
        return str(address)
    found = re.search(r"[a-z]+://[^\s,.']+(?:\.[^\s,.']+)*(?::\d+)?", str(exc))
    return found.group(0) if found else "?"


class DaskBackend:
    """Futures on a dask cluster as the manager's workers (see the module docstring)."""

    method = "dask"

    def __init__(self, opts: Options) -> None:
        distributed = import_distributed()
        self.distributed = distributed
        self.opts = opts
        self.token = uuid.uuid4().hex[:12]
        self.client: Any = None
        self.cluster: Any = None
        self.owns_client = False
        self.owns_cluster = False
        self._connect(opts.executor)
        try:
            if opts.n_cpu is not None:
                threads = opts.n_cpu
            elif self.cluster is not None:
                threads = opts.workers          # the LocalCluster we started
            else:
                threads = self._cluster_threads()
            self.threads = threads
            self.width = SLOTS_PER_THREAD * threads          # the manager's 'workers'
            self.slots_count = 2 * self.width
            self.init = (_dumps((opts.initializer, opts.initargs))
                         if opts.initializer is not None else None)
        except BaseException:
            self._close_owned()
            raise
        self.events: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self.futures: Dict[str, _InFlight] = {}     # by dask key
        self.futures_lock = threading.Lock()
        self.keys = itertools.count()
        self.closing = False
        self.suspects: Deque[_InFlight] = deque()   # tasks to run alone before any blame
        self.isolating: Optional[_InFlight] = None

    # -- connecting -----------------------------------------------------------------
    def _connect(self, executor: Any) -> None:
        distributed = self.distributed
        opts = self.opts
        if isinstance(executor, distributed.Client):
            self.client = executor
        elif executor == "dask":
            try:
                self.client = distributed.default_client()
            except ValueError:
                self.client = None
            if self.client is None:
                self._start_local_cluster()
                return
        else:   # a scheduler address
            try:
                self.client = distributed.Client(executor, timeout=CONNECT_TIMEOUT,
                                                 set_as_default=False)
            except Exception as exc:
                raise ConnectionError(
                    f"could not reach the dask scheduler at {executor!r} within "
                    f"{CONNECT_TIMEOUT:g} s: {type(exc).__name__}: {exc}") from exc
            self.owns_client = True
        if opts.memory_limit is not None:
            self._close_owned()
            raise ValueError(
                "memory_limit can only be enforced on a dask cluster this library starts "
                "(executor='dask' with no dask client running); this one was started "
                "elsewhere: give its workers a memory limit where it is made "
                "(LocalCluster(memory_limit=...), dask worker --memory-limit ...)")
        status = _client_status(self.client)
        if status not in ("running", "connecting", "newly-created"):
            raise ValueError(f"the dask Client given as executor is not running "
                             f"(status {status!r}): pass a connected Client, 'dask' or a "
                             f"scheduler address")

    def _cluster_threads(self) -> int:
        """Threads of the cluster's workers now (the tasks it runs at once); a cluster
        with none yet (starting, scaling up, restarting one) gets a few seconds."""
        threads = sum(self.client.nthreads().values())
        if not threads:
            try:
                self.client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
            except Exception:
                pass
            threads = sum(self.client.nthreads().values())
        if not threads:
            threads = self.opts.workers
            log.warning("the dask cluster has no workers yet; %d tasks at a time (pass n_cpu "
                        "to choose)", threads)
        return threads

    def _start_local_cluster(self) -> None:
        distributed = self.distributed
        opts = self.opts
        kwargs: Dict[str, Any] = dict(n_workers=opts.workers, threads_per_worker=1,
                                      processes=True, dashboard_address=":0")
        if opts.memory_limit is not None:
            kwargs["memory_limit"] = opts.memory_limit
        self.cluster = distributed.LocalCluster(**kwargs)
        self.owns_cluster = True
        try:
            self.client = distributed.Client(self.cluster, set_as_default=False)
        except BaseException:
            self._close_owned()
            raise
        self.owns_client = True

    def check_call(self, opts: Options) -> None:
        """Per-call options that this backend cannot honour."""
        if opts.memory_limit != self.opts.memory_limit:
            raise ValueError("with a dask executor, memory_limit is the memory limit of the "
                             "dask workers, fixed when the pool starts its cluster: pass it "
                             "to ProgressPool(...), not to one call")

    # -- the manager's interface ---------------------------------------------------------
    def function_payload(self, func: Any, force_value: bool = False) -> bytes:
        return _dumps(func)

    def start(self, w: Any) -> None:
        w.gone = False
        w.pid = None
        self.events.put((w, ("ready", None)))

    def encode_chunk(self, chunk: Any, run: Any) -> None:
        chunk.payload = _dumps(chunk.items)
        chunk.nbytes = len(chunk.payload)

    def send_chunk(self, w: Any, chunk: Any, run: Any) -> bool:
        if self.suspects or self.isolating is not None:
            return False     # a suspect runs alone first (see _emit_error); the chunk waits
        args = (run_remote, self.token, run.id, run.payload, chunk.payload, chunk.start,
                run.opts.process_timeout, run.journal is not None, self.init)
        return self._submit(_InFlight(w, run.id, chunk.start, len(chunk.items), args, run.name))

    def _submit(self, job: "_InFlight") -> bool:
        status = _client_status(self.client)
        if status not in ("running", "connecting", "newly-created"):
            self.events.put((job.w, ("fatal", ParallelBarError(
                f"the dask client is {status}: the run cannot go on"))))
            return False
        key = f"parallelbar-{job.name}-{self.token}-{next(self.keys)}"
        try:
            job.future = self.client.submit(*job.args, key=key, pure=False)
        except Exception as exc:
            self.events.put((job.w, ("fatal", ParallelBarError(
                f"dask refused a task: {type(exc).__name__}: {exc}"))))
            return False
        with self.futures_lock:
            self.futures[key] = job
        self.client.loop.add_callback(self._watch, key)
        return True

    def forget(self, w: Any, run_id: int) -> None:
        pass

    def stop(self, w: Any) -> None:
        pass

    def kill(self, w: Any) -> None:
        """Give up on w's futures: dask drops those not started; a running one finishes
        on its worker and its result is dropped."""
        w.gone = True
        if self.isolating is not None and self.isolating.w is w:
            self.isolating = None
        with self.futures_lock:
            mine = [k for k, job in self.futures.items() if job.w is w]
            doomed = [self.futures.pop(k).future for k in mine]
        if doomed:
            try:
                self.client.cancel(doomed)
            except Exception as exc:
                log.debug("could not cancel dask futures: %r", exc)

    force_kill = kill

    def alive(self, w: Any) -> bool:
        return not getattr(w, "gone", True)

    def exitcode(self, w: Any) -> Optional[int]:
        return None

    def release(self, w: Any) -> None:
        pass

    def slot(self, w: Any) -> Tuple[int, int, float, int]:
        return -1, -1, 0.0, 1     # deadlines are kept on the dask workers

    def counters(self, w: Any) -> Tuple[float, float]:
        return float(w.reported_done), float(w.reported_err)

    def rss(self, w: Any) -> Optional[int]:
        return None

    def wait(self, workers: List[Any], dying: List[Any], timeout: float
             ) -> List[Tuple[Any, Any]]:
        from .backends import take_all
        events = take_all(self.events, timeout)
        if not events and self.futures and not self.closing:
            status = _client_status(self.client)
            if status not in ("running", "connecting", "newly-created"):
                # A client closed under us may never report its futures: say so now.
                with self.futures_lock:
                    jobs = list(self.futures.values())
                    self.futures.clear()
                self.isolating = None
                events.append((jobs[0].w, ("fatal", ParallelBarError(
                    f"the dask client was {status} while {len(jobs)} chunk(s) of tasks were "
                    f"running: the run cannot go on"))))
        out = []
        for event in events:
            if event is None:
                continue
            if isinstance(event, _InFlight):   # a suspect, to run alone (see _emit_error)
                self.suspects.append(event)
                continue
            out.append(event)
        self._isolate()
        return out

    def _isolate(self) -> None:
        """Run the next suspect once nothing else of ours is in flight."""
        while self.suspects and self.isolating is None:
            with self.futures_lock:
                if self.futures:
                    return
            job = self.suspects.popleft()
            if job.w.gone:
                continue
            self.isolating = job
            if not self._submit(job):
                self.isolating = None

    def drain(self, w: Any, block_first: bool = False) -> List[Any]:
        return []

    def wake(self) -> None:
        self.events.put(None)

    def close(self) -> None:
        self.closing = True
        with self.futures_lock:
            left = [job.future for job in self.futures.values()]
            self.futures.clear()
        if left and _client_status(self.client) == "running":
            try:
                self.client.cancel(left)
            except Exception:
                pass
        self._close_owned()

    def _close_owned(self) -> None:
        if self.owns_client and self.client is not None:
            try:
                self.client.close(timeout=CLOSE_TIMEOUT)
            except Exception as exc:
                log.debug("closing the dask client: %r", exc)
        if self.owns_cluster and self.cluster is not None:
            try:
                self.cluster.close(timeout=CLOSE_TIMEOUT)
            except Exception as exc:
                log.warning("could not close the dask LocalCluster: %r", exc)

    # -- results (on dask's event loop) ---------------------------------------------------
    async def _watch(self, key: str) -> None:
        """Wait for one future and hand its outcome to the manager. Runs on the client's
        event loop, one per future, so a result that must be computed again (its worker
        died after it finished) holds up no other."""
        with self.futures_lock:
            job = self.futures.get(key)
        if job is None:
            return
        try:
            result = await self._gather(job)
        except BaseException as exc:   # the chunk's own failure, or cancelled
            with self.futures_lock:
                job = self.futures.pop(key, None)
            if job is self.isolating:
                self.isolating = None
            if job is not None and not self.closing:
                self._emit_error(job, exc)
            self.events.put(None)   # the manager's wait() may start a suspect now
            return
        with self.futures_lock:
            job = self.futures.pop(key, None)
            if job is self.isolating:
                self.isolating = None
        if job is not None:
            try:
                self._emit_result(job, result)
            except Exception:   # never let a bug here turn into a hang
                log.exception("parallelbar_clone: a dask result could not be read")
                self.events.put((job.w, ("fatal", ParallelBarError(
                    "internal error reading a dask result (see the log)"))))

    async def _gather(self, job: "_InFlight") -> Any:
        """The future's result. A worker that dies while its finished result is being
        fetched closes the connection (``CommClosedError``, an ``OSError``): dask then
        computes the chunk again, so fetch again rather than fail the run. (A task's own
        exceptions never come this way: ``run_remote`` returns them as values.)"""
        for attempt in itertools.count(1):
            try:
                return await self.client.gather(job.future, asynchronous=True)
            except OSError as exc:
                if (attempt > GATHER_RETRIES or self.closing
                        or _client_status(self.client) != "running"):
                    raise
                log.info("parallelbar_clone: a dask result was lost in transfer (%r); "
                         "fetching it again", exc)
                await asyncio.sleep(GATHER_PAUSE)
        raise AssertionError("unreachable")  # pragma: no cover

    def _emit_result(self, job: "_InFlight", result: Any) -> None:
        w, run_id = job.w, job.run_id
        kind, body = result
        if kind == "pieces":
            for piece in body:
                self.events.put((w, ("r", run_id) + tuple(piece)))
        elif kind == "init_error":
            self.events.put((w, ("init_error", body)))
        elif kind == "func_error":
            self.events.put((w, ("func_error", run_id, body, False)))
        elif kind == "bad":
            self.events.put((w, ("bad", run_id, job.start, job.n, body, True)))

    def _emit_error(self, job: "_InFlight", exc: BaseException) -> None:
        w, start, n = job.w, job.start, job.n
        if type(exc).__name__ == "KilledWorker":
            job.rounds += 1
            if n == 1 and job.rounds == 1:
                # dask counts a death against every task its worker held, the ones queued
                # behind the culprit too: a lone task runs once more with nothing else of
                # ours on the cluster before it is blamed.
                self.events.put(job)
                return
            address = _killed_worker_address(exc)
            allowed = getattr(exc, "allowed_failures", None)
            deaths = (f"{allowed + 1} worker deaths (distributed.scheduler.allowed-failures="
                      f"{allowed})" if isinstance(allowed, int) else "several worker deaths")
            where = f"task {start}" if n == 1 else f"one of tasks {start}..{start + n - 1}"
            rounds = (", the last time running alone (no other task of this pool on the "
                      "cluster)" if job.rounds > 1 else "")
            err = WorkerDiedError(
                f"dask worker {address} died while running {where} ({job.name}); dask gave "
                f"the task up after {deaths}{rounds}: the task ends its process (os._exit(), "
                f"a segfault in C code), or its nanny restarted it past the worker memory limit",
                task_position=start if n == 1 else None)
            err.worker_address = address  # type: ignore[attr-defined]
            self.events.put((w, ("lost", job.run_id, start, n, err)))
            return
        if isinstance(exc, asyncio.CancelledError) or type(exc).__name__.endswith("CancelledError"):
            status = _client_status(self.client)
            why = ("the dask client was closed during the run" if status in ("closing", "closed")
                   else f"dask cancelled a task of this run (the client is {status}: did it "
                        f"lose its scheduler, or did someone cancel its futures?)")
            self.events.put((w, ("fatal", ParallelBarError(why))))
            return
        text = f"{type(exc).__name__}: {exc}"
        hint = (" (is parallelbar_clone installed on the dask workers?)"
                if isinstance(exc, ImportError) else "")
        self.events.put((w, ("fatal", ParallelBarError(
            f"dask could not run a chunk of tasks: {text}{hint}"))))


class _InFlight:
    """One chunk submitted to dask: its slot, where its tasks stand, how to submit it."""

    __slots__ = ("w", "run_id", "start", "n", "args", "name", "future", "rounds")

    def __init__(self, w: Any, run_id: int, start: int, n: int, args: Tuple[Any, ...],
                 name: str) -> None:
        self.w = w
        self.run_id = run_id
        self.start = start
        self.n = n
        self.args = args
        self.name = name
        self.future: Any = None
        self.rounds = 0     # times dask gave it up (KilledWorker)
