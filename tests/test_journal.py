"""The checkpoint journal (parallelbar_clone.journal): storage, batching, crash safety."""
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from parallelbar_clone.errors import ParallelBarError, SerializationError
from parallelbar_clone.journal import (COMMIT_TASKS, CheckpointMismatchError, Checkpoint,
                                       Journal, Piece, load_checkpoint)

FP = {"function": "mod.f", "code": "abc123", "total": 100, "head": "d1g35t", "mode": "map"}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Custom(Exception):
    """Picklable: its only argument is the message."""


class TwoArgs(Exception):
    """Pickles, but cannot be unpickled (its __init__ wants two arguments)."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


def failed(exc, tb="Traceback (most recent call last):\n  File \"x.py\", line 1\nboom\n"):
    exc.traceback = tb
    return exc


def make_gen():
    yield 1


def run_child(code, *args, env=None):
    """Start `python -c code args...` with the library importable."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=env)


# --------------------------------------------------------------------------- round trips

def test_round_trip_values(tmp_path):
    path = tmp_path / "cp.sqlite"
    big = b"\x00\xff" * 5_000_000
    values = [None, 0, -1, 2 ** 100, 1.5, "", "héllo wörld ✓ 🚀 漢字", big,
              list(range(100_000)), {"a": (1, 2), "b": {3}}, b"bytes", True]
    with Journal(path, FP) as j:
        assert j.add(0, values, None) == {}
        assert j.add(len(values), ["tail"], {}) == {}
        pieces = j.pieces()
    assert [p.start for p in pieces] == [0, len(values)]
    assert pieces[0].values == values
    assert pieces[0].failures == {} and pieces[0].durations is None and pieces[0].digest is None

    cp = load_checkpoint(path)
    assert isinstance(cp, Checkpoint)
    assert cp.results == {**dict(enumerate(values)), len(values): "tail"}
    assert cp.results[7] == big
    assert cp.failures == {} and cp.durations == {}
    assert cp.fingerprint == FP and cp.path == str(path)
    assert len(cp) == len(values) + 1

    # reopening with the same fingerprint keeps everything and appends after it
    with Journal(path, dict(FP)) as j:
        assert [p.values for p in j.pieces()] == [values, ["tail"]]
        j.add(100, [1], None)
    assert len(load_checkpoint(path)) == len(values) + 2


def test_dill_only_values_round_trip(tmp_path):
    path = tmp_path / "cp.sqlite"
    offset = 10
    with Journal(path, FP) as j:
        assert j.add(0, [lambda x: x + 1, 5, (lambda y: y * offset)], None) == {}
    cp = load_checkpoint(path)
    assert cp.results[0](1) == 2
    assert cp.results[1] == 5
    assert cp.results[2](3) == 30

    # and another process can read them too
    child = run_child("""
        import sys
        from parallelbar_clone.journal import load_checkpoint
        cp = load_checkpoint(sys.argv[1])
        print(cp.results[0](41), cp.results[2](4))
    """, path)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.split() == ["42", "40"]


def test_fingerprint_and_timestamps(tmp_path):
    path = tmp_path / "cp.sqlite"
    fp = {"function": "m.f", "total": None, "note": "ünïcode", "list": [1, 2], "flag": True}
    Journal(path, fp).close()
    cp = load_checkpoint(path)
    assert cp.fingerprint == fp
    assert cp.created is not None and cp.updated is not None and cp.updated >= cp.created
    with pytest.raises(TypeError, match="JSON"):
        Journal(tmp_path / "other.sqlite", {"x": object()})


def test_durations_and_digest(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP) as j:
        j.add(0, [1, 2, 3], None, durations=[0.5, 1.25, 3.0], digest="abc")
        j.add(3, [4], None)
        with pytest.raises(ValueError):
            j.add(4, [1, 2], None, durations=[1.0])
    p0, p1 = Journal(path, FP).pieces()
    assert p0.durations == [0.5, 1.25, 3.0] and p0.digest == "abc"
    assert p1.durations is None and p1.digest is None
    assert load_checkpoint(path).durations == {0: 0.5, 1: 1.25, 2: 3.0}


# --------------------------------------------------------------------------- failures

def test_failures_keep_type_message_and_traceback(tmp_path):
    path = tmp_path / "cp.sqlite"
    tb = "Traceback (most recent call last):\n  File \"task.py\", line 3, in f\nValueError: bad\n"
    failures = {
        11: failed(ValueError("bad"), tb),
        12: failed(Custom("custom message ü")),
        13: KeyError("no traceback attribute"),
        14: failed(TwoArgs("x", "y")),
    }
    with Journal(path, FP) as j:
        errors = j.add(10, ["ok", "v11", None, None, None, "ok15"], failures)
    assert errors == {}
    cp = load_checkpoint(path)
    assert cp.results == {10: "ok", 15: "ok15"}
    assert sorted(cp.failures) == [11, 12, 13, 14]

    e11 = cp.failures[11]
    assert type(e11) is ValueError and str(e11) == "bad"
    assert e11.traceback == tb
    assert tb.strip() in str(e11.__cause__)
    e12 = cp.failures[12]
    assert type(e12) is Custom and e12.args == ("custom message ü",)
    assert "boom" in e12.traceback
    e13 = cp.failures[13]
    assert type(e13) is KeyError and isinstance(e13.traceback, str) and "KeyError" in e13.traceback
    e14 = cp.failures[14]  # would not unpickle: replaced, naming its type and message
    assert isinstance(e14, SerializationError)
    assert "TwoArgs" in str(e14) and "x/y" in str(e14)
    assert "boom" in e14.traceback

    piece, = Journal(path, FP).pieces()
    assert piece.values == ["ok", None, None, None, None, "ok15"]  # None at failed positions
    assert set(piece.failures) == {11, 12, 13, 14}


def test_failure_positions_must_lie_in_the_piece(tmp_path):
    with Journal(tmp_path / "cp.sqlite", FP) as j:
        with pytest.raises(ValueError, match="outside"):
            j.add(0, [1, 2], {5: ValueError()})


def test_unstorable_value_becomes_a_per_task_error(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP, commit_interval=0) as j:
        errors = j.add(20, [1, make_gen(), lambda: 3, None], None)
    assert list(errors) == [21]
    err = errors[21]
    assert isinstance(err, SerializationError) and isinstance(err, pickle.PicklingError)
    assert "generator" in str(err)
    cp = load_checkpoint(path)
    assert 21 not in cp.results
    assert cp.results[20] == 1 and cp.results[22]() == 3 and cp.results[23] is None
    assert isinstance(cp.failures[21], SerializationError) and "generator" in str(cp.failures[21])
    assert isinstance(cp.failures[21].traceback, str)


def test_later_piece_overrides_earlier_outcome(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP) as j:
        j.add(0, [0, None, 2, 3], {1: failed(ValueError("first try"))},
              durations=[1.0, 2.0, 3.0, 4.0])
        j.add(1, ["retried"], None)                                  # failure -> success
        j.add(2, [None], {2: failed(RuntimeError("now failing"))})   # success -> failure
        j.add(3, ["again"], None, durations=[9.0])
    cp = load_checkpoint(path)
    assert cp.results == {0: 0, 1: "retried", 3: "again"}
    assert list(cp.failures) == [2] and str(cp.failures[2]) == "now failing"
    assert cp.durations == {0: 1.0, 3: 9.0}  # a new outcome without a duration drops the old one
    assert len(cp) == 4
    assert [p.start for p in Journal(path, FP).pieces()] == [0, 1, 2, 3]


def test_value_the_reader_cannot_load_becomes_a_failure(tmp_path):
    path = tmp_path / "cp.sqlite"
    child = run_child("""
        import sys
        from parallelbar_clone.journal import Journal
        class Local:                       # lives in the child's __main__ only
            pass
        with Journal(sys.argv[1], {"total": 3}) as j:
            j.add(0, [Local(), Local()], None)
            j.add(2, ["plain"], None)
    """, path)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    cp = load_checkpoint(path)
    assert cp.results == {2: "plain"}
    assert sorted(cp.failures) == [0, 1]
    assert isinstance(cp.failures[0], SerializationError)
    assert "could not be loaded" in str(cp.failures[0])


# --------------------------------------------------------------------------- refusing files

def test_fingerprint_mismatch_names_every_differing_key(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP) as j:
        j.add(0, [1], None)
    other = dict(FP, code="zzz999", total=200, extra="new")
    del other["mode"]
    with pytest.raises(CheckpointMismatchError) as info:
        Journal(path, other)
    exc = info.value
    assert isinstance(exc, ValueError) and isinstance(exc, ParallelBarError)
    text = str(exc)
    assert str(path) in text and "overwrite_checkpoint=True" in text
    for needle in ("code", "'abc123'", "'zzz999'", "total", "100", "200",
                   "extra", "'new'", "mode", "'map'"):
        assert needle in text, needle
    for same in ("function", "head"):
        assert f"{same}:" not in text
    assert load_checkpoint(path).results == {0: 1}  # untouched

    # compared as JSON: 100.0 is not 100 (nor True 1)
    with pytest.raises(CheckpointMismatchError, match=r"journal has 100, this run has 100\.0"):
        Journal(path, dict(FP, total=100.0))


def test_overwrite_wipes(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP) as j:
        j.add(0, list(range(1000)), None)
    new = dict(FP, total=7)
    with Journal(path, new, overwrite=True) as j:
        assert j.pieces() == []
        j.add(0, ["fresh"], None)
    cp = load_checkpoint(path)
    assert cp.fingerprint == new and cp.results == {0: "fresh"} and cp.failures == {}
    # overwrite with the same fingerprint wipes as well
    Journal(path, new, overwrite=True).close()
    assert len(load_checkpoint(path)) == 0


@pytest.mark.parametrize("overwrite", [False, True])
def test_non_journal_files_are_refused_and_kept(tmp_path, overwrite):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("precious data\n")
    with pytest.raises(CheckpointMismatchError, match="not a parallelbar_clone checkpoint"):
        Journal(text_file, FP, overwrite=overwrite)
    assert text_file.read_text() == "precious data\n"
    with pytest.raises(CheckpointMismatchError):
        load_checkpoint(text_file)

    db = tmp_path / "other.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE people (name TEXT)")
    conn.execute("INSERT INTO people VALUES ('ada')")
    conn.commit()
    conn.close()
    with pytest.raises(CheckpointMismatchError, match="people"):
        Journal(db, FP, overwrite=overwrite)
    with pytest.raises(CheckpointMismatchError):
        load_checkpoint(db)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT name FROM people").fetchall() == [("ada",)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not even converted
    conn.close()


def test_empty_file_becomes_a_journal(tmp_path):
    path = tmp_path / "empty.sqlite"
    path.write_bytes(b"")
    with pytest.raises(CheckpointMismatchError):
        load_checkpoint(path)
    Journal(path, FP).close()
    assert load_checkpoint(path).fingerprint == FP


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.sqlite")
    with pytest.raises(FileNotFoundError):
        Journal(tmp_path / "no" / "such" / "folder.sqlite", FP)


def test_future_schema_version_is_refused(tmp_path):
    path = tmp_path / "cp.sqlite"
    Journal(path, FP).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(CheckpointMismatchError, match="newer.*version 99"):
        Journal(path, FP)
    with pytest.raises(CheckpointMismatchError, match="newer"):
        load_checkpoint(path)
    Journal(path, FP, overwrite=True).close()  # but may be started afresh
    assert load_checkpoint(path).fingerprint == FP


def test_journal_settings(tmp_path):
    path = tmp_path / "cp.sqlite"
    j = Journal(path, FP)
    assert j._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert j._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    j.close()


# --------------------------------------------------------------------------- lifecycle

def test_close_is_idempotent_and_flushes(tmp_path):
    path = tmp_path / "cp.sqlite"
    j = Journal(path, FP, commit_interval=1e9)
    j.add(0, [1, 2], None)
    assert len(load_checkpoint(path)) == 0  # still buffered
    j.close()
    j.close()
    assert j.closed
    assert load_checkpoint(path).results == {0: 1, 1: 2}
    with pytest.raises(ValueError, match="closed"):
        j.add(2, [3], None)
    with pytest.raises(ValueError, match="closed"):
        j.pieces()


def test_created_in_one_thread_used_in_another(tmp_path):
    path = tmp_path / "cp.sqlite"
    j = Journal(path, FP, commit_interval=0)
    problems = []

    def manager():
        try:
            for k in range(10):
                j.add(k * 10, list(range(k * 10, k * 10 + 10)), None)
            j.flush()
            assert len(j.pieces()) == 10
            j.close()
        except BaseException as exc:  # pragma: no cover - reported below
            problems.append(exc)

    t = threading.Thread(target=manager)
    t.start()
    t.join(60)
    assert not problems, problems
    assert load_checkpoint(path).results == {i: i for i in range(100)}


def test_checkpoint_repr_and_len(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, dict(FP, total=1000)) as j:
        j.add(0, list(range(950)), None)
        j.add(950, [None] * 4, {950 + i: failed(ValueError(i)) for i in range(3)})
    cp = load_checkpoint(path)
    assert len(cp) == 954
    assert repr(cp) == f"Checkpoint({str(path)!r}: 951 results, 3 failures, total 1000)"
    with Journal(tmp_path / "b.sqlite", {"function": "f"}) as j:
        j.add(0, [1], None)
    assert repr(load_checkpoint(tmp_path / "b.sqlite")).endswith(
        ": 1 result, 0 failures, total unknown)")


def test_awkward_path_characters(tmp_path):
    folder = tmp_path / "we ird #%?&= ü"
    folder.mkdir()
    path = folder / "cp?.sqlite"
    with Journal(path, FP) as j:
        j.add(0, ["x"], None)
    assert load_checkpoint(path).results == {0: "x"}
    assert load_checkpoint(str(path)).results == {0: "x"}


def test_piece_too_big_for_one_blob_is_split(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP) as j:
        j._max_blob = 4000
        errors = j.add(0, [b"x" * 1000] * 10 + [b"y" * 5000], {3: ValueError("v")},
                       durations=[float(i) for i in range(11)], digest="dig")
    assert list(errors) == [10] and "too large" in str(errors[10])
    pieces = Journal(path, FP).pieces()
    assert len(pieces) > 1
    assert [p.start for p in pieces] == sorted(p.start for p in pieces)
    cp = load_checkpoint(path)
    assert cp.results == {i: b"x" * 1000 for i in range(10) if i != 3}
    assert sorted(cp.failures) == [3, 10]
    assert cp.durations == {i: float(i) for i in range(11)}


# --------------------------------------------------------------------------- batching

def test_reader_sees_only_committed_pieces_while_writer_is_open(tmp_path):
    path = tmp_path / "cp.sqlite"
    j = Journal(path, FP, commit_interval=1e9)
    try:
        j.add(0, [1, 2, 3], None)
        assert len(load_checkpoint(path)) == 0
        j.flush()
        assert load_checkpoint(path).results == {0: 1, 1: 2, 2: 3}
        j.add(3, [4], None)
        assert len(load_checkpoint(path)) == 3
        j.flush()
        assert len(load_checkpoint(path)) == 4
        assert len(j.pieces()) == 2  # and the writer keeps going after being read
        j.add(4, [5], None)
    finally:
        j.close()
    assert len(load_checkpoint(path)) == 5


def test_large_buffer_commits_without_waiting(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP, commit_interval=1e9) as j:
        j.add(0, [0] * (COMMIT_TASKS - 10), None)
        assert len(load_checkpoint(path)) == 0
        j.add(COMMIT_TASKS - 10, [0] * 20, None)  # now over the threshold
        assert len(load_checkpoint(path)) == COMMIT_TASKS + 10


def test_commit_interval_zero_commits_at_each_add(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP, commit_interval=0) as j:
        for k in range(5):
            j.add(k, [k], None)
            assert len(load_checkpoint(path)) == k + 1


WRITER = """
    import sys, time
    from parallelbar_clone.journal import Journal
    j = Journal(sys.argv[1], {"total": 30}, commit_interval=float(sys.argv[2]))
    j.add(0, list(range(10)), None)
    j.flush()
    j.add(10, list(range(10, 20)), None)
    j.add(20, list(range(20, 30)), None, durations=[0.1] * 10)
    print("ready", flush=True)
    time.sleep(120)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("interval, survivors", [(0, 30), (1e9, 10)])
def test_sigkill_keeps_exactly_the_committed_pieces(tmp_path, interval, survivors):
    path = tmp_path / "cp.sqlite"
    child = run_child(WRITER, path, interval)
    try:
        line = child.stdout.readline()
        assert line.strip() == "ready", child.stderr.read()
        # readable while the writer still holds the file open
        live = load_checkpoint(path)
        assert live.results == {i: i for i in range(survivors)}
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    cp = load_checkpoint(path)
    assert cp.results == {i: i for i in range(survivors)}
    assert cp.fingerprint == {"total": 30}
    # the writer's stale write-ahead log does not stop a new run from resuming
    with Journal(path, {"total": 30}) as j:
        assert sum(len(p.values) for p in j.pieces()) == survivors


def test_many_tasks_in_few_pieces(tmp_path):
    path = tmp_path / "cp.sqlite"
    n_pieces, size = 100, 10_000
    t0 = time.perf_counter()
    with Journal(path, dict(FP, total=n_pieces * size)) as j:
        for k in range(n_pieces):
            start = k * size
            j.add(start, list(range(start, start + size)), None,
                  durations=[0.001] * size, digest=f"d{k}")
        j.flush()
        t_write = time.perf_counter() - t0
    t1 = time.perf_counter()
    cp = load_checkpoint(path)
    t_read = time.perf_counter() - t1
    assert len(cp) == n_pieces * size and cp.results[999_999] == 999_999
    print(f"\njournal: 1 000 000 tasks in {n_pieces} pieces: add+flush {t_write:.3f} s, "
          f"load_checkpoint {t_read:.3f} s, file {os.path.getsize(path) / 1e6:.1f} MB")


def test_piece_dataclass():
    p = Piece(5, [1, 2, 3])
    assert p.end == 8 and p.failures == {} and p.durations is None and p.digest is None
