"""The engine's pure policy and bookkeeping, without processes: chunk sizes, input
pacing, read-ahead, exactly-once delivery, outcome records. Fast: these are what
``make mutate`` runs against."""
import pickle

import pytest

from parallelbar_clone import schedule
from parallelbar_clone.errors import SerializationError, TaskTimeoutError
from parallelbar_clone.outcomes import Failure, decode_values, pack_exception, qualified_names
from parallelbar_clone.run import Delivered, Piece
from parallelbar_clone.schedule import ChunkPolicy, InputPacer, read_ahead_allows


# ------------------------------------------------------------------ chunk sizes

def test_first_chunk_is_one_task_until_something_is_measured():
    policy = ChunkPolicy()
    assert policy.size(remaining=10_000, workers=2) == 1
    assert policy.size(remaining=None, workers=2) == 1


def test_fixed_chunk_size_is_kept_but_capped():
    assert ChunkPolicy(fixed=7).size(remaining=3, workers=2) == 7
    assert ChunkPolicy(fixed=500, cap=10).size(None, 2) == 10    # maxtasksperchild
    assert ChunkPolicy(fixed=10 ** 9).size(None, 2) == schedule.MAX_CHUNK


def test_adaptive_chunks_aim_at_25_ms_growing_at_most_8_fold():
    policy = ChunkPolicy()
    policy.observe(10, 0.01)              # 1 ms per task
    policy.took(1)
    assert policy.size(None, 2) == 8      # 25 tasks wanted, 8x the last chunk of 1
    policy.took(8)
    assert policy.size(None, 2) == 25     # 25 ms / 1 ms
    policy.took(25)
    assert policy.size(None, 2) == 25


def test_the_tail_is_shared_by_all_workers():
    policy = ChunkPolicy()
    policy.observe(1000, 0.001)           # 1 us per task: 25 000 wanted
    policy.took(100_000)
    assert policy.size(remaining=1000, workers=2) == 250      # 1000 // (2 * 2)
    assert policy.size(remaining=3, workers=4) == 1
    assert policy.size(remaining=None, workers=2) == 25_000


def test_big_tasks_make_small_chunks():
    policy = ChunkPolicy()
    policy.observe(10, 0.0001)            # quick tasks...
    policy.took(10_000, nbytes=10_000 * 100_000)   # ...of 100 KB each
    assert policy.size(None, 2) == schedule.CHUNK_BYTES // 100_000


def test_measurements_are_smoothed():
    policy = ChunkPolicy()
    policy.observe(1, 1.0)
    assert policy.per_task == 1.0
    policy.observe(1, 0.0)
    assert policy.per_task == pytest.approx(0.7)
    policy.observe(0, 5.0)                # nothing ran: no change
    assert policy.per_task == pytest.approx(0.7)


# ------------------------------------------------------------------ input pacing

def test_input_is_pulled_one_item_until_its_speed_is_known():
    pacer = InputPacer()
    assert pacer.size(1000) == 1
    pacer.observe(1000, 0.0001)           # fast: a chunk at a time
    assert pacer.size(1000) == 1000
    pacer.observe(1, 0.05)                # 50 ms an item: one at a time
    assert pacer.size(1000) == 1
    pacer.observe(10, 0.01)               # 1 ms an item: 5 ms worth
    assert pacer.size(1000) == 5


# ------------------------------------------------------------------ read-ahead

def test_read_ahead_is_bounded_in_bytes():
    limit = schedule.READ_AHEAD_BYTES
    assert read_ahead_allows(0, limit - 1, 2, 1, None)
    assert not read_ahead_allows(0, limit, 2, 1, None)


def test_read_ahead_is_bounded_in_tasks():
    floor = schedule.READ_AHEAD_TASKS
    assert read_ahead_allows(floor - 1, 0, 2, 1, None)
    assert not read_ahead_allows(floor, 0, 2, 1, None)
    # every worker keeps a chunk running, one queued and one more
    assert read_ahead_allows(3 * 2 * 1000 - 1, 0, 2, 1000, None)
    assert not read_ahead_allows(3 * 2 * 1000, 0, 2, 1000, None)


def test_read_ahead_is_bounded_in_seconds_of_work():
    # 1 s tasks, 2 workers: 2 s each is 4 tasks, and one per worker more in flight
    assert read_ahead_allows(3, 0, 2, 1, 1.0)
    assert not read_ahead_allows(4, 0, 2, 1, 1.0)
    # quick tasks: the task floor decides
    assert read_ahead_allows(schedule.READ_AHEAD_TASKS - 1, 0, 2, 1, 1e-6)


# ------------------------------------------------------------------ exactly once

def test_each_position_is_delivered_once():
    done = Delivered()
    assert done.claim(0, 5) == [(0, 5)]
    assert done.claim(3, 4) == [(5, 7)]           # 3 and 4 were delivered already
    assert done.claim(0, 7) == []
    assert done.claim(9, 2) == [(9, 11)]
    assert done.claim(6, 5) == [(7, 9)]
    assert all(p in done for p in range(11)) and 11 not in done


def test_delivered_window_stays_small_over_an_endless_stream():
    done = Delivered()
    for start in range(0, 1_000_000, 1000):
        assert done.claim(start, 1000) == [(start, start + 1000)]
    assert len(done.flags) < 70_000 and done.base > 900_000
    assert done.claim(5, 1) == []                  # long gone, still known as delivered
    assert 999_999 in done and 1_000_000 not in done


def test_a_gap_keeps_the_window_from_moving_past_it():
    done = Delivered()
    done.claim(1, 200_000)                         # position 0 still out (retrying)
    assert done.base == 0 and 0 not in done
    assert done.claim(0, 1) == [(0, 1)]


# ------------------------------------------------------------------ outcome records

class Flaky(ConnectionError):
    pass


def test_a_workers_exception_is_matched_by_class_names_without_loading_it():
    failure = Failure.from_worker(pack_exception(Flaky("down")))
    assert failure.matches(ConnectionError) and failure.matches((KeyError, OSError))
    assert not failure.matches(KeyError)
    assert failure.type_name.endswith("Flaky") and failure.text == "down"
    assert failure.classes[0].endswith(".Flaky") and "builtins.OSError" in failure.classes


def test_a_failure_made_here_matches_by_isinstance():
    failure = Failure.made_here(TaskTimeoutError("late", task_position=3, timeout=1))
    assert failure.matches(TimeoutError) and not failure.matches(KeyError)
    assert qualified_names(TaskTimeoutError)[0] == "parallelbar_clone.errors.TaskTimeoutError"


def test_a_workers_exception_comes_back_as_its_own_type_with_its_traceback():
    try:
        raise Flaky("down")
    except Flaky as exc:
        packed = pack_exception(exc)
    failure = Failure.from_worker(packed)
    failure.attempts, failure.history = 3, ["Flaky: down", "Flaky: down"]
    exc = failure.exception()
    assert type(exc) is Flaky and str(exc) == "down"
    assert "raise Flaky" in exc.traceback and exc.attempts == 3
    assert exc.previous_errors == ["Flaky: down"] * 2


def test_sys_exit_becomes_a_task_exit_error():
    failure = Failure.from_worker(pack_exception(SystemExit(0)))
    exc = failure.exception()
    assert type(exc).__name__ == "TaskExitError" and exc.code == 0
    assert "sys.exit(0)" in str(exc)


def test_an_exception_whose_str_raises_is_described_safely():
    class Bad(Exception):
        def __str__(self):
            raise RuntimeError("no")
    failure = Failure.from_worker(pack_exception(Bad()))
    assert failure.text and "Bad" in failure.summary()


def test_values_that_cannot_be_loaded_fail_their_own_slot_only():
    blob = pickle.dumps([1, _Stand(), 3])
    blob = blob.replace(b"_Stand", b"_Gone_")   # a class the reader cannot find
    failures = {}
    values = decode_values(blob, 10, 3, False, failures)
    assert values == [1, None, 3] and list(failures) == [11]
    exc = failures[11].exception()
    assert isinstance(exc, SerializationError) and "_Gone_" in str(exc)


def test_a_blob_that_cannot_be_loaded_at_all_fails_each_slot():
    failures = {}
    assert decode_values(b"garbage", 0, 2, False, failures) == [None, None]
    assert sorted(failures) == [0, 1]


class _Stand:
    pass


def test_piece_counts_its_bytes():
    piece = Piece(0, 3, blob=b"x" * 90)
    assert piece.nbytes == 90 and piece.skip is None


def test_byte_shares_of_a_piece_add_up_exactly():
    """The consumer lets go of a piece's bytes segment by segment; any rounding drift
    would pile up over a long stream until read-ahead stopped for good."""
    from parallelbar_clone.results import _share
    piece = Piece(100, 7, blob=b"x" * 1000)
    cuts = [100, 101, 103, 106, 107]
    assert sum(_share(piece, a, b) for a, b in zip(cuts, cuts[1:])) == 1000
    assert sum(_share(piece, p, p + 1) for p in range(100, 107)) == 1000
