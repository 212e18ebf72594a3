"""The checkpoint journal: finished tasks kept in an SQLite file, for resuming a run.

One row per *piece*: a contiguous run of task positions whose outcomes arrived
together (1 to ~100 000 tasks), so a million tiny tasks cost a hundred rows, not
a million. Rows are buffered and committed every ``commit_interval`` seconds (or
when the buffer grows large); the file runs in WAL mode with ``synchronous=FULL``,
so whatever was committed survives a crash or a power cut, and another process
can read the journal (:func:`load_checkpoint`) while a run is still writing it.

Layout (schema version 1)::

    meta(key TEXT PRIMARY KEY, value TEXT)      -- JSON values: 'application',
                                                -- 'schema_version', 'fingerprint',
                                                -- 'created', 'updated'
    pieces(id INTEGER PRIMARY KEY, start, n, vals BLOB, failures BLOB,
           durations BLOB, digest TEXT)         -- in the order written

``vals`` is one pickle of the whole list of values (``b'P'`` + pickle), or, when
some value needs dill, a pickled list of per-value payloads (``b'L'`` + pickle of
``[serialize.dumps(v) or None, ...]``). ``failures`` is a pickled list of
``(position, serialize.dumps(exception), traceback text, type name, str)``.
``durations`` is a packed array of doubles.
"""
from __future__ import annotations

import array
import hashlib
import json
import logging
import os
import pickle
import sqlite3
import threading
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from time import monotonic
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from . import serialize
from .errors import ParallelBarError, RemoteTraceback, SerializationError
from .outcomes import safe_text

log = logging.getLogger("parallelbar_clone")

__all__ = ["CheckpointMismatchError", "Journal", "Piece", "Checkpoint", "load_checkpoint",
           "task_digest", "has_sets"]

SCHEMA_VERSION = 1
APPLICATION = "parallelbar_clone.journal"
APPLICATION_ID = 0x50424A4C      # 'PBJL', in the SQLite header (PRAGMA application_id)
COMMIT_TASKS = 50_000            # commit when the buffer holds more tasks than this...
COMMIT_BYTES = 64 * 1024 * 1024  # ...or more encoded bytes than this
OVERWRITE_HINT = "overwrite_checkpoint=True"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_TABLES = {"meta", "pieces"}
_FMT_PICKLE = b"P"
_FMT_LIST = b"L"

PathLike = Union[str, "os.PathLike[str]"]
_Row = Tuple[int, int, bytes, Optional[bytes], Optional[bytes], Optional[str]]


# ------------------------------------------------------------------ task digests

def _canonical(obj: Any) -> Any:
    """obj with every set replaced by its sorted elements, so that equal tasks pickle to
    equal bytes in every process (set order follows string hashes, which differ from
    one interpreter to the next). Containers are walked; other objects are kept."""
    kind = type(obj)
    if kind is set or kind is frozenset:
        return ("<set>", sorted(pickle.dumps(_canonical(e), 4) for e in obj))
    if kind is list:
        return [_canonical(e) for e in obj]
    if kind is tuple:
        return tuple(_canonical(e) for e in obj)
    if kind is dict:
        return ("<dict>", [(_canonical(k), _canonical(v)) for k, v in obj.items()])
    return obj


def task_digest(items: List[Any], canonical: bool = False) -> Optional[str]:
    """A short digest of tasks' content; None if they cannot be pickled.

    Set order follows string hashes, which differ between interpreters, so a task
    holding a set of strings can digest differently in another process unless
    ``canonical`` (slower) is asked for: see :func:`has_sets`."""
    try:
        data = pickle.dumps(_canonical(items) if canonical else items, serialize.PROTOCOL)
    except Exception:
        return None
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def has_sets(obj: Any, depth: int = 6) -> bool:
    kind = type(obj)
    if kind is set or kind is frozenset:
        return True
    if depth == 0:
        return False
    if kind is list or kind is tuple:
        return any(has_sets(e, depth - 1) for e in obj)
    if kind is dict:
        return any(has_sets(k, depth - 1) or has_sets(v, depth - 1) for k, v in obj.items())
    state = getattr(obj, "__dict__", None)
    return isinstance(state, dict) and has_sets(state, depth - 1)


class CheckpointMismatchError(ParallelBarError, ValueError):
    """The checkpoint file belongs to another run (or is no journal at all)."""


@dataclass
class Piece:
    """A contiguous run of positions ``start .. start + len(values) - 1``."""

    start: int
    values: List[Any]                      # None at failed positions
    failures: Dict[int, BaseException] = field(default_factory=dict)  # absolute positions
    durations: Optional[List[float]] = None
    digest: Optional[str] = None

    @property
    def end(self) -> int:
        """One past the last position."""
        return self.start + len(self.values)


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns: the merged outcomes of a journal."""

    path: str
    fingerprint: Dict[str, Any]
    results: Dict[int, Any]                 # position -> value, successful tasks only
    failures: Dict[int, BaseException]      # position -> exception (with .traceback)
    durations: Dict[int, float]             # position -> seconds, where journalled
    created: Optional[datetime] = None      # when the journal was started (UTC)
    updated: Optional[datetime] = None      # when it was last committed to (UTC)

    def __len__(self) -> int:
        return len(self.results) + len(self.failures)

    @property
    def total(self) -> Optional[int]:
        total = self.fingerprint.get("total")
        return total if isinstance(total, int) else None

    def __repr__(self) -> str:
        total = self.total
        return (f"Checkpoint({self.path!r}: {_plural(len(self.results), 'result')}, "
                f"{_plural(len(self.failures), 'failure')}, "
                f"total {total if total is not None else 'unknown'})")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --------------------------------------------------------------------------- helpers

def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _parse_time(text: Any) -> Optional[datetime]:
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def _normalize_fingerprint(fingerprint: Mapping[str, Any]) -> Tuple[Dict[str, Any], str]:
    """(the fingerprint as it will read back, its JSON text)."""
    try:
        text = _json(dict(fingerprint))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the checkpoint fingerprint must be a dict of JSON values with str "
                        f"keys: {exc}") from None
    return json.loads(text), text


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _fingerprint_diff(path: str, stored: Dict[str, Any], wanted: Dict[str, Any]) -> str:
    absent = object()
    lines = []
    for key in sorted(set(stored) | set(wanted), key=str):
        old, new = stored.get(key, absent), wanted.get(key, absent)
        if old is absent or new is absent or _json(old) != _json(new):  # 1 is not True here
            show_old = "(absent)" if old is absent else repr(old)
            show_new = "(absent)" if new is absent else repr(new)
            lines.append(f"  {key}: journal has {show_old}, this run has {show_new}")
    return (f"checkpoint {path!r} was written by a different run; these differ:\n"
            + "\n".join(lines)
            + f"\nPass {OVERWRITE_HINT} to discard it and start afresh, or use another "
              f"checkpoint path.")


def _only_line(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception_only(type(exc), exc))
    except Exception:
        return f"{type(exc).__name__}\n"


def _dump_value(value: Any) -> Tuple[Optional[bytes], Optional[str]]:
    """(serialize-format bytes, None) or (None, why it cannot be stored)."""
    try:
        return _FMT_PICKLE + pickle.dumps(value, serialize.PROTOCOL), None
    except Exception as exc:
        pickle_problem = f"{type(exc).__name__}: {exc}"
    try:
        return serialize._DILL + serialize.dill_dumps(value), None
    except Exception as exc:
        dill_problem = f"{type(exc).__name__}: {exc}"
    return None, f"pickle: {pickle_problem}; dill: {dill_problem}"


def _encode_values(values: List[Any], start: int
                   ) -> Tuple[bytes, Dict[int, BaseException]]:
    """Encode a piece's values; values that neither pickle nor dill can store come
    back as ``{position: SerializationError}`` (and are stored as None)."""
    try:
        return _FMT_PICKLE + pickle.dumps(values, serialize.PROTOCOL), {}
    except Exception:
        pass
    items: List[Optional[bytes]] = []
    errors: Dict[int, BaseException] = {}
    for i, value in enumerate(values):
        data, problem = _dump_value(value)
        if data is None:
            err = SerializationError(
                f"the result of task {start + i}, of type {serialize.describe(value)}, cannot "
                f"be stored in the checkpoint journal ({problem})")
            err.traceback = _only_line(err)  # type: ignore[attr-defined]
            errors[start + i] = err
        items.append(data)
    return _FMT_LIST + pickle.dumps(items, serialize.PROTOCOL), errors


def _pack_failure(pos: int, exc: Any) -> Tuple[int, bytes, str, str, str]:
    if hasattr(exc, "pack") and not isinstance(exc, BaseException):   # an outcomes.Failure
        return (pos,) + tuple(exc.pack())  # type: ignore[return-value]
    tb = getattr(exc, "traceback", None)
    if not isinstance(tb, str) or not tb:
        tb = _only_line(exc)
    name, text = serialize.describe(exc), safe_text(exc)
    try:
        data = serialize.dumps(exc)
        serialize.loads(data)  # many exceptions pickle fine but fail to unpickle
    except Exception as problem:
        data = serialize.dumps(SerializationError(
            f"the task raised {name}: {text!r}, which cannot be stored in the checkpoint "
            f"journal ({type(problem).__name__}: {problem})"))
    return pos, data, tb, name, text


def _restore_failure(packed: Tuple[int, bytes, str, str, str]) -> Tuple[int, BaseException]:
    pos, data, tb, name, text = packed
    try:
        exc = serialize.loads(data)
        if not isinstance(exc, BaseException):
            raise TypeError(f"found {serialize.describe(exc)}, not an exception")
    except Exception as problem:
        exc = SerializationError(
            f"the task raised {name}: {text!r}, which could not be loaded back from the "
            f"checkpoint journal ({type(problem).__name__}: {problem})")
    try:
        exc.traceback = tb  # type: ignore[attr-defined]
    except Exception:
        pass
    if exc.__cause__ is None and tb.startswith("Traceback"):
        exc.__cause__ = RemoteTraceback(tb)  # as the engine does with a worker's traceback
    return pos, exc


def _unloadable(pos: int, problem: BaseException) -> BaseException:
    exc = SerializationError(
        f"the result of task {pos} is in the checkpoint journal but could not be loaded "
        f"back ({type(problem).__name__}: {problem})")
    exc.traceback = _only_line(exc)  # type: ignore[attr-defined]
    return exc


def _decode_row(start: int, n: int, vals: bytes, failures: Optional[bytes],
                durations: Optional[bytes], digest: Optional[str]) -> Piece:
    fails: Dict[int, BaseException] = {}
    if failures is not None:
        fails = dict(_restore_failure(p) for p in pickle.loads(failures))
    fmt, body = vals[:1], memoryview(vals)[1:]
    values: List[Any]
    try:
        loaded = pickle.loads(body)
    except Exception as problem:  # e.g. a class the reader cannot import
        values = [None] * n
        for i in range(n):
            fails.setdefault(start + i, _unloadable(start + i, problem))
    else:
        if fmt == _FMT_LIST:
            values = []
            for i, data in enumerate(loaded):
                if data is None:
                    values.append(None)
                    continue
                try:
                    values.append(serialize.loads(data))
                except Exception as problem:
                    values.append(None)
                    fails.setdefault(start + i, _unloadable(start + i, problem))
        else:
            values = loaded
            for i, value in enumerate(values):   # a worker's blob: values dill carried
                if isinstance(value, serialize.Dilled):
                    try:
                        values[i] = value.load()
                    except Exception as problem:
                        values[i] = None
                        fails.setdefault(start + i, _unloadable(start + i, problem))
    dur: Optional[List[float]] = None
    if durations is not None:
        arr = array.array("d")
        arr.frombytes(durations)
        dur = arr.tolist()
    return Piece(start, values, fails, dur, digest)


def _file_kind(path: str) -> str:
    """'missing', 'empty', 'sqlite' or 'other'."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return "missing"
    if not head:
        return "empty"
    return "sqlite" if head == _SQLITE_MAGIC else "other"


def _not_a_journal(path: str, why: str) -> CheckpointMismatchError:
    return CheckpointMismatchError(
        f"{path!r} is not a parallelbar_clone checkpoint journal ({why}); refusing to touch "
        f"it. Use another checkpoint path, or delete the file yourself if it is not needed.")


def _damaged(path: str, exc: BaseException) -> CheckpointMismatchError:
    return CheckpointMismatchError(
        f"checkpoint {path!r} is damaged (SQLite says: {exc}); it cannot be resumed from. "
        f"Pass overwrite_checkpoint=True to start afresh, or use another path (keep the "
        f"damaged file if you want to try `sqlite3 {os.path.basename(path)} .recover`)")


def _read_meta(conn: sqlite3.Connection) -> Dict[str, Any]:
    meta = {}
    for key, value in conn.execute("SELECT key, value FROM meta"):
        try:
            meta[key] = json.loads(value)
        except (TypeError, ValueError):
            meta[key] = value
    return meta


def _inspect(conn: sqlite3.Connection, path: str) -> Optional[Dict[str, Any]]:
    """None for an empty database; the meta dict of a journal (its tables under the key
    ``'.tables'``); raises for anything else."""
    tables = {name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if not tables and app_id in (0, APPLICATION_ID):
        return None
    if app_id != APPLICATION_ID or "meta" not in tables:
        shown = ", ".join(sorted(tables)) or "none"
        raise _not_a_journal(path, f"an SQLite database with tables: {shown}")
    try:
        meta = _read_meta(conn)
    except sqlite3.OperationalError:  # a 'meta' table of another shape
        meta = {}
    version = meta.get("schema_version")
    if (meta.get("application") != APPLICATION or not isinstance(version, int)
            or (version == SCHEMA_VERSION and tables != _TABLES)):
        raise _not_a_journal(path, "its metadata or tables are missing or damaged")
    meta[".tables"] = sorted(tables)
    return meta


def _check_version(meta: Dict[str, Any], path: str) -> None:
    version = meta["schema_version"]
    if version > SCHEMA_VERSION:
        raise CheckpointMismatchError(
            f"checkpoint {path!r} was written by a newer parallelbar_clone (journal schema "
            f"version {version}; this version reads version {SCHEMA_VERSION}). Upgrade "
            f"parallelbar_clone to resume it, or pass {OVERWRITE_HINT} to start afresh.")
    if version < SCHEMA_VERSION:
        raise CheckpointMismatchError(
            f"checkpoint {path!r} uses journal schema version {version}, which this "
            f"parallelbar_clone (version {SCHEMA_VERSION}) cannot read. Pass "
            f"{OVERWRITE_HINT} to start afresh.")


# --------------------------------------------------------------------------- writer

class Journal:
    """Appends pieces of finished tasks to a checkpoint file.

    Created in one thread and then used from one other thread (the engine's
    manager thread); a lock keeps a stray call from another thread (``close`` at
    exit, say) safe all the same.
    """

    def __init__(self, path: PathLike, fingerprint: Mapping[str, Any], *,
                 overwrite: bool = False, commit_interval: float = 0.25,
                 background: bool = False) -> None:
        """``background=True`` commits from a thread of its own, every
        ``commit_interval``, so that ``add`` never waits for the disk; a write error
        there is raised by the next ``add``, ``flush`` or ``close``."""
        self.path = os.fspath(path)
        self.fingerprint, fp_text = _normalize_fingerprint(fingerprint)
        self.commit_interval = float(commit_interval)
        # Lock order: _conn_lock (any use of the connection) before _lock (the buffer).
        self._lock = threading.RLock()
        self._conn_lock = threading.RLock()
        self._flusher: Optional[threading.Thread] = None
        self._wake = threading.Event()
        self._stopping = False
        self._error: Optional[BaseException] = None
        self._buffer: List[_Row] = []
        self._pending: List[Tuple[Any, ...]] = []   # (background) pieces not yet encoded
        self._buffered_tasks = 0
        self._buffered_bytes = 0
        self._conn: Optional[sqlite3.Connection] = None

        kind = _file_kind(self.path)
        if kind == "other":
            raise _not_a_journal(self.path, "not an SQLite database")
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"cannot create checkpoint {self.path!r}: the folder "
                                    f"{folder!r} does not exist")
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                               check_same_thread=False)
        try:
            self._open(conn, fp_text, overwrite)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        limit = None
        if hasattr(conn, "getlimit"):
            limit = conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        self._max_blob = min(limit or 1_000_000_000, 1_000_000_000) - 1024
        self._last_commit = monotonic()
        if background:
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name="parallelbar-journal")
            self._flusher.start()

    def _flush_loop(self) -> None:
        from .zygote import FORK_GATE
        FORK_GATE.register()
        try:
            while not self._stopping:
                self._wake.wait(self.commit_interval)
                self._wake.clear()
                try:
                    with FORK_GATE.working():  # no SQLite lock held while a zygote forks
                        self.flush()
                except BaseException as exc:  # kept for the engine's next call
                    self._error = exc
                    return
        finally:
            FORK_GATE.unregister()

    def _open(self, conn: sqlite3.Connection, fp_text: str, overwrite: bool) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                meta = _inspect(conn, self.path)
                if meta is not None and not overwrite:
                    _check_version(meta, self.path)
                    stored = meta.get("fingerprint")
                    if not isinstance(stored, dict):
                        stored = {}
                    if _json(stored) != fp_text:
                        raise CheckpointMismatchError(
                            _fingerprint_diff(self.path, stored, self.fingerprint))
                    self.created = _parse_time(meta.get("created"))
                else:
                    if meta is not None:
                        for table in meta[".tables"]:
                            conn.execute(f'DROP TABLE "{table}"')
                    self._create(conn, fp_text)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if meta is not None and overwrite:
                try:
                    conn.execute("VACUUM")  # give the old journal's space back
                except sqlite3.Error:
                    pass
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self.wal = str(mode).lower() == "wal"  # False on file systems without shared memory
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.OperationalError:  # locked, I/O error...: not the file's fault
            raise
        except sqlite3.DatabaseError as exc:  # not a database, malformed
            raise _not_a_journal(self.path, f"SQLite says: {exc}") from exc

    def _create(self, conn: sqlite3.Connection, fp_text: str) -> None:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("CREATE TABLE pieces (id INTEGER PRIMARY KEY, start INTEGER NOT NULL, "
                     "n INTEGER NOT NULL, vals BLOB NOT NULL, failures BLOB, durations BLOB, "
                     "digest TEXT)")
        now = _now()
        self.created = _parse_time(now)
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
            ("application", json.dumps(APPLICATION)),
            ("schema_version", json.dumps(SCHEMA_VERSION)),
            ("fingerprint", fp_text),
            ("created", json.dumps(now)),
            ("updated", json.dumps(now)),
        ])

    # ------------------------------------------------------------------ reading

    def pieces(self) -> List[Piece]:
        """Everything journalled so far (buffered pieces are committed first), in the
        order written; later pieces override earlier ones for the same position."""
        with self._conn_lock:
            self.flush()
            try:
                rows = self._require().execute("SELECT start, n, vals, failures, durations, "
                                               "digest FROM pieces ORDER BY id").fetchall()
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
                    raise
                raise _damaged(self.path, exc) from exc
        return [_decode_row(*row) for row in rows]

    # ------------------------------------------------------------------ writing

    def add(self, start: int, values: Optional[List[Any]],
            failures: Optional[Mapping[int, Any]],
            durations: Optional[List[float]] = None,
            digest: Optional[str] = None,
            pickled: Optional[bytes] = None, *, n: Optional[int] = None,
            items: Optional[List[Any]] = None) -> Dict[int, BaseException]:
        """Buffer a piece: ``values[i]`` is the outcome of position ``start + i``;
        ``failures`` maps absolute positions to exceptions (or ``outcomes.Failure``
        records). ``pickled``, if given, is ``pickle.dumps(values)`` with None at
        failed positions, made already (by a worker): it is stored as is, and
        ``values`` may be None (give ``n``). ``items``: the tasks, for their digest
        when ``digest`` is not given.

        Synchronous journals encode at once and return the positions whose values
        could not be stored, each with a :class:`SerializationError` (journalled as
        that position's failure). With ``background=True`` the encoding (which may
        run the caller's ``__reduce__``) happens in the journal's thread, and such a
        value is journalled as a failure while the run keeps it: ``{}`` is returned."""
        if values is None:
            if pickled is None or n is None:
                raise ValueError("give the values, or their pickle and n")
            values = [None] * n
        values = list(values)
        n = len(values)
        if durations is not None and len(durations) != n:
            raise ValueError(f"{len(durations)} durations for a piece of {n} tasks")
        if failures:
            stray = [p for p in failures if not start <= p < start + n]
            if stray:
                raise ValueError(f"failure positions {stray[:5]} lie outside the piece "
                                 f"{start}..{start + n - 1}")
        if n == 0:
            return {}
        if self._error is not None:
            raise self._error
        if self._flusher is not None:   # encode in the journal's thread, not the caller's
            with self._lock:
                self._require()
                self._pending.append((start, values, dict(failures or {}),
                                      None if durations is None else list(durations), digest,
                                      pickled, items))
                self._buffered_tasks += n
                self._buffered_bytes += len(pickled) if pickled is not None else 64 * n
                due = (self._buffered_tasks > COMMIT_TASKS or self._buffered_bytes > COMMIT_BYTES
                       or monotonic() - self._last_commit >= self.commit_interval)
            if due:
                self._wake.set()
            return {}
        if digest is None and items is not None:
            digest = task_digest(items)
        with self._lock:
            self._require()
            rows, errors = self._encode(start, values, dict(failures or {}),
                                        None if durations is None else list(durations), digest,
                                        pickled)
            for row in rows:
                self._buffer.append(row)
                self._buffered_tasks += row[1]
                self._buffered_bytes += len(row[2]) + len(row[3] or b"") + len(row[4] or b"")
            due = (self._buffered_tasks > COMMIT_TASKS or self._buffered_bytes > COMMIT_BYTES
                   or monotonic() - self._last_commit >= self.commit_interval)
        if due:
            if self._flusher is not None:
                self._wake.set()
            else:
                self.flush()
        return errors

    def _encode(self, start: int, values: List[Any], failures: Dict[int, BaseException],
                durations: Optional[List[float]], digest: Optional[str],
                pickled: Optional[bytes] = None
                ) -> Tuple[List[_Row], Dict[int, BaseException]]:
        if pickled is not None and len(pickled) < self._max_blob:
            vals, errors = _FMT_PICKLE + pickled, {}
        else:
            if failures:
                values = [None if start + i in failures else v for i, v in enumerate(values)]
            vals, errors = _encode_values(values, start)
        n = len(values)
        if len(vals) > self._max_blob:
            if n > 1:  # too big for one SQLite blob: store it as two rows
                half = n // 2
                rows, errors = self._encode(
                    start, values[:half], {p: e for p, e in failures.items() if p < start + half},
                    None if durations is None else durations[:half], None)
                more_rows, more_errors = self._encode(
                    start + half, values[half:],
                    {p: e for p, e in failures.items() if p >= start + half},
                    None if durations is None else durations[half:], None)
                errors.update(more_errors)
                return rows + more_rows, errors
            err = SerializationError(
                f"the result of task {start}, of type {serialize.describe(values[0])}, is too "
                f"large to store in the checkpoint journal ({len(vals)} bytes pickled)")
            err.traceback = _only_line(err)  # type: ignore[attr-defined]
            errors = {start: err}
            vals = _FMT_PICKLE + pickle.dumps([None], serialize.PROTOCOL)
        if errors:
            failures = {**failures, **errors}
        fail_blob = None
        if failures:
            fail_blob = pickle.dumps([_pack_failure(p, e) for p, e in sorted(failures.items())],
                                     serialize.PROTOCOL)
        dur_blob = None
        if durations is not None:
            dur_blob = array.array("d", durations).tobytes()
        return [(start, n, vals, fail_blob, dur_blob, digest)], errors

    def _encode_pending(self) -> None:
        """Encode pieces buffered by a background journal (in the thread that flushes)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for start, values, failures, durations, digest, pickled, items in pending:
            if digest is None and items is not None:
                digest = task_digest(items)
            rows, errors = self._encode(start, values, failures, durations, digest, pickled)
            if errors:
                log.warning("results of tasks %s cannot be stored in the checkpoint journal; "
                            "they are journalled as failures (run again on resume)",
                            sorted(errors))
            with self._lock:
                self._buffer.extend(rows)

    def flush(self) -> None:
        """Commit what is buffered."""
        with self._conn_lock:
            self._encode_pending()
            with self._lock:
                conn = self._require()
                rows, self._buffer = self._buffer, []
                self._buffered_tasks = self._buffered_bytes = 0
            if not rows:
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT INTO pieces (start, n, vals, failures, durations, digest)"
                                 " VALUES (?, ?, ?, ?, ?, ?)", rows)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'updated'",
                             (json.dumps(_now()),))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                with self._lock:  # keep them for a later try
                    self._buffer[:0] = rows
                    self._buffered_tasks += sum(r[1] for r in rows)
                raise
            self._last_commit = monotonic()

    def close(self) -> None:
        """Flush and close; closing again does nothing."""
        if self._flusher is not None:
            self._stopping = True
            self._wake.set()
            if self._flusher is not threading.current_thread():
                self._flusher.join()
        with self._conn_lock:
            conn = self._conn
            if conn is None:
                return
            try:
                self.flush()
            finally:
                with self._lock:
                    self._conn = None
                conn.close()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    @property
    def closed(self) -> bool:
        return self._conn is None

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"the checkpoint journal {self.path!r} is closed")
        return self._conn

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else f"{self._buffered_tasks} tasks buffered"
        return f"Journal({self.path!r}, {state})"


# --------------------------------------------------------------------------- reader

def _read(path: str, flags: str) -> Tuple[Dict[str, Any], List[tuple]]:
    uri = Path(path).absolute().as_uri() + flags
    conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
    try:
        conn.execute("BEGIN")  # one snapshot for the metadata and the pieces
        meta = _inspect(conn, path)
        if meta is None:
            raise _not_a_journal(path, "an empty SQLite database")
        _check_version(meta, path)
        try:
            rows = conn.execute("SELECT start, n, vals, failures, durations, digest "
                                "FROM pieces ORDER BY id").fetchall()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
                raise
            raise _damaged(path, exc) from exc
        conn.execute("COMMIT")
    finally:
        conn.close()
    return meta, rows


def load_checkpoint(path: PathLike) -> Checkpoint:
    """Read a checkpoint journal without changing it, merging its pieces (later
    ones win). Works while another process is still writing it."""
    path = os.fspath(path)
    kind = _file_kind(path)
    if kind == "missing":
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    if kind != "sqlite":
        raise _not_a_journal(path, "not an SQLite database" if kind == "other" else "empty file")
    try:
        try:
            meta, rows = _read(path, "?mode=ro")
        except sqlite3.OperationalError:
            # e.g. a read-only folder, where SQLite cannot make the WAL's shared-memory
            # file: read the file as it stands, which is safe only when no writer is
            # active (no write-ahead log beside it)
            if os.path.exists(path + "-wal"):
                raise
            meta, rows = _read(path, "?mode=ro&immutable=1")
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as exc:
        raise _not_a_journal(path, f"SQLite says: {exc}") from exc

    results: Dict[int, Any] = {}
    failures: Dict[int, BaseException] = {}
    durations: Dict[int, float] = {}
    for row in rows:
        piece = _decode_row(*row)
        _merge(piece, results, failures, durations)
    fingerprint = meta.get("fingerprint")
    return Checkpoint(path, fingerprint if isinstance(fingerprint, dict) else {},
                      results, failures, durations,
                      _parse_time(meta.get("created")), _parse_time(meta.get("updated")))


def _merge(piece: Piece, results: Dict[int, Any], failures: Dict[int, BaseException],
           durations: Dict[int, float]) -> None:
    start, end = piece.start, piece.end
    positions = range(start, end)
    if failures:  # an earlier failure here is overridden
        if len(failures) < len(positions):
            for pos in [p for p in failures if start <= p < end]:
                del failures[pos]
        else:
            for pos in positions:
                failures.pop(pos, None)
    results.update(zip(positions, piece.values))
    for pos, exc in piece.failures.items():
        results.pop(pos, None)
        failures[pos] = exc
    if piece.durations is not None:
        durations.update(zip(positions, piece.durations))
    elif durations:
        for pos in positions:
            durations.pop(pos, None)
