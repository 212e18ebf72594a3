"""Checkpoint and resume: kill a real run with SIGKILL, run it again, lose nothing."""
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

import tasks
from parallelbar_clone import (CheckpointMismatchError, ProgressPool, SerializationError,
                               load_checkpoint,
                               progress_imap, progress_map)

HERE = os.path.dirname(__file__)
N = 600


def _lines(log):
    with open(log) as f:
        return [int(line) for line in f.read().split()]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path):
    path, log = str(tmp_path / "run.sqlite"), str(tmp_path / "log")
    env = dict(os.environ, CHECKPOINT_TEST_LOG=log)
    cmd = [sys.executable, os.path.join(HERE, "checkpoint_script.py"), path, str(N)]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(log) or len(_lines(log)) < N // 2:
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.01)
    os.killpg(first.pid, signal.SIGKILL)  # the parent and its workers, like a power cut
    first.wait()
    ran_first = _lines(log)
    journalled = set(load_checkpoint(path).results)
    assert 0 < len(journalled) < N

    second = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert second.returncode == 0 and b"complete" in second.stdout, second.stderr.decode()[-2000:]
    ran_second = _lines(log)[len(ran_first):]
    # the second run ran exactly what the journal did not have, each once
    assert sorted(ran_second) == sorted(set(range(N)) - journalled)
    assert max(Counter(ran_second).values()) == 1
    # what ran twice is only what was in flight or in the last commit window
    twice = set(ran_first) & set(ran_second)
    assert twice == set(ran_first) - journalled
    assert len(twice) <= 100, len(twice)  # ~2 workers x (0.25 s window + 0.1 s piece) / 10 ms
    assert b"resumed=" in second.stderr
    checkpoint = load_checkpoint(path)
    assert len(checkpoint) == N and checkpoint.results == {x: x * 3 for x in range(N)}


def test_resume_returns_the_full_result_and_reruns_failures(tmp_path, capsys):
    path = str(tmp_path / "c.sqlite")
    first = progress_map(tasks.raises, range(40), checkpoint=path, n_cpu=2,
                         error_behavior="coerce")
    assert isinstance(first[tasks.FAULT_AT], ValueError)
    saved = load_checkpoint(path)
    assert len(saved.results) == 39 and list(saved.failures) == [tasks.FAULT_AT]
    assert "task five is bad" in saved.failures[tasks.FAULT_AT].traceback
    capsys.readouterr()
    again = progress_map(tasks.raises, range(40), checkpoint=path, n_cpu=2,
                         error_behavior="coerce")
    assert [r for i, r in enumerate(again) if i != tasks.FAULT_AT] == \
        [x * 10 for x in range(40) if x != tasks.FAULT_AT]
    assert isinstance(again[tasks.FAULT_AT], ValueError)  # it ran again, and failed again
    assert "resumed=39" in capsys.readouterr().err


def test_keep_failures_does_not_rerun_them(tmp_path):
    path = str(tmp_path / "c.sqlite")
    progress_map(tasks.raises, range(12), checkpoint=path, n_cpu=2, error_behavior="coerce",
                 disable=True)
    again, failed = progress_map(tasks.raises, range(12), checkpoint=path, n_cpu=2,
                                 error_behavior="coerce", keep_failures=True, disable=True,
                                 return_failed_tasks=True)
    assert isinstance(again[tasks.FAULT_AT], ValueError) and failed == [tasks.FAULT_AT]


@pytest.mark.parametrize("change,key", [
    (dict(func=tasks.pid_of), "function"),
    (dict(tasks=range(101)), "total"),
    (dict(tasks=range(1, 101)), "first_tasks_digest"),
])
def test_a_different_call_is_refused(tmp_path, change, key):
    path = str(tmp_path / "c.sqlite")
    progress_map(tasks.times_ten, range(100), checkpoint=path, disable=True)
    call = dict(func=tasks.times_ten, tasks=range(100))
    call.update(change)
    with pytest.raises(CheckpointMismatchError) as info:
        progress_map(call["func"], call["tasks"], checkpoint=path, disable=True)
    assert key in str(info.value) and "overwrite_checkpoint=True" in str(info.value)
    fresh = progress_map(call["func"], call["tasks"], checkpoint=path, disable=True,
                         overwrite_checkpoint=True)
    assert len(fresh) == len(call["tasks"])


def test_changed_task_beyond_the_head_is_refused(tmp_path):
    path = str(tmp_path / "c.sqlite")
    data = list(range(1000))
    progress_map(tasks.times_ten, data, checkpoint=path, disable=True)
    data[700] = -1
    with pytest.raises(CheckpointMismatchError, match="differ from the ones it journalled"):
        progress_map(tasks.times_ten, data, checkpoint=path, disable=True)


def test_sets_as_tasks_resume_across_processes(tmp_path):
    """Set order depends on per-process string hashing: the content check must not."""
    path = str(tmp_path / "c.sqlite")
    code = ("import sys; sys.path.insert(0, %r); import tasks; "
            "from parallelbar_clone import progress_map; "
            "print(progress_map(tasks.set_size, [{'a%%d' %% i, 'b', 'c'} for i in range(300)], "
            "checkpoint=%r, disable=True, n_cpu=1)[:3])") % (HERE, path)
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert b"[3, 3, 3]" in done.stdout


def test_unstorable_result_is_kept_and_journalled_as_a_failure(tmp_path, caplog):
    """A thread worker's result that neither pickle nor dill can store: the caller gets
    it all the same, and the journal records a SerializationError for that task, so a
    resumed run runs it again."""
    path = str(tmp_path / "c.sqlite")
    result = progress_map(_generator_at_two, range(5), executor="threads", checkpoint=path,
                          error_behavior="coerce", disable=True)
    assert type(result[2]).__name__ == "generator"
    assert [result[i] for i in (0, 1, 3, 4)] == [0, 1, 3, 4]
    assert "cannot be stored in the checkpoint journal" in caplog.text
    stored = load_checkpoint(path)
    assert isinstance(stored.failures[2], SerializationError)
    assert "generator" in str(stored.failures[2])
    assert sorted(stored.results) == [0, 1, 3, 4]
    _calls.clear()
    again = progress_map(_generator_at_two, range(5), executor="threads", checkpoint=path,
                         error_behavior="coerce", disable=True)
    assert _calls == [2] and type(again[2]).__name__ == "generator"   # only it ran again


_calls = []


def _generator_at_two(x):
    _calls.append(x)
    return (i for i in range(x)) if x == 2 else x


def test_checkpoint_with_imap_and_generator(tmp_path):
    path = str(tmp_path / "c.sqlite")
    first = progress_imap(tasks.times_ten, (x for x in range(300)), checkpoint=path,
                          disable=True)
    again = progress_imap(tasks.times_ten, (x for x in range(300)), checkpoint=path,
                          disable=True)
    assert first == again == [x * 10 for x in range(300)]


def test_progress_pool_methods_take_a_checkpoint(tmp_path):
    path = str(tmp_path / "c.sqlite")
    with ProgressPool(n_cpu=2, disable=True) as pool:
        it = pool.imap_unordered(tasks.times_ten, range(500), checkpoint=path)
        first = sorted(itertools.islice(it, 200))  # stop half-way, like a crash
        it.close()
        done = load_checkpoint(path)
        assert 0 < len(done) <= 500 and all(v == k * 10 for k, v in done.results.items())
        again = pool.map(tasks.times_ten, range(500), checkpoint=path)
    assert again == [x * 10 for x in range(500)] and len(first) == 200
