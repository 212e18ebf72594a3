"""One call's shared state (parallelbar_clone.run), without a pool: how the total is
guessed, what a chunk and a piece hold, the consumer's outbox, and the read-ahead and
completion rules the two threads go by. Part of ``make mutate``'s fast set."""
import queue
import threading
import time

import pytest

from parallelbar_clone import schedule
from parallelbar_clone.options import Options
from parallelbar_clone.run import Chunk, Delivered, Outbox, Piece, Run, guess_total


def square(x):
    return x * x


def make_run(tasks=range(10), mode="map", workers=2, collected=False, **options):
    return Run(square, tasks, Options(**options), mode, workers, "square", collected)


# ------------------------------------------------------------------ the total

class Hinted:
    def __init__(self, hint):
        self.hint = hint

    def __iter__(self):
        return iter(())

    def __length_hint__(self):
        return self.hint


class BadHint(Hinted):
    def __length_hint__(self):
        raise RuntimeError("no hint")


def test_the_total_is_given_or_guessed():
    assert guess_total(range(10), 3) == 3
    assert guess_total(range(10), 0) == 0
    assert guess_total([1, 2], None) == 2
    assert guess_total(iter([1, 2, 3]), None) == 3          # a list iterator's hint
    assert guess_total(Hinted(5), None) == 5
    assert guess_total(Hinted(1), None) == 1
    assert guess_total(Hinted(0), None) is None             # 0: no hint
    assert guess_total((x for x in range(3)), None) is None
    assert guess_total(BadHint(5), None) is None


# ------------------------------------------------------------------ chunks and pieces

def test_a_chunk_covers_its_positions():
    run = make_run()
    chunk = Chunk(run, 7, ["a", "b", "c"])
    assert chunk.run is run and chunk.items == ["a", "b", "c"]
    assert (chunk.start, chunk.done, chunk.end) == (7, 7, 10)
    assert (chunk.nbytes, chunk.payload, chunk.digest, chunk.sent_at) == (0, None, None, 0.0)


def test_a_piece_holds_outcomes_of_its_positions():
    failures = {4: object()}
    piece = Piece(3, 2, values=[1, None], failures=failures, items={4: "task"}, inner=[9])
    assert (piece.start, piece.n, piece.values, piece.blob, piece.dilled) == \
        (3, 2, [1, None], None, False)
    assert piece.failures is failures and piece.items == {4: "task"} and piece.inner == [9]
    assert piece.nbytes == 0 and piece.skip is None
    blob = Piece(0, 1, blob=b"12345", dilled=True)
    assert blob.blob == b"12345" and blob.dilled is True and blob.nbytes == 5
    assert blob.values is None and blob.failures is None and blob.items is None
    assert blob.inner is None


# ------------------------------------------------------------------ exactly once

def test_delivered_window_edges():
    done = Delivered()
    assert done.claim(0, 0) == [] and done.flags == bytearray()
    assert done.claim(2, 3) == [(2, 5)]
    assert done.flags == bytearray(b"\x00\x00\x01\x01\x01")
    assert done.claim(0, 2) == [(0, 2)] and done.claim(4, 2) == [(5, 6)]
    assert done.claim(0, 6) == [] and len(done.flags) == 6
    assert -1 in done and 0 in done and 5 in done and 6 not in done
    assert done.claim(8, 1) == [(8, 9)] and done.claim(6, 4) == [(6, 8), (9, 10)]


def test_delivered_window_moves_only_past_a_long_delivered_prefix():
    done = Delivered()
    done.claim(0, 65535)                 # just under the size that is looked at
    assert done.base == 0 and len(done.flags) == 65535
    done.claim(65535, 1)                 # 65536 flags, all delivered: the prefix goes
    assert done.base == 65536 and len(done.flags) == 0
    assert done.claim(65535, 2) == [(65536, 65537)]
    assert done.claim(0, 65536) == []    # wholly below the window


def test_delivered_window_keeps_a_short_prefix():
    done = Delivered()
    done.claim(0, 32767)                 # delivered, but under half the window
    done.claim(32768, 40000)             # 32767 still out
    assert done.base == 0 and 32767 not in done
    done.claim(32767, 1)
    assert done.base == 72768 and len(done.flags) == 0


def test_delivered_window_after_it_moved():
    done = Delivered()
    done.claim(0, 65536)
    assert done.base == 65536
    done.claim(65540, 2)
    assert done.claim(65535, 8) == [(65536, 65540), (65542, 65543)]   # absolute positions
    done.claim(65544, 1)
    assert done.claim(65543, 1) == [(65543, 65544)]


def test_delivered_window_moves_only_up_to_its_first_gap():
    done = Delivered()
    done.claim(0, 40000)
    done.claim(40001, 19999)             # 40000 still out
    done.claim(60001, 10000)             # and 60000: the window may move to 40000 only
    assert done.base == 40000 and 40000 not in done and 60000 not in done
    assert done.claim(40000, 1) == [(40000, 40001)]


def test_delivered_finds_a_delivered_position_anywhere_in_the_range():
    done = Delivered()
    done.claim(1, 1)
    assert done.claim(0, 3) == [(0, 1), (2, 3)]


def test_delivered_window_drops_exactly_half_a_window():
    done = Delivered()
    done.claim(0, 32768)
    done.claim(32769, 40000)             # 32768 still out: the first 32768 may go
    assert done.base == 32768 and 32768 not in done and 32767 in done
    assert done.flags[0] == 0 and len(done.flags) == 72769 - 32768


# ------------------------------------------------------------------ the outbox

def test_outbox_wakes_at_once_only_for_what_cannot_wait():
    box = Outbox(0.1)
    assert (box.interval, box.woken, box.due) == (0.1, 0.0, False)
    box.put(("p", 1))
    assert box.due and not box.event.is_set() and list(box.items) == [("p", 1)]
    box.put(("end",), urgent=True)
    assert box.event.is_set() and not box.due and box.woken > 0
    assert box.get(0) == ("p", 1) and box.get(0) == ("end",)


def test_outbox_wakes_for_results_at_most_every_interval():
    box = Outbox(0.5)
    assert box.wake_if_due(100.0) is None            # nothing waits
    box.put(("p", 1))
    box.woken = 100.0
    assert box.wake_if_due(100.2) == pytest.approx(0.3)
    assert not box.event.is_set() and box.due
    assert box.wake_if_due(100.5) is None            # exactly an interval later: now
    assert box.event.is_set() and not box.due


def test_outbox_get_waits_for_a_message():
    box = Outbox(0.1)
    with pytest.raises(queue.Empty):
        box.get(0.01)
    threading.Timer(0.05, box.put, (("late",), True)).start()
    started = time.monotonic()
    assert box.get(5) == ("late",)
    assert time.monotonic() - started < 2
    box.items.append(("quiet",))                    # appended without a wake
    assert box.get(0.01) == ("quiet",)


def test_outbox_get_returns_when_woken_without_a_message():
    """The manager wakes the consumer with no message when the input runs low: get()
    must hand the turn back (queue.Empty) so that the consumer tops the input up,
    instead of waiting out its timeout while workers starve."""
    box = Outbox(0.1)
    threading.Timer(0.02, box.wake).start()
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        box.get(5)
    assert time.monotonic() - started < 2
    assert not box.event.is_set()                   # the wake is used up
    box.put(("p", 1))                               # a message, even one not yet due...
    assert box.get(5) == ("p", 1)                   # ...is taken at once


def test_outbox_get_picks_up_a_message_left_at_its_timeout():
    box = Outbox(0.1)
    threading.Timer(0.02, box.items.append, (("unannounced",),)).start()
    assert box.get(0.2) == ("unannounced",)


# ------------------------------------------------------------------ a run's state

def test_a_new_run():
    from parallelbar_clone.schedule import InputPacer
    run = make_run(range(10), "imap", 3, process_timeout=2, chunk_size=4, maxtasksperchild=3)
    assert run.opts.process_timeout == 2 and isinstance(run.pacer, InputPacer)
    assert isinstance(run.delivered, Delivered) and run.pacer.per_item is None
    assert (run.func, run.name, run.mode, run.workers, run.total) == \
        (square, "square", "imap", 3, 10)
    assert run.state == "new" and run.timing is True and run.deadline is None
    assert (run.policy.fixed, run.policy.cap) == (4, 3)
    assert run.safe_source is True and run.out.interval == 0.0
    assert make_run(mode="imap", collected=True).out.interval == 0.1   # progress_imap's list
    assert make_run(mode="map").out.interval == 0.0   # (a run is collected when made so)
    assert list(run.source) == list(range(10))
    assert (run.taken, run.consumed, run.finished, run.resumed, run.resumed_failed) == \
        (0, 0, 0, 0, 0)
    assert (run.bytes_sent, run.bytes_taken, run.bytes_done, run.bytes_out) == (0, 0, 0, 0)
    assert (run.bar_done, run.bar_failed, run.inner_done, run.inner_failed) == (0, 0, 0, 0)
    assert (run.shown_done, run.shown_failed, run.retried, run.retried_shown) == (0, 0, 0, 0)
    assert run.bar_flushed == 0.0 and run.exhausted is False and run.input_error is None
    assert run.payload is None and not run.payload_by_value and not run.items_by_value
    assert run.journal is None and run.resume == {} and run.verify == {}
    assert run.verifying is None and run.attempts == {} and run.history == {}
    assert run.delayed == [] and not run.ready and not run.requeue
    assert not run.bar_closed.is_set() and not run.ended.is_set()
    assert make_run().id != make_run().id


def test_what_a_run_learns_from_its_options():
    assert make_run(memory_limit="1MB").timing is True
    assert make_run().timing is False
    assert make_run(total=99).total == 99
    assert make_run(iter([1, 2]), total=None).safe_source is False
    assert make_run([1, 2]).safe_source and make_run((1, 2)).safe_source
    before = time.monotonic()
    run = make_run(timeout=30)
    assert before + 30 <= run.deadline <= time.monotonic() + 30


def test_held_bytes_count_tasks_in_flight_and_results_not_taken():
    run = make_run()
    run.bytes_sent, run.bytes_done, run.bytes_out, run.bytes_taken = 1000, 300, 500, 100
    assert run.held_bytes() == 700 + 400


def test_may_read_ahead_by_tasks_bytes_and_chunk():
    run = make_run(workers=2)
    assert run.may_read_ahead()                          # nothing read yet
    run.taken = 3
    assert run.may_read_ahead()                          # 2 workers x 2 chunks of 1
    run.taken = 4
    assert not run.may_read_ahead()
    run.consumed = 1
    assert run.may_read_ahead()
    run.policy.took(5)                                   # chunks of 5 now
    run.taken = 21
    assert not run.may_read_ahead() and run.taken - run.consumed == 20
    run.consumed = 2
    assert run.may_read_ahead()
    run.bytes_sent = schedule.READ_AHEAD_BYTES
    assert not run.may_read_ahead()
    timed = make_run(workers=2)
    timed.policy.observe(1, 1.0)                         # 1 s tasks: 2 s of work each
    timed.taken = 3
    assert timed.may_read_ahead()
    timed.taken = 4
    assert not timed.may_read_ahead()


def test_next_size_knows_what_remains():
    run = make_run(range(100), workers=2)
    run.policy.observe(1000, 0.01)                       # 10 us a task
    run.policy.took(100_000)
    run.taken = 96
    assert run.next_size() == 4                          # only 4 left
    unknown = make_run((x for x in range(100)), workers=2)
    unknown.policy.observe(1000, 0.01)
    unknown.policy.took(100_000)
    unknown.taken = 96
    assert unknown.next_size() == 20_000                 # 0.2 s / 10 us


def test_a_run_is_complete_when_every_position_has_its_outcome():
    run = make_run()
    assert not run.has_work() and not run.complete()
    run.exhausted, run.taken, run.finished = True, 10, 10
    assert run.complete()
    run.finished = 9
    assert not run.complete()
    run.finished = 11
    assert run.complete()
    run.finished = 10
    run.ready.append(Chunk(run, 0, [1]))
    assert run.has_work() and not run.complete()
    run.ready.clear()
    run.requeue.append((0, [1]))
    assert not run.complete()
    run.requeue.clear()
    run.delayed.append((0.0, 0, 1))
    assert not run.complete()
    run.delayed.clear()
    run.exhausted = False
    assert not run.complete()


# ------------------------------------------------------------------ feeding the input

class _Encoder:
    def encode_chunk(self, chunk, run):
        chunk.payload, chunk.nbytes = b"", 8 * len(chunk.items)


class _Manager:
    def hand_over(self):
        pass

    def post(self, *command):
        pass


def test_the_caller_encodes_two_chunks_per_worker_ahead_at_most_while_sizes_change():
    """Read-ahead would allow thousands of quick tasks, but chunks made long before
    they are sent are sized by what was known then (at the start a trivial task
    looks 100 times slower than it is): two chunks a worker wait, no more, until
    enough chunks are measured."""
    from parallelbar_clone.feed import Feeder
    run = make_run(range(100_000), "map", 3)
    run.state = "active"
    run.policy.observe(1000, 0.001)         # 1 us a task
    feeder = Feeder(run, _Encoder(), _Manager())
    for _ in range(20):
        feeder.top_up()
    assert len(run.ready) == 6
    assert run.may_read_ahead()             # (the input was not what stopped it)
    run.ready.popleft()
    feeder.top_up()
    assert len(run.ready) == 6
    for _ in range(7):                      # settled: read ahead as far as allowed, in
        run.policy.observe(1000, 0.001)     # fewer turns (each turn costs the caller's CPU)
    assert run.policy.settled
    for _ in range(20):
        feeder.top_up()
    assert len(run.ready) > 6 and not run.may_read_ahead()


# ------------------------------------------------------------------ a worker's batches

class _SpanSlot(list):
    """A worker's slot that records each batch's size (SPAN) as it is written."""

    def __init__(self):
        super().__init__([0.0] * 6)
        self.spans = []

    def __setitem__(self, index, value):
        if index == 5:
            self.spans.append(int(value))
        super().__setitem__(index, value)


def _busy_2ms(x):
    end = time.monotonic() + 0.002
    while time.monotonic() < end:
        pass
    return x


def _busy_2ms_unless_zero(x):
    return x if x == 0 else _busy_2ms(x)


def test_a_worker_batches_millisecond_tasks_between_two_slot_writes():
    """Without guards a worker writes its slot once per batch of tasks, and batches
    grow towards BATCH_SECONDS (50 ms) of work, at most 8-fold each: a batch costs
    about 20 us besides its tasks (its steps run with caches the tasks made cold), and
    a crash inside one re-runs its tasks one by one to find the culprit. 60 tasks of
    2 ms: batches of 1, 8, then 25; never beyond 50 ms, even when the first task is
    quick (a trivial first task must not make a batch of hundreds)."""
    from parallelbar_clone import worker
    for func in (_busy_2ms, _busy_2ms_unless_zero):
        slot, out = _SpanSlot(), []
        worker.run_chunk(func, 1, 0, list(range(60)), slot, 0, False,
                         lambda run_id, start, values, errors, busy, durs: out.extend(values),
                         False)
        assert out == list(range(60))
        assert 12 <= max(slot.spans) <= 25, slot.spans
        assert len(slot.spans) <= 8, slot.spans
