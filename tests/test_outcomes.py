"""Outcome records (parallelbar_clone.outcomes): how a task's exception travels as plain
data, and how what cannot be loaded in the caller fails only its own slot. No pool
here: part of ``make mutate``'s fast set."""
import pickle
import sys
import traceback

import pytest

from parallelbar_clone import outcomes, serialize
from parallelbar_clone.errors import (RemoteTraceback, SerializationError, TaskExitError,
                                      TaskTimeoutError)
from parallelbar_clone.outcomes import (Failure, decode_values, local_failure, materialize,
                                        pack_exception, qualified_names, safe_text)


class Flaky(ConnectionError):
    pass


class TwoArgs(Exception):
    """Pickles, but cannot be unpickled (its __init__ wants two arguments)."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no str")


class BadStrAndRepr(BadStr):
    def __repr__(self):
        raise RuntimeError("no repr")


class Holder:
    def __init__(self, value):
        self.value = value


def raised(exc):
    try:
        raise exc
    except BaseException as caught:
        return caught


def gone(obj):
    """A pickle of obj in which class Holder became Hollow, which the reader cannot find."""
    return pickle.dumps(obj).replace(b"Holder", b"Hollow")


# ------------------------------------------------------------------ text of an exception

def test_safe_text():
    assert safe_text(ValueError("plain")) == "plain"
    assert safe_text(BadStr("x")) == "BadStr('x')"
    assert safe_text(BadStrAndRepr("x")) == "<str() failed>"


def test_traceback_text_even_when_formatting_fails(monkeypatch):
    exc = raised(ValueError("boom"))
    text = outcomes._format_traceback(exc)
    assert text == "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert text.startswith("Traceback (most recent call last):\n")
    assert text.endswith("ValueError: boom\n") and "raise exc" in text

    def broken(*args):
        raise MemoryError
    monkeypatch.setattr(traceback, "format_exception", broken)
    assert outcomes._format_traceback(exc) == "ValueError: (traceback unavailable)\n"


def test_qualified_names_follow_the_mro():
    assert qualified_names(Flaky) == (
        f"{__name__}.Flaky", "builtins.ConnectionError", "builtins.OSError",
        "builtins.Exception", "builtins.BaseException", "builtins.object")
    assert qualified_names(TaskTimeoutError)[:3] == (
        "parallelbar_clone.errors.TaskTimeoutError", "parallelbar_clone.errors.ParallelBarError",
        "builtins.TimeoutError")


# ------------------------------------------------------------------ records

def test_a_failure_made_here():
    exc = TaskTimeoutError("late")
    failure = Failure.made_here(exc)
    assert failure.exc is exc and failure.data is None and failure.tb == ""
    assert failure.type_name == "parallelbar_clone.errors.TaskTimeoutError"
    assert failure.text == "late" and failure.classes == qualified_names(TaskTimeoutError)
    assert failure.attempts == 1 and failure.history == []
    assert failure.summary() == "parallelbar_clone.errors.TaskTimeoutError: late"
    assert repr(failure) == "<Failure parallelbar_clone.errors.TaskTimeoutError: late>"
    assert failure.exception() is exc and not hasattr(exc, "attempts")


def test_a_failure_from_a_worker_keeps_its_fields():
    failure = Failure.from_worker((b"data", "tb", "mod.E", "text", ("mod.E", "builtins.X")))
    assert (failure.exc, failure.data, failure.tb, failure.type_name, failure.text,
            failure.classes) == (None, b"data", "tb", "mod.E", "text", ("mod.E", "builtins.X"))
    bare = Failure(data=b"x")
    assert (bare.type_name, bare.text, bare.classes) == ("?", "", ())


def test_matching_by_class_names():
    failure = Failure.from_worker(pack_exception(Flaky("down")))
    assert failure.matches(ConnectionError) and failure.matches(Flaky)
    assert failure.matches((KeyError, OSError)) and failure.matches((OSError,))
    assert not failure.matches(KeyError) and not failure.matches((KeyError, TimeoutError))
    here = Failure.made_here(Flaky("down"))
    assert here.matches(OSError) and here.matches((KeyError, Flaky)) and not here.matches(KeyError)


def test_pack_for_the_journal():
    failure = Failure.from_worker(pack_exception(raised(Flaky("down"))))
    data, tb, type_name, text = failure.pack()
    assert data == failure.data and tb == failure.tb and tb.startswith("Traceback")
    assert (type_name, text) == (f"{__name__}.Flaky", "down")

    here = Failure.made_here(Flaky("down"))
    data, tb, type_name, text = here.pack()
    assert type(serialize.loads(data)) is Flaky and tb == f"{__name__}.Flaky: down\n"

    with_tb = Flaky("down")
    with_tb.traceback = "Traceback: the worker's\n"
    assert Failure.made_here(with_tb).pack()[1] == "Traceback: the worker's\n"
    local = Failure.made_here(Flaky("down"))
    local.tb = "Traceback: kept\n"
    assert local.pack()[1] == "Traceback: kept\n"


def test_pack_of_an_exception_nothing_can_store(monkeypatch):
    def refuse(obj, **kwargs):
        if isinstance(obj, Flaky):
            raise pickle.PicklingError("not this one")
        return original(obj, **kwargs)
    original = serialize.dumps
    monkeypatch.setattr(serialize, "dumps", refuse)
    data, tb, type_name, text = Failure.made_here(Flaky("down")).pack()
    stored = serialize.loads(data)
    assert type(stored) is SerializationError
    assert str(stored) == (f"the task raised {__name__}.Flaky: 'down', which cannot be stored "
                           f"(PicklingError: not this one)")


def test_the_exception_as_the_caller_gets_it():
    failure = Failure.from_worker(pack_exception(raised(Flaky("down"))))
    exc = failure.exception()
    assert type(exc) is Flaky and str(exc) == "down"
    assert exc.traceback == failure.tb and "raise exc" in exc.traceback
    assert isinstance(exc.__cause__, RemoteTraceback) and exc.__cause__.tb == failure.tb
    assert not hasattr(exc, "attempts") and not getattr(exc, "__notes__", None)


def test_the_exception_after_retries_says_so():
    failure = Failure.from_worker(pack_exception(Flaky("down")))
    failure.attempts, failure.history = 2, ["E: one"]
    assert failure.exception().attempts == 2
    failure = Failure.from_worker(pack_exception(Flaky("down")))
    failure.attempts, failure.history = 3, ["E: one", "E: two"]
    exc = failure.exception()
    assert exc.attempts == 3 and exc.previous_errors == ["E: one", "E: two"]
    assert exc.previous_errors is not failure.history
    if sys.version_info >= (3, 11):
        assert exc.__notes__ == ["(failed on all 3 attempts; before: E: one; E: two)"]


def test_an_exception_that_cannot_be_loaded_here():
    data = serialize._PICKLE + gone(Holder(1))
    failure = Failure(data=data, tb="Traceback: remote\n", type_name="m.Holder", text="1")
    exc = failure.exception()
    assert type(exc) is SerializationError
    assert str(exc).startswith("the task raised m.Holder: '1', which cannot be loaded in the "
                               "main process (cannot import test_outcomes.Hollow: AttributeError: ")
    assert exc.traceback == "Traceback: remote\n" and exc.__cause__.tb == "Traceback: remote\n"

    not_exc = Failure(data=serialize._PICKLE + pickle.dumps(5), type_name="int", text="5")
    assert str(not_exc.exception()) == ("the task raised int: '5', which cannot be loaded in "
                                        "the main process (TypeError: found int, not an "
                                        "exception)")
    garbage = Failure(data=b"P\x80garbage", type_name="X", text="y")
    assert str(garbage.exception()).startswith(
        "the task raised X: 'y', which cannot be loaded in the main process (")
    empty = Failure(type_name="X", text="y")
    assert str(empty.exception()) == ("the task raised X: 'y', which cannot be loaded in the "
                                      "main process (EOFError: Ran out of input)")


def test_a_missing_class_deep_inside_an_exception_is_found():
    exc = ValueError("outer", [1, {"k": Holder(2)}])
    data = serialize._PICKLE + gone(exc)
    message = str(Failure(data=data, type_name="ValueError", text="x").exception())
    assert "cannot be loaded in the main process (cannot import test_outcomes.Hollow: " in message


def test_a_record_pickles_whole():
    failure = Failure.from_worker(pack_exception(Flaky("down")))
    failure.attempts, failure.history = 2, ["x"]
    again = pickle.loads(pickle.dumps(failure))
    assert [getattr(again, k) for k in Failure.__slots__] == \
        [getattr(failure, k) for k in Failure.__slots__]


# ------------------------------------------------------------------ in a worker

def test_pack_exception():
    data, tb, type_name, text, classes = pack_exception(raised(Flaky("down")))
    assert data[:1] == serialize._PICKLE and type(pickle.loads(data[1:])) is Flaky
    assert tb.startswith("Traceback") and tb.endswith(f"{__name__}.Flaky: down\n")
    assert (type_name, text, classes) == (f"{__name__}.Flaky", "down", qualified_names(Flaky))


@pytest.mark.parametrize("exc,what,code", [
    (SystemExit(3), "called sys.exit(3)", 3),
    (SystemExit(), "called sys.exit(None)", None),
    (SystemExit("bye"), "called sys.exit('bye')", "bye"),
    (KeyboardInterrupt(), "raised KeyboardInterrupt", None),
])
def test_an_exit_ends_the_task_not_the_program(exc, what, code):
    for packed in (pack_exception(exc), pack_exception(exc, check_pickle=False)):
        data, tb, type_name, text, classes = packed
        loaded = pickle.loads(data[1:])
        assert type(loaded) is TaskExitError
        assert text == f"the task {what}; that ends a task, not the program" == str(loaded)
        assert loaded.code == code and loaded.original == type(exc).__name__
        assert type_name == "parallelbar_clone.errors.TaskExitError"
        assert classes == qualified_names(TaskExitError)
    failure = local_failure(exc)
    assert type(failure.exc) is TaskExitError and failure.exc.code == code
    assert str(failure.exc) == f"the task {what}; that ends a task, not the program"
    assert failure.exc.original == type(exc).__name__


def test_an_exception_that_cannot_come_back():
    data, tb, type_name, text, classes = pack_exception(raised(TwoArgs(1, 2)))
    loaded = pickle.loads(data[1:])
    assert type(loaded) is SerializationError
    try:
        pickle.loads(pickle.dumps(TwoArgs(1, 2)))
    except TypeError as problem:
        why = str(problem)
    assert str(loaded) == (f"the task raised {__name__}.TwoArgs: '1-2', which cannot be sent "
                           f"back to the main process (TypeError: {why})")
    assert type_name == "parallelbar_clone.errors.SerializationError"
    assert classes == qualified_names(SerializationError) and text == "1-2"
    assert tb.endswith(f"{__name__}.TwoArgs: 1-2\n")
    unchecked = pack_exception(TwoArgs(1, 2), check_pickle=False)
    assert unchecked[2] == f"{__name__}.TwoArgs"   # not tried: sent as it is


def test_pack_exception_lets_go_of_the_frames():
    exc = raised(ValueError("x"))
    pack_exception(exc)
    assert exc.__traceback__ is None
    exc = raised(ValueError("x"))
    local_failure(exc)
    assert exc.__traceback__ is None


def test_local_failure_in_a_thread_worker():
    exc = raised(Flaky("down"))
    failure = local_failure(exc)
    assert failure.exc is exc and failure.tb.startswith("Traceback")
    assert exc.traceback == failure.tb and isinstance(exc.__cause__, RemoteTraceback)
    assert exc.__cause__.tb == failure.tb
    assert failure.exception() is exc


# ------------------------------------------------------------------ tolerant loading

def test_tolerant_loads_reads_each_format():
    assert outcomes._tolerant_loads(serialize._PICKLE + pickle.dumps([1, "a"])) == [1, "a"]
    assert outcomes._tolerant_loads(pickle.dumps({"k": 2})) == {"k": 2}
    assert outcomes._tolerant_loads(serialize.dumps(lambda: 7, force_value=True))() == 7


def test_a_class_that_cannot_be_imported_becomes_a_stand_in():
    loaded = outcomes._tolerant_loads(gone([Holder(1), 2]))
    stand_in = loaded[0]
    assert loaded[1] == 2 and isinstance(stand_in, outcomes._Missing)
    assert type(stand_in).__name__ == "Hollow"
    assert type(stand_in).__module__ == "parallelbar_clone.outcomes"
    why = type(stand_in)._pb_missing
    assert why.startswith("test_outcomes.Hollow: AttributeError: ")
    with pytest.raises(pickle.PicklingError, match="Hollow"):
        pickle.dumps(stand_in)


def test_stubs_are_found_where_they_hide():
    stub = outcomes._tolerant_loads(gone(Holder(1)))
    why = type(stub)._pb_missing
    assert outcomes._stubs_in(stub) == why
    for container in ([stub], (0, stub), {stub.__class__: 1}, {"k": stub}, frozenset([1]),
                      Holder(stub), ValueError("x", stub)):
        found = outcomes._stubs_in(container)
        assert found in (why, None)
        if not isinstance(container, frozenset) and not isinstance(container, dict) \
                or container == {"k": stub}:
            assert found == why, container
    assert outcomes._stubs_in([[[[[stub]]]]]) == why       # depth 5
    assert outcomes._stubs_in([[[[[[stub]]]]]]) is None    # deeper: not looked at
    assert outcomes._stubs_in([1, "a", Holder(2), {3: 4}]) is None


def test_decode_values_with_dill_and_stand_ins():
    class Local:   # only dill can carry it
        pass
    values = [1, serialize.Dilled(serialize.dill_dumps(Local)), 3]
    failures = {}
    decoded = decode_values(pickle.dumps(values), 10, 3, True, failures)
    assert decoded[0] == 1 and decoded[1].__name__ == "Local" and decoded[2] == 3
    assert failures == {}
    not_dilled = decode_values(pickle.dumps(values), 10, 3, False, failures)
    assert isinstance(not_dilled[1], serialize.Dilled)

    broken = [2, serialize.Dilled(b"not dill")]
    failures = {}
    assert decode_values(pickle.dumps(broken), 20, 2, True, failures) == [2, None]
    assert list(failures) == [21]
    try:
        broken[1].load()
    except Exception as problem:
        why = f"{serialize.describe(problem)}: {problem}"
    assert str(failures[21].exception()) == \
        f"the result of task 21 could not be loaded by dill in the main process: {why}"

    failures = {}
    assert decode_values(gone([5, Holder(1)]), 7, 2, False, failures) == [5, None]
    assert list(failures) == [8]
    assert str(failures[8].exception()).startswith(
        "the result of task 8 could not be loaded in the main process (cannot import "
        "test_outcomes.Hollow: ")

    failures = {}
    assert decode_values(b"garbage", 3, 2, False, failures) == [None, None]
    assert sorted(failures) == [3, 4]
    try:
        pickle.loads(b"garbage")
    except Exception as problem:
        why = f"{serialize.describe(problem)}: {problem}"
    assert str(failures[4].exception()) == \
        f"the result of task 4 could not be loaded in the main process: {why}"


def test_decode_values_keeps_failures_already_known():
    known = Failure.made_here(ValueError("the task's own"))
    failures = {1: known}
    assert decode_values(b"garbage", 0, 2, False, failures) == [None, None]
    assert failures[1] is known and sorted(failures) == [0, 1]


def test_materialize():
    assert materialize(None) == {} and materialize({}) == {}
    exc = ValueError("x")
    assert materialize({3: Failure.made_here(exc)}) == {3: exc}


# --------------------------------------------------------------------------- messages

def test_a_message_keeps_its_header_and_its_tail_whatever_their_size():
    import multiprocessing
    import threading
    reader, writer = multiprocessing.Pipe(duplex=False)
    big = bytes(range(256)) * (6 * 4096)   # 6 MB: more than any pipe holds, read in parts
    sent = [(("c", 1, 2, 3), big), (("s",), b""), (("r", "é" * 10, None), b"x"),
            (("f", list(range(50_000))), memoryview(big)[5:5 + 70_000])]

    def write():
        for header, tail in sent:
            serialize.send_message(writer, header, tail)
        writer.close()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        for header, tail in sent:
            got_header, got_tail = serialize.recv_message(reader)
            assert got_header == header
            assert type(got_tail) is memoryview and got_tail == tail
        with pytest.raises(EOFError):
            serialize.recv_message(reader)
    finally:
        reader.close()   # (first: a writer blocked on a full pipe gets EPIPE and ends)
        thread.join()


def test_a_message_is_one_frame_of_multiprocessings_format():
    import multiprocessing
    reader, writer = multiprocessing.Pipe(duplex=False)
    serialize.send_message(writer, ("r", 7), b"tail")
    raw = reader.recv_bytes()   # a Connection reads it whole, as one message
    head_len = int.from_bytes(raw[:4], "little")
    assert pickle.loads(raw[4:4 + head_len]) == ("r", 7) and raw[4 + head_len:] == b"tail"
    writer.close()
    reader.close()


def test_a_message_cut_short_is_an_eof():
    import multiprocessing
    import struct
    reader, writer = multiprocessing.Pipe(duplex=False)
    import os
    os.write(writer.fileno(), struct.pack("!i", 1000) + b"\0" * 10)   # the sender died
    writer.close()
    with pytest.raises(EOFError):
        serialize.recv_message(reader)
    reader.close()


def test_results_decode_from_a_view_of_the_message():
    data = bytearray(b"head" + pickle.dumps([1, "two", 3.0]))
    assert decode_values(memoryview(data)[4:], 0, 3, False, {}) == [1, "two", 3.0]
    failures = {}
    assert decode_values(memoryview(bytearray(gone([5, Holder(1)]))), 7, 2, False,
                         failures) == [5, None]
    assert list(failures) == [8]
