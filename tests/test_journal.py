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

from parallelbar_clone.errors import ParallelBarError, RemoteTraceback, SerializationError
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


def _journal_then(path, sql):
    """A fresh journal at ``path``, then ``sql`` run on it from outside, as another
    program (or a bad disk) would."""
    Journal(path, FP).close()
    conn = sqlite3.connect(path)
    conn.execute(sql)
    conn.commit()
    conn.close()


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
    _journal_then(path, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
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


# --------------------------------------------------------------------------- task digests

def test_task_digest_is_blake2b_of_the_pickle():
    import hashlib
    from parallelbar_clone import serialize
    from parallelbar_clone.journal import task_digest
    data = pickle.dumps([1, "a"], serialize.PROTOCOL)
    assert task_digest([1, "a"]) == hashlib.blake2b(data, digest_size=16).hexdigest()
    assert len(task_digest([1])) == 32 and task_digest([1]) != task_digest([2])
    assert task_digest([1], canonical=True) == task_digest([1])
    assert task_digest([lambda: 0]) is None            # cannot be pickled: no digest
    assert task_digest([{"a"}], canonical=True) != task_digest([{"a"}])


def test_canonical_form_sorts_sets_and_walks_containers():
    from parallelbar_clone.journal import _canonical
    p = [pickle.dumps(e, 4) for e in ("a", "b")]
    assert _canonical({"b", "a"}) == ("<set>", sorted(p))
    assert _canonical(frozenset({"a", "b"})) == ("<set>", sorted(p))
    assert _canonical([1, (2, {"a"})]) == [1, (2, ("<set>", [p[0]]))]
    assert type(_canonical((1, 2))) is tuple and type(_canonical([1])) is list
    assert _canonical({"k": {"a"}, 1: 2}) == ("<dict>", [("k", ("<set>", [p[0]])), (1, 2)])
    holder = Custom("x")
    assert _canonical(holder) is holder and _canonical("s") == "s"
    nested = _canonical({frozenset({("a", "b")})})
    assert nested == ("<set>", [pickle.dumps(("<set>", [pickle.dumps(("a", "b"), 4)]), 4)])


def test_has_sets_looks_a_few_levels_deep():
    from parallelbar_clone.journal import has_sets

    class Box:
        def __init__(self, value):
            self.value = value

    def nest(depth):
        obj = {1}
        for _ in range(depth):
            obj = [obj]
        return obj
    assert has_sets({1}) and has_sets(frozenset()) and not has_sets([1, (2, "s")])
    assert has_sets((1, {2})) and has_sets([[{1}]])
    assert has_sets({"k": {1}}) and has_sets({frozenset(): 1}) and not has_sets({"k": [1]})
    assert has_sets(Box({1})) and has_sets([Box(Box({1}))]) and not has_sets(Box([1]))
    assert not has_sets(1) and not has_sets("abc") and not has_sets(object())
    assert has_sets(nest(6)) and not has_sets(nest(7))
    assert has_sets(nest(2), depth=2) and not has_sets(nest(3), depth=2)


# --------------------------------------------------------------------------- adding pieces

def test_add_checks_what_it_is_given(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP) as j:
        for kwargs in ({}, {"pickled": b"x"}, {"n": 2}):
            with pytest.raises(ValueError) as info:
                j.add(0, None, None, **kwargs)
            assert str(info.value) == "give the values, or their pickle and n"
        with pytest.raises(ValueError) as info:
            j.add(0, [1, 2], None, durations=[1.0, 2.0, 3.0])
        assert str(info.value) == "3 durations for a piece of 2 tasks"
        with pytest.raises(ValueError) as info:
            j.add(2, [1, 2, 3], {1: ValueError(), 5: ValueError(), 4: ValueError()})
        assert str(info.value) == "failure positions [1, 5] lie outside the piece 2..4"
        with pytest.raises(ValueError) as info:
            j.add(0, [0], {p: ValueError() for p in range(10, 17)})
        assert str(info.value) == ("failure positions [10, 11, 12, 13, 14] lie outside the "
                                   "piece 0..0")
        assert j.add(7, [], None) == {} and j.pieces() == []
    with pytest.raises(ValueError) as info:
        j.add(0, [1], None)
    assert str(info.value) == f"the checkpoint journal {str(path)!r} is closed"
    assert repr(j) == f"Journal({str(path)!r}, closed)" and j.closed


def test_a_workers_pickle_is_stored_as_it_is(tmp_path):
    from parallelbar_clone.journal import task_digest
    path = tmp_path / "cp.sqlite"
    blob = pickle.dumps([1, "two", None])
    with Journal(path, FP, commit_interval=1e9) as j:
        assert repr(j) == f"Journal({str(path)!r}, 0 tasks buffered)"
        assert j.add(5, None, {7: failed(ValueError("bad"))}, pickled=blob, n=3,
                     durations=[0.1, 0.2, 0.3], items=["a", "b", "c"]) == {}
        assert repr(j) == f"Journal({str(path)!r}, 3 tasks buffered)"
        j.add(8, [9], None, digest="given", items=["ignored"])
        first, second = j.pieces()
    assert first.start == 5 and first.values == [1, "two", None]
    assert str(first.failures[7]) == "bad" and first.durations == [0.1, 0.2, 0.3]
    assert first.digest == task_digest(["a", "b", "c"]) and second.digest == "given"
    cp = load_checkpoint(path)
    assert cp.results == {5: 1, 6: "two", 8: 9} and list(cp.failures) == [7]


def test_commits_when_the_buffer_holds_more_than_its_limits(tmp_path, monkeypatch):
    import parallelbar_clone.journal as journal
    monkeypatch.setattr(journal, "COMMIT_TASKS", 5)
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP, commit_interval=1e9) as j:
        j.add(0, [0, 1, 2, 3, 4], None)
        assert len(load_checkpoint(path)) == 0            # 5 is not more than 5
        j.add(5, [5], None)
        assert len(load_checkpoint(path)) == 6
    monkeypatch.setattr(journal, "COMMIT_TASKS", 10 ** 9)
    path = tmp_path / "bytes.sqlite"
    with Journal(path, FP, commit_interval=1e9) as j:
        j.add(0, ["x" * 50], None)
        size = j._buffered_bytes
        assert size == len(b"P" + pickle.dumps(["x" * 50], pickle.HIGHEST_PROTOCOL))
        monkeypatch.setattr(journal, "COMMIT_BYTES", 2 * size)
        j.add(1, ["x" * 50], {}, durations=None)
        assert j._buffered_bytes == 2 * size and len(load_checkpoint(path)) == 0
        j.add(2, [None], {2: ValueError("f")}, durations=[1.0])
        assert j._buffered_bytes == 0 and len(load_checkpoint(path)) == 3


def test_a_background_journal_encodes_and_commits_in_its_own_thread(tmp_path, caplog):
    from parallelbar_clone.journal import task_digest
    path = tmp_path / "cp.sqlite"
    j = Journal(path, FP, commit_interval=0.05, background=True)
    assert j.add(0, [1, None, make_gen()], {1: failed(ValueError("bad"))},
                 durations=[0.1, 0.2, 0.3], items=["a", "b", "c"]) == {}
    deadline = time.monotonic() + 5
    while len(load_checkpoint(path)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)                                   # committed without a flush call
    cp = load_checkpoint(path)
    assert cp.results == {0: 1} and sorted(cp.failures) == [1, 2]
    assert isinstance(cp.failures[2], SerializationError) and "generator" in str(cp.failures[2])
    assert cp.durations == {0: 0.1, 1: 0.2, 2: 0.3}
    assert "results of tasks [2] cannot be stored in the checkpoint journal; they are " \
           "journalled as failures (run again on resume)" in caplog.text
    j.add(3, None, None, pickled=pickle.dumps(["w"]), n=1, digest="d")
    piece = j.pieces()[-1]
    assert (piece.start, piece.values, piece.digest) == (3, ["w"], "d")
    assert j.pieces()[0].digest == task_digest(["a", "b", "c"])
    j.close()
    assert j.closed and not j._flusher.is_alive()
    j.close()


def test_a_background_journal_commits_early_when_its_buffer_is_full(tmp_path, monkeypatch):
    import parallelbar_clone.journal as journal
    monkeypatch.setattr(journal, "COMMIT_TASKS", 3)
    monkeypatch.setattr(journal, "COMMIT_BYTES", 200)
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP, commit_interval=1e9, background=True) as j:
        j.add(0, [0, 1], None)                 # 2 tasks, 128 bytes counted: not due
        time.sleep(0.2)
        assert len(load_checkpoint(path)) == 0
        assert (j._buffered_tasks, j._buffered_bytes) == (2, 128)
        j.add(2, None, None, pickled=pickle.dumps([2]), n=1)
        assert j._buffered_tasks == 3 and j._buffered_bytes == 128 + len(pickle.dumps([2]))
        time.sleep(0.2)
        assert len(load_checkpoint(path)) == 0                     # 3 is not more than 3
        j.add(3, None, None, pickled=b"x" * 100, n=1)              # more than 200 bytes
        deadline = time.monotonic() + 5
        while len(load_checkpoint(path)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(load_checkpoint(path)) >= 3


def test_a_background_write_error_is_raised_by_the_next_call(tmp_path):
    path = tmp_path / "cp.sqlite"
    j = Journal(path, FP, commit_interval=0.01, background=True)

    def broken():
        raise OSError("disk full")
    j.flush = broken
    deadline = time.monotonic() + 5
    while j._error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(OSError, match="disk full"):
        j.add(0, [1], None)
    del j.flush
    with pytest.raises(OSError, match="disk full"):
        j.close()
    j.close()                                  # raised once


# --------------------------------------------------------------------------- messages

def test_a_different_run_is_told_what_differs(tmp_path):
    path = tmp_path / "cp.sqlite"
    Journal(path, {"a": 1, "b": "x", "c": 1}).close()
    with pytest.raises(CheckpointMismatchError) as info:
        Journal(path, {"a": 1, "c": True, "d": None})
    assert str(info.value) == (
        f"checkpoint {str(path)!r} was written by a different run; these differ:\n"
        f"  b: journal has 'x', this run has (absent)\n"
        f"  c: journal has 1, this run has True\n"
        f"  d: journal has (absent), this run has None\n"
        f"Pass overwrite_checkpoint=True to discard it and start afresh, or use another "
        f"checkpoint path.")


def _refusal(path, why):
    return (f"{str(path)!r} is not a parallelbar_clone checkpoint journal ({why}); refusing to "
            f"touch it. Use another checkpoint path, or delete the file yourself if it is not "
            f"needed.")


def test_files_that_are_no_journal_are_named_and_described(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for call in (load_checkpoint, lambda p: Journal(p, FP)):
        with pytest.raises(CheckpointMismatchError) as info:
            call(text)
        assert str(info.value) == _refusal(text, "not an SQLite database")
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(empty)
    assert str(info.value) == _refusal(empty, "empty file")
    bare = tmp_path / "bare.sqlite"
    conn = sqlite3.connect(bare)
    conn.execute("PRAGMA user_version = 1")     # an SQLite file without tables
    conn.close()
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(bare)
    assert str(info.value) == _refusal(bare, "an empty SQLite database")
    Journal(bare, FP).close()                   # which may become a journal
    assert load_checkpoint(bare).fingerprint == FP
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE b (x)")
    conn.execute("CREATE TABLE a (x)")
    conn.commit()
    conn.close()
    for call in (load_checkpoint, lambda p: Journal(p, FP, overwrite=True)):
        with pytest.raises(CheckpointMismatchError) as info:
            call(other)
        assert str(info.value) == _refusal(other, "an SQLite database with tables: a, b")
    with pytest.raises(FileNotFoundError) as info:
        load_checkpoint(tmp_path / "nope.sqlite")
    assert str(info.value) == f"no checkpoint at {str(tmp_path / 'nope.sqlite')!r}"
    missing = tmp_path / "no" / "cp.sqlite"
    with pytest.raises(FileNotFoundError) as info:
        Journal(missing, FP)
    assert str(info.value) == (f"cannot create checkpoint {str(missing)!r}: the folder "
                               f"{str(tmp_path / 'no')!r} does not exist")


@pytest.mark.parametrize("change", [
    "UPDATE meta SET value = '\"someone.else\"' WHERE key = 'application'",
    "UPDATE meta SET value = '\"1\"' WHERE key = 'schema_version'",
    "CREATE TABLE extra (x)",
    "DELETE FROM meta WHERE key = 'schema_version'",
])
def test_a_journal_with_damaged_metadata_is_refused(tmp_path, change):
    path = tmp_path / "cp.sqlite"
    _journal_then(path, change)
    for call in (load_checkpoint, lambda p: Journal(p, FP)):
        with pytest.raises(CheckpointMismatchError) as info:
            call(path)
        assert str(info.value) == _refusal(path, "its metadata or tables are missing or damaged")


def test_a_journal_of_another_application_id_is_refused(tmp_path):
    path = tmp_path / "cp.sqlite"
    _journal_then(path, "PRAGMA application_id = 7")
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(path)
    assert str(info.value) == _refusal(path, "an SQLite database with tables: meta, pieces")


def test_an_older_schema_version_is_refused_by_name(tmp_path):
    path = tmp_path / "cp.sqlite"
    _journal_then(path, "UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(path)
    assert str(info.value) == (
        f"checkpoint {str(path)!r} uses journal schema version 0, which this parallelbar_clone "
        f"(version 1) cannot read. Pass overwrite_checkpoint=True to start afresh.")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(CheckpointMismatchError) as info:
        Journal(path, FP)
    assert str(info.value) == (
        f"checkpoint {str(path)!r} was written by a newer parallelbar_clone (journal schema "
        f"version 2; this version reads version 1). Upgrade parallelbar_clone to resume it, or "
        f"pass overwrite_checkpoint=True to start afresh.")


def test_a_new_journal_says_what_it_is(tmp_path):
    from parallelbar_clone.journal import APPLICATION_ID
    path = tmp_path / "cp.sqlite"
    Journal(path, FP).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID == 0x50424A4C
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    conn.close()
    assert meta["application"] == '"parallelbar_clone.journal"'
    assert meta["schema_version"] == "1" and meta["fingerprint"].startswith('{"code": "abc123"')
    cp = load_checkpoint(path)
    assert cp.created.tzinfo is not None and cp.created.utcoffset().total_seconds() == 0


# --------------------------------------------------------------------------- loading back

def test_values_only_dill_can_store_and_one_that_fails_to_load(tmp_path, monkeypatch):
    from parallelbar_clone import serialize
    path = tmp_path / "cp.sqlite"

    class Local:                   # pickle cannot find it by name: stored by dill
        def __init__(self, v):
            self.v = v
    with Journal(path, FP) as j:
        assert j.add(0, [1, Local(2), None, Local(4)], None) == {}
    cp = load_checkpoint(path)
    assert cp.results[0] == 1 and cp.results[1].v == 2 and cp.results[2] is None
    original = serialize.loads

    def refuse(data):
        value = original(data)
        if getattr(value, "v", None) == 4:
            raise RuntimeError("not today")
        return value
    monkeypatch.setattr(serialize, "loads", refuse)
    cp = load_checkpoint(path)
    assert cp.results[1].v == 2 and sorted(cp.results) == [0, 1, 2] and list(cp.failures) == [3]
    err = cp.failures[3]
    assert str(err) == ("the result of task 3 is in the checkpoint journal but could not be "
                        "loaded back (RuntimeError: not today)")
    assert err.traceback == f"parallelbar_clone.errors.SerializationError: {err}\n"


def test_a_workers_blob_with_values_dill_carried(tmp_path):
    from parallelbar_clone import serialize
    path = tmp_path / "cp.sqlite"
    blob = pickle.dumps([serialize.Dilled(serialize.dill_dumps(lambda: 5)), 2,
                         serialize.Dilled(b"broken")])
    with Journal(path, FP) as j:
        j.add(10, None, None, pickled=blob, n=3)
    cp = load_checkpoint(path)
    assert cp.results[10]() == 5 and cp.results[11] == 2 and list(cp.failures) == [12]
    assert str(cp.failures[12]).startswith(
        "the result of task 12 is in the checkpoint journal but could not be loaded back (")


def test_a_value_too_big_for_a_blob_fails_alone(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP) as j:
        j._max_blob = 1000
        errors = j.add(0, ["x" * 5000], None)
    err = errors[0]
    size = len(b"P" + pickle.dumps(["x" * 5000], pickle.HIGHEST_PROTOCOL))
    assert str(err) == (f"the result of task 0, of type str, is too large to store in the "
                        f"checkpoint journal ({size} bytes pickled)")
    assert err.traceback == f"parallelbar_clone.errors.SerializationError: {err}\n"
    cp = load_checkpoint(path)
    assert cp.results == {} and str(cp.failures[0]) == str(err)


def test_failures_as_journalled(tmp_path):
    from parallelbar_clone.outcomes import Failure, pack_exception
    path = tmp_path / "cp.sqlite"
    try:
        raise Custom("from a worker")
    except Custom as exc:
        record = Failure.from_worker(pack_exception(exc))
    no_tb = KeyError("k")
    empty_tb = failed(ValueError("v"), "")
    two = failed(TwoArgs(1, 2), "tb text, no Traceback header\n")
    with Journal(path, FP) as j:
        j.add(0, [None] * 4, {0: record, 1: no_tb, 2: empty_tb, 3: two})
    cp = load_checkpoint(path)
    assert type(cp.failures[0]) is Custom and cp.failures[0].traceback == record.tb
    assert isinstance(cp.failures[0].__cause__, RemoteTraceback)
    assert cp.failures[1].traceback == "KeyError: 'k'\n" and cp.failures[1].__cause__ is None
    assert cp.failures[2].traceback == "ValueError: v\n"
    err = cp.failures[3]
    assert str(err).startswith(f"the task raised {__name__}.TwoArgs: '1/2', which cannot be "
                               f"stored in the checkpoint journal (TypeError: ")
    assert err.traceback == "tb text, no Traceback header\n" and err.__cause__ is None


def test_a_journalled_failure_that_is_no_exception(tmp_path):
    from parallelbar_clone import serialize
    from parallelbar_clone.journal import _restore_failure
    pos, exc = _restore_failure((4, serialize.dumps(5), "Traceback (x)\n", "int", "5"))
    assert pos == 4 and str(exc) == ("the task raised int: '5', which could not be loaded back "
                                     "from the checkpoint journal (TypeError: found int, not an "
                                     "exception)")
    assert exc.traceback == "Traceback (x)\n" and exc.__cause__.tb == "Traceback (x)\n"
    pos, exc = _restore_failure((5, b"P\x80broken", "tb", "m.E", "t"))
    assert str(exc).startswith("the task raised m.E: 't', which could not be loaded back from "
                               "the checkpoint journal (")


def test_merging_pieces_keeps_the_latest_outcome():
    from parallelbar_clone.journal import _merge
    results, failures, durations = {0: "a", 5: "keep"}, {1: KeyError(), 9: KeyError()}, {0: 1.0}
    _merge(Piece(0, ["new", "b"], {}, [2.0, 3.0]), results, failures, durations)
    assert results == {0: "new", 1: "b", 5: "keep"} and list(failures) == [9]
    assert durations == {0: 2.0, 1: 3.0}
    _merge(Piece(1, [None], {1: ValueError("x")}), results, failures, durations)
    assert 1 not in results and str(failures[1]) == "x" and durations == {0: 2.0}
    failures = {2: KeyError(), 3: KeyError(), 4: KeyError()}
    _merge(Piece(3, ["c", "d", "e"]), results, failures, durations)   # fewer failures than n
    assert list(failures) == [2] and results[3] == "c"
    failures = {3: KeyError()}
    _merge(Piece(3, ["c"]), results, failures, {})                    # as many as n
    assert failures == {}
    failures = {2: KeyError(), 5: KeyError()}
    _merge(Piece(3, ["c", "d"]), results, failures, {})               # none inside
    assert sorted(failures) == [2, 5]


def test_journal_defaults_and_its_thread(tmp_path):
    path = tmp_path / "cp.sqlite"
    j = Journal(path, FP)
    assert j.commit_interval == 0.25 and j._flusher is None and j.wal is True
    limit = (j._conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) if hasattr(j._conn, "getlimit")
             else 10 ** 9)                                # (Python 3.11+ can ask)
    assert j._max_blob == min(limit, 10 ** 9) - 1024     # room for the row's other fields
    created = j.created
    j.close()
    again = Journal(path, dict(FP))                       # reopened: its birth is kept
    assert again.created == created and created.tzinfo is not None
    again.close()
    background = Journal(tmp_path / "bg.sqlite", FP, background=True)
    thread = background._flusher
    assert thread.name == "parallelbar-journal" and thread.daemon and thread.is_alive()
    background.close()
    assert not thread.is_alive()


def test_overwriting_gives_the_old_journals_space_back(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP) as j:
        j.add(0, [os.urandom(1000) for _ in range(3000)], None)
    big = os.path.getsize(path)
    assert big > 3_000_000
    Journal(path, FP, overwrite=True).close()
    assert os.path.getsize(path) < big / 10


@pytest.mark.xfail(strict=True, reason="a worker's pickled piece too big for one SQLite blob "
                   "is journalled as None values (its values are not loaded to be split)")
def test_a_workers_pickle_too_big_for_one_blob_keeps_its_values(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP) as j:
        j._max_blob = 30
        j.add(0, None, None, pickled=pickle.dumps(["a" * 20, "b" * 20]), n=2)
    cp = load_checkpoint(path)
    assert cp.results == {0: "a" * 20, 1: "b" * 20} or sorted(cp.failures) == [0, 1]


def test_an_unstorable_value_is_named_with_both_reasons(tmp_path):
    from parallelbar_clone import serialize
    path = tmp_path / "cp.sqlite"
    gen = make_gen()
    with Journal(path, FP) as j:
        errors = j.add(20, [1, gen], None)
    reasons = []
    for dump in (lambda v: pickle.dumps(v, serialize.PROTOCOL), serialize.dill_dumps):
        try:
            dump(gen)
        except Exception as exc:
            reasons.append(f"{type(exc).__name__}: {exc}")
    err = errors[21]
    assert str(err) == (f"the result of task 21, of type generator, cannot be stored in the "
                        f"checkpoint journal (pickle: {reasons[0]}; dill: {reasons[1]})")
    assert err.traceback == f"parallelbar_clone.errors.SerializationError: {err}\n"
    assert str(load_checkpoint(path).failures[21]) == str(err)


def test_an_empty_database_of_another_application_and_a_meta_table_of_another_shape(tmp_path):
    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("PRAGMA application_id = 7")
    conn.close()
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(foreign)
    assert str(info.value) == _refusal(foreign, "an SQLite database with tables: none")
    path = tmp_path / "cp.sqlite"
    Journal(path, FP).close()
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE meta; CREATE TABLE meta (x);")
    conn.close()
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(path)
    assert str(info.value) == _refusal(path, "its metadata or tables are missing or damaged")


def test_merging_at_the_edges_of_a_piece():
    from parallelbar_clone.journal import _merge
    results, failures = {}, {3: KeyError(), 5: KeyError()}
    _merge(Piece(3, ["c", "d"]), results, failures, {})      # 3 is its first position
    assert sorted(failures) == [5] and results == {3: "c", 4: "d"}
    failures = {2: KeyError(), 5: KeyError()}
    _merge(Piece(3, ["c", "d", "e", "f"]), results, failures, {})   # 2 and 7: outside
    assert sorted(failures) == [2] and results[5] == "e"
    failures = {7: KeyError()}
    _merge(Piece(5, ["x", "y"]), results, failures, {})      # 7 is one past its end
    assert sorted(failures) == [7]
    _merge(Piece(9, [None], {9: ValueError("new")}), results, failures, {})
    assert 9 not in results and str(failures[9]) == "new"


def test_has_sets_depth_through_dicts_and_objects():
    from parallelbar_clone.journal import has_sets

    class Box:
        def __init__(self, value):
            self.value = value

    def in_dicts(depth):
        obj = {1}
        for _ in range(depth):
            obj = {"k": obj}
        return obj

    def in_boxes(depth):
        obj = {1}
        for _ in range(depth):
            obj = Box(obj)
        return obj
    assert has_sets(in_dicts(6)) and not has_sets(in_dicts(7))
    assert has_sets({frozenset(): 1}, depth=1) and not has_sets({"k": [frozenset()]}, depth=1)
    assert has_sets({(1, frozenset()): 1}, depth=2) and not has_sets({(1, frozenset()): 1}, 1)
    assert has_sets({"k": (1, {2})}, depth=2) and not has_sets({"k": (1, {2})}, depth=1)
    assert has_sets(in_boxes(3)) and not has_sets(in_boxes(4))   # each box: 2 levels


def test_a_piece_split_in_two_keeps_each_outcome_in_its_half(tmp_path):
    path = tmp_path / "cp.sqlite"
    values = [f"v{i}" * 50 for i in range(4)]
    with Journal(path, FP) as j:
        j._max_blob = 300
        j.add(0, values[:2] + [None] + values[3:], {2: ValueError("half")},
              durations=[1.0, 2.0, 3.0, 4.0])
        j.add(10, values, None)
        first, second, third, fourth = j.pieces()
    assert (first.start, second.start) == (0, 2) and first.failures == {}
    assert list(second.failures) == [2] and second.values == [None, values[3]]
    assert first.durations == [1.0, 2.0] and second.durations == [3.0, 4.0]
    assert third.durations is None and (third.start, fourth.start) == (10, 12)


def test_a_piece_exactly_at_the_blob_limit_stays_whole(tmp_path):
    path = tmp_path / "cp.sqlite"
    values = [f"v{i}" * 50 for i in range(4)]
    size = len(b"P" + pickle.dumps(values, pickle.HIGHEST_PROTOCOL))
    with Journal(path, FP) as j:
        j._max_blob = size
        j.add(0, values, None)
        j._max_blob = size + 1
        j.add(0, None, None, pickled=pickle.dumps(values, pickle.HIGHEST_PROTOCOL), n=4)
        assert [len(p.values) for p in j.pieces()] == [4, 4]
        j._max_blob = size - 1
        j.add(0, values, None)
        assert [len(p.values) for p in j.pieces()] == [4, 4, 2, 2]


def test_reading_a_journal_in_a_read_only_folder(tmp_path, monkeypatch):
    import parallelbar_clone.journal as journal
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP) as j:
        j.add(0, [7], None)
    original, calls = journal._read, []

    def read(where, flags):
        calls.append(flags)
        if flags == "?mode=ro":          # as when SQLite cannot make its shared-memory file
            raise sqlite3.OperationalError("unable to open database file")
        return original(where, flags)
    monkeypatch.setattr(journal, "_read", read)
    assert load_checkpoint(path).results == {0: 7}        # read as the file stands
    assert calls == ["?mode=ro", "?mode=ro&immutable=1"]
    (tmp_path / "cp.sqlite-wal").write_bytes(b"")          # a writer may be active: refuse
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        load_checkpoint(path)


# ------------------------------------------------- damage, failed commits, merge edges

def _journal_of_many_pages(path):
    with Journal(path, FP) as j:
        for k in range(60):
            j.add(k * 10, [("%05d" % (k * 10 + i)) * 400 for i in range(10)], None)


def test_a_damaged_journal_is_refused_with_its_path_and_sqlites_words(tmp_path):
    """Pages of the pieces table overwritten (a disk fault, a copy cut short): neither
    load_checkpoint nor a resume reads wrong outcomes; both say what is wrong and how
    to go on."""
    path = str(tmp_path / "cp.sqlite")
    _journal_of_many_pages(path)
    assert len(load_checkpoint(path)) == 600
    size = os.path.getsize(path)
    with open(path, "r+b") as f:       # the last pieces' pages wrecked
        f.seek(size // 2)
        f.write(b"\xa5" * (size - size // 2))
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert text.startswith(f"checkpoint {path!r} is damaged (SQLite says: ")
    assert "malformed" in text and text.endswith(
        "); it cannot be resumed from. Pass overwrite_checkpoint=True to start afresh, or "
        "use another path (keep the damaged file if you want to try "
        "`sqlite3 cp.sqlite .recover`)")
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    with pytest.raises(CheckpointMismatchError) as info:   # a resume, even overwriting,
        Journal(path, FP, overwrite=True)                  # leaves what it cannot read alone
    assert str(info.value) == (
        f"{path!r} is not a parallelbar_clone checkpoint journal (SQLite says: database disk "
        f"image is malformed); refusing to touch it. Use another checkpoint path, or delete "
        f"the file yourself if it is not needed.")


def test_a_failed_commit_keeps_its_pieces_for_the_next(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP) as j:
        j.flush()
        j.add(0, [1, 2, 3], None)
        j.add(3, [4], {})
        other = sqlite3.connect(path)
        other.execute("CREATE TRIGGER no_room BEFORE INSERT ON pieces "
                      "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        other.commit()
        with pytest.raises(sqlite3.DatabaseError, match="disk full"):
            j.flush()
        assert not j._conn.in_transaction          # rolled back: the next commit can begin
        assert j._buffered_tasks == 4 and [r[:2] for r in j._buffer] == [(0, 3), (3, 1)]
        other.execute("DROP TRIGGER no_room")
        other.commit()
        other.close()
        j.flush()
        assert j._buffered_tasks == 0 and j._buffer == []
        assert [(p.start, p.values) for p in j.pieces()] == [(0, [1, 2, 3]), (3, [4])]
    assert load_checkpoint(path).results == {0: 1, 1: 2, 2: 3, 3: 4}


def test_a_later_piece_clears_failures_at_its_first_and_every_position(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP) as j:
        j.add(0, [None, None, None, None], {0: failed(ValueError("a")), 1: failed(KeyError("b")),
                                            3: failed(ValueError("d"))})
        j.add(0, [10, 11], None)            # as many failures as positions, or more
        j.add(3, [13], None)
        j.add(5, [None], {5: failed(ValueError("e"))})
        j.add(5, [15, 16], None)            # fewer: a failure at the piece's first position
        j.add(8, [None, None], {9: failed(ValueError("f"))})
        j.add(7, [17, 18, 19], None)        # ...and at its last
    cp = load_checkpoint(path)
    assert cp.results == {0: 10, 1: 11, 2: None, 3: 13, 5: 15, 6: 16, 7: 17, 8: 18, 9: 19}
    assert cp.failures == {}


def test_a_value_the_reader_cannot_load_fails_its_own_position_saying_why(tmp_path):
    path = tmp_path / "cp.sqlite"
    with Journal(path, FP) as j:
        j.add(7, [1, TwoArgs("x", "y"), 3], None)
    with pytest.raises(TypeError) as why:   # what unpickling meets (worded per Python)
        TwoArgs("x")
    cp = load_checkpoint(path)   # the piece's one pickle cannot load: each position fails
    assert cp.results == {} and sorted(cp.failures) == [7, 8, 9]
    for pos, err in cp.failures.items():
        assert isinstance(err, SerializationError)
        assert str(err) == (f"the result of task {pos} is in the checkpoint journal but could not "
                            f"be loaded back (TypeError: {why.value})"), str(err)
