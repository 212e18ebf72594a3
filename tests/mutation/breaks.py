"""`make breaks`: one-line breaks of the process-level engine, each with the tests that
must catch it.

mutmut covers the modules of pure logic (`make mutate`); in the engine a mutant costs a
whole suite, so here each promise the README makes is broken by hand, one line at a
time, and the named tests (pytest node ids) must fail. For each break this script
copies the working tree (tracked and untracked files git does not ignore) to a
temporary folder, replaces ``old`` by ``new`` in ``path`` there (``old`` must occur
exactly once: a refactor that makes a break stale is reported, never skipped), runs
the named tests against that copy and reports caught or missed. A break that can only
show in a race (a task ending within microseconds of a guard's check) names how many
runs of its tests it may take.

    python tests/mutation/breaks.py                 # every break
    python tests/mutation/breaks.py timeout sigkill # the breaks whose name has these
    python tests/mutation/breaks.py --list          # the table, without running it

Exit status 0 only if every break was caught; 1 if one was missed, stale, or its tests
did not run, or if the named tests fail on the unbroken copy (checked first).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[2]
TEST_TIMEOUT = 60   # per test: a break that makes a test hang is caught, in a minute


@dataclass
class Break:
    name: str
    promise: str      # what the README promises, in a few words
    path: str         # file to break, from the repository root
    old: str          # text that must occur exactly once in it...
    new: str          # ...and what it becomes
    tests: List[str]  # pytest node ids, at least one of which must fail
    tries: int = 1    # a break that shows only in a race: run its tests up to this often


BREAKS = [
    # --- the ten rows of issue 12, in the current code ----------------------------------
    Break("timeout-late", "a timeout fires promptly (~20 ms late)",
          "parallelbar_clone/manager.py",
          "if limit is not None and now - started > limit:",
          "if limit is not None and now - started > limit * 10:",
          ["tests/test_faults.py::test_a_timeout_fills_its_slot_promptly"]),
    Break("blame-batch", "a death fails only its task, also in a batch of quick tasks",
          "parallelbar_clone/manager.py",
          "            if span == 1:",
          "            if span >= 1:",
          ["tests/test_faults.py::test_a_death_in_a_batch_of_quick_tasks_fails_only_its_task"]),
    Break("keep-failures-inverted", "failures re-run on resume unless keep_failures",
          "parallelbar_clone/pool.py",
          "if not run.opts.keep_failures:",
          "if run.opts.keep_failures:",
          ["tests/test_checkpoint.py::test_keep_failures_does_not_rerun_them",
           "tests/test_checkpoint.py::test_unstorable_result_is_kept_and_journalled_as_a_failure"]),
    Break("error-bar-one-per-piece", "the ERROR bar counts every failure",
          "parallelbar_clone/manager.py",
          "run.bar_failed += nfail",
          "run.bar_failed += min(nfail, 1)",
          ["tests/test_bars.py::test_error_bar_counts_every_failure_of_a_piece"]),
    Break("raise-only-in-map", "'raise' raises in every function",
          "parallelbar_clone/results.py",
          '        if errors and opts.error_behavior == "raise":\n            state.stop()',
          '        if errors and opts.error_behavior == "raise" and run.mode == "map":\n'
          '            state.stop()',
          ["tests/test_engine.py::test_raise_mode_raises_an_unloadable_result_in_imap_too"]),
    Break("memory-total-rss", "memory_limit counts growth over the worker's idle memory",
          "parallelbar_clone/manager.py",
          "grown = rss - w.baseline_rss",
          "grown = rss",
          ["tests/test_engine.py::test_memory_limit_counts_growth_over_the_idle_footprint"]),
    Break("read-ahead-uncapped", "bounded read-ahead (in tasks)",
          "parallelbar_clone/schedule.py",
          "    return pending_tasks < cap",
          "    return True",
          ["tests/test_api.py::test_read_ahead_of_slow_tasks_is_seconds_of_work",
           "tests/test_schedule.py::test_read_ahead_is_bounded_in_tasks"]),
    Break("read-ahead-unbounded", "bounded read-ahead (no cap at all: an endless input)",
          "parallelbar_clone/schedule.py",
          "    if held_bytes >= READ_AHEAD_BYTES:\n        return False",
          "    return True",
          ["tests/test_api.py::test_imap_is_lazy_with_an_endless_generator",
           "tests/test_api.py::test_read_ahead_of_slow_tasks_is_seconds_of_work"]),
    Break("no-sigkill", "SIGTERM, then SIGKILL after 0.3 s",
          "parallelbar_clone/manager.py",
          "                self.backend.force_kill(w)\n                w.killed_at = now",
          "                w.killed_at = now",
          ["tests/test_faults.py::test_a_worker_ignoring_sigterm_is_gone_within_a_second"]),
    Break("bar-opens-at-zero", "the bar opens at the resumed count",
          "parallelbar_clone/pool.py",
          '"DONE", run.resumed, postfix',
          '"DONE", 0, postfix',
          ["tests/test_checkpoint.py::test_resume_returns_the_full_result_and_reruns_failures"]),
    Break("resume-skips-last-piece", "resume re-runs only the tasks not journalled",
          "parallelbar_clone/pool.py",
          "for piece in run.journal.pieces():",
          "for piece in run.journal.pieces()[:-1]:",
          ["tests/test_checkpoint.py::test_unstorable_result_is_kept_and_journalled_as_a_failure"]),
    # --- promises of the newer engine ---------------------------------------------------
    Break("delivered-twice", "each position is delivered exactly once",
          "parallelbar_clone/run.py",
          "if self.flags.find(1, lo, hi) == -1:",
          "if True:",
          ["tests/test_schedule.py::test_each_position_is_delivered_once"]),
    Break("kill-without-second-look", "a worker is killed only if its task is still over "
          "its limit once what it sent is read",
          "parallelbar_clone/manager.py",
          "if not w.dead and self._over_limit(w, now) is not None:",
          "if not w.dead:",
          ["tests/test_engine.py::test_a_result_that_arrives_while_the_guard_looks_saves_its_"
           "worker",
           "tests/test_engine.py::test_every_task_is_delivered_once_at_its_deadline[fork-600]"]),
    Break("fork-gate-open", "a zygote is forked while our threads hold no lock",
          "parallelbar_clone/zygote.py",
          "while self._busy - (1 if mine else 0) > 0:",
          "while False:",
          ["tests/test_zygote.py::test_the_fork_gate_waits_for_our_threads_and_holds_them_while_"
           "it_forks",
           "tests/test_zygote.py::test_zygote_is_forked_while_our_threads_hold_no_lock"]),
    Break("no-process-group", "each worker leads its own process group (spawn: only the "
          "worker itself sees to it; the zygote does it too under fork)",
          "parallelbar_clone/worker.py",
          "            os.setpgid(0, 0)",
          "            pass",
          ["tests/test_zygote.py::test_processes_a_task_started_end_with_its_worker[spawn-exit]"]),
    Break("exit-spares-task-children-fork", "a worker's exit also ends the processes its "
          "task started (fork: the zygote's worker handle)",
          "parallelbar_clone/zygote.py",
          "            os.killpg(self.pid, signal.SIGKILL)",
          "            pass",
          ["tests/test_zygote.py::test_processes_a_task_started_end_with_its_worker[fork-exit]",
           "tests/test_zygote.py::test_processes_a_task_started_end_with_its_worker"
           "[fork-segfault]"]),
    Break("exit-spares-task-children-spawn", "a worker's exit also ends the processes its "
          "task started (spawn, forkserver)",
          "parallelbar_clone/backends.py",
          "                        os.killpg(proc.pid, signal.SIGKILL)",
          "                        pass",
          ["tests/test_zygote.py::test_processes_a_task_started_end_with_its_worker[spawn-exit]",
           "tests/test_zygote.py::test_processes_a_task_started_end_with_its_worker"
           "[spawn-segfault]"]),
    Break("input-error-drops-results", "an input error comes after the results before it",
          "parallelbar_clone/feed.py",
          "items.extend(islice(run.source, n))",
          "items = list(islice(run.source, n))",
          ["tests/test_engine.py::test_an_input_error_comes_after_the_results_before_it"
           "[True-fork]",
           "tests/test_engine.py::test_an_input_error_comes_after_the_results_before_it"
           "[False-fork]"]),
    Break("imap-left-runs-on", "leaving an imap loop cancels its work at once",
          "parallelbar_clone/results.py",
          "            state.stop(wait=False)   # (nothing to do once the run is over)",
          "            pass",
          ["tests/test_engine.py::test_leaving_an_imap_loop_cancels_its_work_at_once"
           "[fork-break]",
           "tests/test_engine.py::test_leaving_an_imap_loop_cancels_its_work_at_once"
           "[fork-dropped-unread]"]),
    Break("read-ahead-bytes-unbounded", "read-ahead is bounded in bytes, results waiting "
          "for the consumer included",
          "parallelbar_clone/run.py",
          "return (self.bytes_sent - self.bytes_done) + (self.bytes_out - self.bytes_taken)",
          "return self.bytes_sent - self.bytes_done",
          ["tests/test_engine.py::test_results_waiting_for_a_slow_consumer_count_in_the_"
           "byte_bound"]),
    Break("add-progress-last-piece-only", "add_progress counts travel with the results",
          "parallelbar_clone/manager.py",
          "run.inner_done += counted[0]",
          "run.inner_done = counted[0]",
          ["tests/test_bars.py::test_add_progress_counts_inner_calls[fork]"]),
    Break("sys-exit-passes-through", "a task's sys.exit() is a TaskExitError, not the "
          "caller's exit",
          "parallelbar_clone/outcomes.py",
          "    exc.__traceback__ = None  # let go of the frames (and what they hold)\n"
          "    if not isinstance(exc, Exception):",
          "    exc.__traceback__ = None  # let go of the frames (and what they hold)\n"
          "    if False:",
          ["tests/test_engine.py::test_sys_exit_in_a_task_is_a_visible_failure[fork]"]),
    Break("unimportable-exception-unexplained", "an exception the caller cannot import "
          "fails its slot, saying which module is missing",
          "parallelbar_clone/outcomes.py",
          "missing = _stubs_in(exc)",
          "missing = None",
          ["tests/test_engine.py::test_an_exception_the_caller_cannot_import_fails_only_its_slot"
           "[fork]"]),
    # --- promises made since ---------------------------------------------------------------
    Break("wake-lost-while-encoding", "a task goes out as soon as it is encoded",
          "parallelbar_clone/feed.py",
          "        self.manager.hand_over()\n        return True",
          "        return True",
          ["tests/test_engine.py::test_a_task_is_sent_as_soon_as_it_is_encoded[fork]"]),
    Break("busy-without-decoding", "chunks are sized by what a task costs its worker, "
          "loading it included",
          "parallelbar_clone/worker.py",
          "    if decoding is not None:\n        last = decoding\n",
          "",
          ["tests/test_engine.py::test_chunks_are_sized_by_the_time_a_task_costs_its_worker"
           "[task]"]),
    Break("busy-without-encoding", "chunks are sized by what a task costs its worker, "
          "pickling its result included",
          "parallelbar_clone/worker.py",
          "        busy += monotonic() - encoding",
          "        pass",
          ["tests/test_engine.py::test_chunks_are_sized_by_the_time_a_task_costs_its_worker"
           "[result]"]),
    Break("notebook-imports-in-a-terminal", "bars in a terminal import no notebook "
          "machinery",
          "parallelbar_clone/bar.py",
          "classes = _classes(widgets=face == WIDGETS)",
          "classes = _classes(widgets=True)",
          ["tests/test_bars.py::test_bars_in_a_terminal_import_no_notebook_machinery"]),
    Break("batch-failure-misplaced", "a task that raises in a batch of quick tasks fails "
          "its own slot, the others keep theirs",
          "parallelbar_clone/worker.py",
          "                i += len(values) - before\n",
          "",
          ["tests/test_engine.py::test_failures_inside_a_batch_of_quick_tasks_stay_in_their_"
           "slots[fork]"]),
    Break("woken-consumer-sleeps-on", "input running low wakes the consumer to top it up",
          "parallelbar_clone/run.py",
          "        self.event.wait(timeout)\n        self.event.clear()",
          "        while not self.items and self.event.wait(timeout):\n"
          "            self.event.clear()\n        self.event.clear()",
          ["tests/test_run.py::test_outbox_get_returns_when_woken_without_a_message"]),
    Break("chunks-made-far-ahead", "chunks wait two a worker, sized by what is known",
          "parallelbar_clone/feed.py",
          "len(run.ready) >= 2 * run.workers and not run.policy.settled",
          "False",
          ["tests/test_run.py::test_the_caller_encodes_two_chunks_per_worker_ahead_at_most_"
           "while_sizes_change"]),
    Break("first-workers-by-the-zygote", "the first workers are forked by the caller",
          "parallelbar_clone/backends.py",
          'here = self.method == "fork" and threading.get_ident() == self._here',
          "here = False",
          ["tests/test_zygote.py::test_first_workers_are_forked_by_the_caller_and_"
           "replacements_by_the_zygote[main]"]),
    Break("one-call-pool-forks-its-zygote-at-once", "a one-call pool forks its zygote only "
          "when a worker must be replaced",
          "parallelbar_clone/backends.py",
          "if not (one_call and self._here is not None):",
          "if True:",
          ["tests/test_zygote.py::test_a_one_call_map_forks_its_zygote_only_when_a_worker_is_"
           "replaced[none-replaced]"]),
    Break("late-zygote-keeps-the-first-workers-pipes", "a zygote forked after the first "
          "workers holds none of their pipes",
          "parallelbar_clone/zygote.py",
          "for fd in close_fds:   # (a zygote made after the first workers: theirs)",
          "for fd in ():",
          ["tests/test_zygote.py::test_a_zygote_forked_after_the_first_workers_leaves_their_"
           "pipes_behind"]),
    Break("message-tail-read-in-parts-loses-its-start", "a message bigger than the pipe "
          "arrives whole",
          "parallelbar_clone/serialize.py",
          "            whole[:len(data)] = data\n",
          "            pass\n",
          ["tests/test_outcomes.py::test_a_message_keeps_its_header_and_its_tail_whatever_"
           "their_size"]),
    Break("first-worker-holds-the-zygote-socket", "a worker holds none of the pool's fds",
          "parallelbar_clone/backends.py",
          "            fds.append(self.zygote.fileno())\n",
          "            pass\n",
          ["tests/test_zygote.py::test_first_workers_are_forked_by_the_caller_and_"
           "replacements_by_the_zygote[main]"]),
    Break("zygote-quits-before-its-workers", "output of replacement workers is flushed at "
          "close",
          "parallelbar_clone/backends.py",
          "if self.zygote is not None and not any(",
          "if self.zygote is not None or any(",
          ["tests/test_zygote.py::test_what_tasks_printed_is_printed_when_the_pool_closes[2]"]),
    Break("bar-opens-before-the-first-send", "a run's bar opens once every worker has a "
          "chunk",
          "parallelbar_clone/pool.py",
          "            run.bar_due = submitted + BAR_OPEN_WAIT\n",
          "            run.bar_due = submitted + BAR_OPEN_WAIT\n"
          "            self._bars.get().send(run.bar_open.pop(0))\n",
          ["tests/test_engine.py::test_the_bar_opens_after_the_first_chunks_are_sent"]),
    Break("bar-waits-for-a-slow-input", "a bar opens within BAR_OPEN_WAIT of the call",
          "parallelbar_clone/manager.py",
          "            if run.bar_open is not None and (run.bar_due <= now or self._ramped(run)):",
          "            if run.bar_open is not None and self._ramped(run):",
          ["tests/test_engine.py::test_the_bar_opens_before_a_slow_input_gives_its_first_task"]),
    Break("late-bar-loses-the-run-clock", "a bar opened late counts time from the call",
          "parallelbar_clone/bar.py",
          "            lag = max(0.0, monotonic() - since)",
          "            lag = 0.0",
          ["tests/test_bars.py::test_a_bar_opened_late_keeps_the_run_clock"]),
    Break("consumer-ignores-a-pass-in-progress", "the consuming thread lets a pass of the "
          "manager finish first",
          "parallelbar_clone/manager.py",
          "        if self.busy:\n            self.dispatched.clear()",
          "        if False:\n            self.dispatched.clear()",
          ["tests/test_engine.py::test_a_consumer_lets_a_pass_of_the_manager_finish_first"]),
    Break("batches-of-one-millisecond-tasks", "a worker batches millisecond tasks between "
          "two slot writes",
          "parallelbar_clone/worker.py",
          "            if now - checked < BATCH_SECONDS:",
          "            if now - checked < 0.001:",
          ["tests/test_run.py::test_a_worker_batches_millisecond_tasks_between_two_slot_writes"]),
    Break("consumer-polls", "the consuming thread sleeps until the manager wakes it",
          "parallelbar_clone/results.py",
          "WAIT = 0.25\n",
          "WAIT = 0.05\n",
          ["tests/test_engine.py::test_the_consumer_sleeps_until_the_manager_wakes_it"]),
    Break("untouched-chunks-encoded-again", "a task queued behind one that timed out goes "
          "first to the replacement",
          "parallelbar_clone/manager.py",
          "                if parts == [(chunk.start, chunk.end)]:",
          "                if False:",
          ["tests/test_faults.py::test_a_task_queued_behind_a_timed_out_one_goes_first_to_the_"
           "replacement"]),
    Break("close-waits-for-abandoned-runs", "the end of a with block cancels an iterator "
          "still held after a break, and leaves no process",
          "parallelbar_clone/manager.py",
          "                if self.closing is not None:   # (unfinished runs are cancelled: a run left",
          "                if self.closing == \"terminate\" or (self.closing == \"close\" and not "
          "self.runs):  # (",
          ["tests/test_engine.py::test_the_end_of_a_with_block_cancels_an_iterator_still_held"]),
    Break("dropped-pool-keeps-workers", "a pool dropped without close() stops its workers",
          "parallelbar_clone/pool.py",
          "        self._finalizer = weakref.finalize(self, _abandoned, self._manager, self._bars)",
          "        self._finalizer = weakref.finalize(self, print, 'dropped')",
          ["tests/test_engine.py::test_a_pool_dropped_without_close_stops_its_workers"]),
    Break("first-chunks-one-by-one", "the first chunks go over together",
          "parallelbar_clone/feed.py",
          "        if run.policy.per_task is None and not front:",
          "        if False:",
          ["tests/test_engine.py::test_the_first_chunks_go_over_together"]),
    Break("batch-growth-unbounded", "a batch grows at most 8-fold: a quick first task "
          "does not make a batch of hundreds",
          "parallelbar_clone/worker.py",
          "min(int(BATCH_SECONDS / took), stride * BATCH_GROWTH,",
          "min(int(BATCH_SECONDS / took),",
          ["tests/test_run.py::test_a_worker_batches_millisecond_tasks_between_two_slot_writes"]),
    Break("bar-opens-before-the-ramp", "a run's bar opens once each worker has a few "
          "milliseconds of work queued",
          "parallelbar_clone/manager.py",
          "(run.bar_due <= now or self._ramped(run))",
          "(run.bar_due <= now or not self.hungry)",
          ["tests/test_engine.py::test_the_bar_opens_once_each_worker_has_a_few_milliseconds_of_work"]),
    Break("first-counts-open-the-bar", "counts gathered before the bar opens wait for it",
          "parallelbar_clone/manager.py",
          "                                               or run.bar_open is not None)):",
          "                                               or False)):",
          ["tests/test_engine.py::test_the_bar_opens_once_each_worker_has_a_few_milliseconds_of_work"]),
    Break("inherited-tasks-pickled", "a one-call map under fork sends positions in the "
          "tasks its workers inherited",
          "parallelbar_clone/backends.py",
          "        if self.method != \"fork\" or type(tasks) not in SEQUENCES:",
          "        if True:",
          ["tests/test_engine.py::test_a_one_call_map_sends_positions_in_the_tasks_its_workers_inherited"]),
    Break("inherited-positions-shifted", "a worker takes the positions it is sent",
          "parallelbar_clone/worker.py",
          "setup.preloaded[key][lo:lo + n]",
          "setup.preloaded[key][lo + 1:lo + 1 + n]",
          ["tests/test_engine.py::test_a_one_call_map_sends_positions_in_the_tasks_its_workers_inherited"]),
    Break("range-sent-item-by-item", "a range goes to the workers in slices",
          "parallelbar_clone/pool.py",
          "            if run.inherited is not None or type(tasks) is range:",
          "            if run.inherited is not None:",
          ["tests/test_engine.py::test_a_range_goes_to_the_workers_in_slices_not_item_by_item"]),
    Break("collected-results-wake-each-piece", "results gathered into a list wake their "
          "consumer ten times a second at most",
          "parallelbar_clone/manager.py",
          "urgent=len(run.out.items) > 64)",
          "urgent=run.out.items and len(run.out.items) > 64)",
          ["tests/test_engine.py::test_results_gathered_into_a_list_wake_their_consumer_ten_times_a_second"]),
    Break("results-worth-decoding-wait", "results holding WAKE_BYTES wake their consumer "
          "(it decodes them while the workers run)",
          "parallelbar_clone/run.py",
          "if urgent or not self.interval or self.waiting >= WAKE_BYTES:",
          "if urgent or not self.interval:",
          ["tests/test_engine.py::test_results_worth_decoding_wake_their_consumer_while_the_"
           "workers_run", "tests/test_engine.py::test_big_results_wake_their_consumer_at_once"]),
    Break("imap-collected-wakes-each-piece", "progress_imap's results wait as map's do",
          "parallelbar_clone/pool.py",
          "        run = self._submit(func, tasks, mode, options, collected=True)",
          "        run = self._submit(func, tasks, mode, options, collected=mode == 'map')",
          ["tests/test_engine.py::test_results_gathered_into_a_list_wake_their_consumer_ten_times_a_second"]),
    Break("manager-takes-workers-cores", "while every worker has work queued, the "
          "manager waits for a tick when woken (SCHED_BATCH)",
          "parallelbar_clone/manager.py",
          "                self._yield_while_fed()\n",
          "",
          ["tests/test_engine.py::test_the_manager_yields_to_workers_only_while_each_has_work_"
           "queued"]),
    Break("manager-yields-to-hungry-workers", "...and answers at once otherwise",
          "parallelbar_clone/manager.py",
          "        fed = bool(self.runs) and all(",
          "        fed = bool(self.runs) or all(",
          ["tests/test_engine.py::test_the_manager_yields_to_workers_only_while_each_has_work_"
           "queued"]),
    Break("workers-keep-our-policy", "spawned workers run with the pool maker's policy",
          "parallelbar_clone/worker.py",
          "    _take_policy(setup.policy)\n",
          "",
          ["tests/test_engine.py::test_workers_started_by_a_yielding_manager_run_with_their_"
           "makers_policy[spawn]"]),
    Break("manager-never-idle", "the manager is idle between passes",
          "parallelbar_clone/manager.py",
          "                self.busy = False\n",
          "                pass\n",
          ["tests/test_engine.py::test_a_consumer_lets_a_pass_of_the_manager_finish_first"]),
]


def tracked_files() -> List[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def copy_tree(dest: Path, files: List[str]) -> None:
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, target)


def env_for(copy: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"   # a patched file never meets a stale .pyc
    return env


def run_tests(copy: Path, tests: List[str], timeout: int):
    """(exit status, seconds, the failed tests' ids, the output's tail)."""
    started = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           f"--timeout={timeout}", "-o", "addopts=", "-rf", *tests]
    try:
        done = subprocess.run(cmd, cwd=copy, env=env_for(copy), capture_output=True,
                              timeout=timeout * len(tests) + 60)
        code, out = done.returncode, (done.stdout + done.stderr).decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        code, out = -1, f"the tests ran past {exc.timeout} s and were stopped"
    failed = re.findall(r"^FAILED (\S+)", out, re.MULTILINE)
    return code, time.monotonic() - started, failed, out[-1500:]


def apply(copy: Path, brk: Break) -> str:
    """Apply a break in the copy; '' if done, else why not."""
    path = copy / brk.path
    if not path.exists():
        return f"{brk.path} does not exist"
    text = path.read_text()
    count = text.count(brk.old)
    if count != 1:
        return f"the text to replace occurs {count} times in {brk.path}, not once"
    path.write_text(text.replace(brk.old, brk.new))
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="run only breaks whose name contains one")
    parser.add_argument("--list", action="store_true", help="print the table and stop")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the named tests on the unbroken copy first")
    parser.add_argument("--timeout", type=int, default=TEST_TIMEOUT,
                        help=f"seconds per test (default {TEST_TIMEOUT})")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the tests' output for missed breaks and errors")
    args = parser.parse_args()
    chosen = [b for b in BREAKS if not args.names or any(n in b.name for n in args.names)]
    if not chosen:
        parser.error("no break matches " + " ".join(args.names))
    if args.list:
        for b in chosen:
            tries = f" (up to {b.tries} runs)" if b.tries > 1 else ""
            print(f"{b.name}: {b.promise}\n  {b.path}: {b.old.strip()!r} -> {b.new.strip()!r}"
                  f"\n  caught by: {', '.join(b.tests)}{tries}")
        return 0

    started = time.monotonic()
    files = tracked_files()
    problems = 0
    with tempfile.TemporaryDirectory(prefix="pb-breaks-") as tmp:
        base = Path(tmp) / "base"
        copy_tree(base, files)
        where = subprocess.run([sys.executable, "-c", "import parallelbar_clone as p; "
                                "print(p.__file__)"], cwd=base, env=env_for(base),
                               capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(base)):
            print(f"the copy imports parallelbar_clone from {where!r}, not from the copy")
            return 1
        if not args.no_baseline:
            tests = sorted({t for b in chosen for t in b.tests})
            code, took, failed, out = run_tests(base, tests, args.timeout)
            print(f"baseline: {len(tests)} tests on the unbroken copy, {took:.0f} s: "
                  f"{'pass' if code == 0 else 'FAIL'}", flush=True)
            if code != 0:
                print(out)
                print("the named tests must pass before a break can be judged")
                return 1
        width = max(len(b.name) for b in chosen)
        for b in chosen:
            copy = Path(tmp) / b.name
            shutil.copytree(base, copy)
            why = apply(copy, b)
            if why:
                verdict, took, detail = "STALE", 0.0, why
            else:
                took, attempt = 0.0, 0
                while True:
                    attempt += 1
                    code, spent, failed, out = run_tests(copy, b.tests, args.timeout)
                    took += spent
                    if code != 0 or attempt >= b.tries:
                        break
                if code == 1:
                    verdict, detail = "caught", "by " + ", ".join(failed or ["(a timeout)"])
                    if attempt > 1:
                        detail += f" (run {attempt} of up to {b.tries})"
                elif code == 0:
                    verdict, detail = "MISSED", "the tests passed"
                else:
                    verdict, detail = "ERROR", f"pytest exit status {code}"
                if verdict != "caught" and args.verbose:
                    detail += "\n" + out
            problems += verdict != "caught"
            print(f"{b.name:{width}}  {verdict:6} {took:5.1f} s  {detail}", flush=True)
            shutil.rmtree(copy, ignore_errors=True)
    print(f"{len(chosen) - problems} of {len(chosen)} breaks caught "
          f"in {time.monotonic() - started:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
