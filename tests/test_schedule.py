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


def test_adaptive_chunks_aim_at_200_ms_growing_at_most_8_fold():
    policy = ChunkPolicy()
    policy.observe(10, 0.01)              # 1 ms per task
    policy.took(1)
    assert policy.size(None, 2) == 8      # 200 tasks wanted, 8x the last chunk of 1
    policy.took(8)
    assert policy.size(None, 2) == 64
    policy.took(64)
    assert policy.size(None, 2) == 200    # 200 ms / 1 ms
    policy.took(200)
    assert policy.size(None, 2) == 200


def test_the_tail_is_shared_by_all_workers_in_steps_of_10_ms():
    policy = ChunkPolicy()
    policy.observe(1000, 0.1)             # 100 us per task: 2000 wanted
    policy.took(100_000)
    assert policy.size(remaining=16000, workers=2) == 2000
    assert policy.size(remaining=1000, workers=2) == 250      # 1000 // (2 * 2)
    assert policy.size(remaining=300, workers=2) == 100       # no less than 10 ms of work
    assert policy.size(remaining=60, workers=2) == 60         # (or what is left)
    assert policy.size(remaining=None, workers=2) == 2000
    slow = ChunkPolicy()
    slow.observe(1, 1.0)
    assert slow.size(remaining=3, workers=4) == 1


def test_big_tasks_make_small_chunks():
    policy = ChunkPolicy()
    policy.observe(10, 0.0001)            # quick tasks...
    policy.took(10_000, nbytes=10_000 * 10_000)    # ...of 10 KB each
    assert policy.size(None, 2) == schedule.CHUNK_BYTES // 10_000 == 6
    huge = ChunkPolicy()
    huge.observe(10, 0.0001)
    huge.took(10, nbytes=10 * 1_000_000)           # 1 MB each: one at a time
    assert huge.size(None, 2) == 1


def test_a_known_length_is_cut_in_4_chunks_per_worker_at_least():
    """As multiprocessing.Pool does: 200 000 tiny tasks on 2 workers go in chunks of
    25 000 at most, however little each task costs (one chunk of 100 000 would leave
    the other worker idle at the end, and the parent encoding it meanwhile)."""
    policy = ChunkPolicy(total=200_000)
    policy.observe(100_000, 0.03)         # 0.3 us a task: 200 ms would be 666 666 tasks
    policy.took(100_000)
    assert policy.size(remaining=200_000, workers=2) == 25_000
    assert policy.size(remaining=200_000, workers=4) == 12_500
    assert ChunkPolicy(total=200_000).size(200_000, 2) == 1    # (nothing measured yet)
    small = ChunkPolicy(total=10)
    small.observe(100, 0.0001)
    small.took(100)
    assert small.size(remaining=10, workers=2) == 2            # ceil(10 / 8)
    endless = ChunkPolicy()
    endless.observe(100_000, 0.03)
    endless.took(100_000)
    assert endless.size(remaining=None, workers=2) == schedule.MAX_CHUNK


def test_measurements_weigh_by_task_count_and_fade():
    policy = ChunkPolicy()
    policy.observe(1, 1.0)
    assert policy.per_task == 1.0
    policy.observe(1, 0.0)
    assert policy.per_task == pytest.approx(0.7 / 1.7)
    policy.observe(0, 5.0)                # nothing ran: no change
    assert policy.per_task == pytest.approx(0.7 / 1.7)
    cold = ChunkPolicy()
    cold.observe(1, 0.005)                # a cold worker's first task
    cold.observe(24, 0.024)               # then a chunk of 1 ms tasks
    assert cold.per_task == pytest.approx((0.7 * 0.005 + 0.024) / (0.7 + 24))
    assert cold.per_task < 0.0012


def test_a_chunks_own_cost_is_told_from_what_each_task_adds():
    """Tiny tasks: a chunk of one costs 400 us (a message each way, a cold first
    call), a chunk of 512 2.5 ms. Counted all per task, the tasks look 100 times
    slower than they are and chunks stay small for many round trips; a line fitted
    through chunks of different sizes says 400 us a chunk and 4.1 us a task."""
    policy = ChunkPolicy()
    for n, busy in [(1, 400e-6), (8, 430e-6), (64, 660e-6), (512, 2.5e-3)]:
        policy.observe(n, busy)
    fixed, per_task = policy.cost()
    assert fixed == pytest.approx(400e-6, rel=0.05)
    assert per_task == pytest.approx(4.1e-6, rel=0.05)
    assert policy.per_task > 1.4 * per_task     # the plain average, for the rest
    policy.took(512)
    assert policy.size(None, 2) == 4096         # the growth limit (not 0.2 s / 5.9 us)
    policy.took(100_000)
    assert policy.size(None, 2) == int((schedule.TARGET_CHUNK_SECONDS - fixed) / per_task)
    assert policy.size(remaining=60, workers=2) == \
        min(60, int(schedule.TAIL_SECONDS / per_task))    # tail steps by the same measure


def test_a_chunks_own_cost_needs_chunks_of_different_sizes_and_a_sensible_line():
    same = ChunkPolicy()
    for busy in (40e-6, 20e-6, 30e-6):
        same.observe(1, busy)                    # one size: all counted per task
    assert same.cost() == (0.0, same.per_task)
    noisy = ChunkPolicy()
    noisy.observe(1, 0.5)                         # bigger chunks cheaper in all: no line
    noisy.observe(100, 0.1)
    assert noisy.cost() == (0.0, noisy.per_task)
    steady = ChunkPolicy()
    steady.observe(10, 0.010)                     # tasks of 1 ms, nothing per chunk:
    steady.observe(100, 0.100)                    # the slope is the average
    assert steady.cost() == (0.0, steady.per_task)
    costly = ChunkPolicy()
    costly.observe(1, 0.17)                       # 160 ms a chunk, 10 ms a task: chunks
    costly.observe(2, 0.18)                       # aim at half the target at least
    costly.took(2)
    fixed, per_task = costly.cost()
    assert (fixed, per_task) == (pytest.approx(0.16), pytest.approx(0.01))
    assert costly.size(None, 2) == 10             # 100 ms / 10 ms (not 40 ms / 10 ms)


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
    assert read_ahead_allows(floor - 1, 0, 2, 1, 1e-6)
    assert not read_ahead_allows(floor, 0, 2, 1, 1e-6)
    # every worker keeps a chunk running, one queued and one more
    assert read_ahead_allows(3 * 2 * 1000 - 1, 0, 2, 1000, 1e-6)
    assert not read_ahead_allows(3 * 2 * 1000, 0, 2, 1000, 1e-6)


def test_before_anything_is_measured_a_chunk_per_worker_and_one_queued():
    assert read_ahead_allows(3, 0, 2, 1, None)
    assert not read_ahead_allows(4, 0, 2, 1, None)


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


# ------------------------------------------------------------------ edges of the policy

def test_task_bytes_are_a_moving_average_of_what_was_encoded():
    policy = ChunkPolicy()
    policy.took(0, 500)                   # nothing made: nothing learnt
    policy.took(10, 0)                    # (bytes unknown)
    assert policy.item_bytes is None and policy.last == 10
    policy.took(10, 1000)                 # 100 bytes a task
    assert policy.item_bytes == 100
    policy.took(1, 200)                   # samples weigh by their task count, older fade
    assert policy.item_bytes == pytest.approx((0.7 * 1000 + 200) / (0.7 * 10 + 1))
    policy.took(2, 10)
    assert policy.item_bytes == pytest.approx((0.7 * (0.7 * 1000 + 200) + 10)
                                              / (0.7 * (0.7 * 10 + 1) + 2))
    assert policy.last == 2


def test_one_task_a_chunk_when_each_is_slower_than_the_tail_step():
    policy = ChunkPolicy()
    policy.observe(1, 0.1)                # 100 ms a task: 2 make 200 ms...
    policy.took(1)
    assert policy.size(remaining=None, workers=2) == 2
    assert policy.size(remaining=3, workers=2) == 1       # ...but 3 left for 2 workers
    assert policy.size(remaining=9, workers=2) == 2       # 9 // 4


def test_the_tail_share_is_whole_tasks_per_worker():
    policy = ChunkPolicy()
    policy.observe(1000, 0.01)            # 10 us a task: 20 000 wanted, 1 000 a tail step
    policy.took(100_000)
    assert policy.size(remaining=4002, workers=1) == 2001  # 4002 // 2, not 2001.0
    assert policy.size(remaining=4002, workers=0) == 2001  # (no workers counts as one)
    assert isinstance(policy.size(remaining=4003, workers=1), int)


def test_read_ahead_before_measuring_scales_with_the_chunk():
    assert read_ahead_allows(11, 0, 2, 3, None)            # 2 workers x 2 chunks of 3
    assert not read_ahead_allows(12, 0, 2, 3, None)


def test_read_ahead_by_time_counts_every_worker():
    # 0.5 s tasks, 4 workers: 2 s of work each is 16 tasks
    assert read_ahead_allows(15, 0, 4, 1, 0.5)
    assert not read_ahead_allows(16, 0, 4, 1, 0.5)
    # slow tasks in chunks of 3: at least two chunks per worker stay in flight
    assert read_ahead_allows(11, 0, 2, 3, 1.0)
    assert not read_ahead_allows(12, 0, 2, 3, 1.0)


def test_read_ahead_of_tasks_measured_at_zero_seconds():
    assert read_ahead_allows(schedule.READ_AHEAD_TASKS - 1, 0, 2, 1, 0.0)
    assert not read_ahead_allows(schedule.READ_AHEAD_TASKS, 0, 2, 1, 0.0)


def test_input_measured_at_zero_seconds_is_pulled_a_chunk_at_a_time():
    pacer = InputPacer()
    pacer.observe(0, 1.0)                 # nothing pulled: nothing learnt
    assert pacer.per_item is None
    pacer.observe(100, 0.0)
    assert pacer.size(1000) == 1000 and pacer.size(0) == 1
    pacer.observe(4, 0.04)                # 10 ms an item: slower than PULL_SECONDS
    assert pacer.size(1000) == 1
