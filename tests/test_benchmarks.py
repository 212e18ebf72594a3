"""The benchmark's own machinery: its result checks catch wrong, skipped, duplicated
and missing results, its rounds rotate and survive a failing contender, its output
names no machine path, and the engine measures run end to end on tiny inputs.

No timing is asserted here: the numbers belong to ``make bench``."""
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)

import bench_tasks  # noqa: E402
import checks  # noqa: E402
import harness  # noqa: E402
import pool_measures  # noqa: E402
import report  # noqa: E402


# ---------------------------------------------------------------- finite results
def test_every_task_function_changes_its_input():
    assert all(bench_tasks.invert(x) != x for x in range(-5, 1000))
    assert bench_tasks.spin(1000) == bench_tasks.spin_total(1000) != 1000
    with pytest.raises(ValueError, match="equals the input"):
        checks.expect([0, 1, 2], [0, 1, 4], ordered=True)   # x*x at 0 and 1


@pytest.mark.parametrize("ordered", [True, False])
def test_expect_catches_skipped_duplicated_and_missing_results(ordered):
    tasks = list(range(6))
    check = checks.expect(tasks, [~x for x in tasks], ordered)
    check([~x for x in tasks])
    for wrong, says in [(tasks, "result|missing"),                       # work skipped
                        ([~x for x in tasks[:-1]], "results for|missing"),  # one lost
                        ([~0] + [~x for x in tasks[:-1]], "result|duplicated"),
                        ([~x for x in tasks] + [~5], "results for|duplicated")]:
        with pytest.raises(checks.ResultError, match=says):
            check(wrong)


def test_expect_checks_the_order_of_ordered_calls_only():
    tasks = list(range(4))
    shuffled = [~1, ~0, ~3, ~2]
    checks.expect(tasks, [~x for x in tasks], ordered=False)(shuffled)
    with pytest.raises(checks.ResultError, match=r"result\[0\]"):
        checks.expect(tasks, [~x for x in tasks], ordered=True)(shuffled)


# ---------------------------------------------------------------- streams
def test_stream_check_finite_unordered():
    good = checks.StreamCheck(100, ordered=False, finite=True)
    good.consume(iter([~x for x in reversed(range(100))]))
    assert good.problems() == []
    dup = checks.StreamCheck(100, ordered=False, finite=True)
    dup.consume(iter([~x for x in range(99)] + [~7]))
    assert any("duplicated" in p for p in dup.problems())
    assert any("never delivered" in p for p in dup.problems())
    with pytest.raises(checks.ResultError):
        dup.verify()


def test_stream_check_endless_takes_n_and_allows_in_flight_results_once():
    def endless():
        x = 0
        while True:
            yield ~x
            x += 1
    ok = checks.StreamCheck(10, ordered=False, finite=False)
    ok.consume(iter([~x for x in (12, 0, 1, 2, 3, 4, 5, 6, 7, 8)]))   # 12 was in flight
    assert ok.problems() == []
    twice = checks.StreamCheck(10, ordered=False, finite=False)
    twice.consume(iter([~x for x in (12, 12, 1, 2, 3, 4, 5, 6, 7, 8)]))
    assert twice.problems()
    ordered = checks.StreamCheck(10, ordered=True, finite=False)
    ordered.consume(endless())
    assert ordered.count == 10 and ordered.problems() == []
    swapped = checks.StreamCheck(3, ordered=True, finite=False)
    swapped.consume(iter([~1, ~0, ~2]))
    assert swapped.problems()
    with pytest.raises(checks.ResultError, match="not an int"):
        checks.StreamCheck(3, ordered=False, finite=False).consume(iter([None]))


# ---------------------------------------------------------------- rounds
def test_rounds_rotate_and_a_failing_contender_does_not_stop_the_others():
    order = []

    def sampler(name, fail=None):
        def sample():
            order.append(name)
            if fail is not None:
                raise fail
            return {"x": 1.0}
        return sample

    cs = [harness.Contender("A", sampler("A")), harness.Contender("B", sampler("B")),
          harness.Contender("C", sampler("C", checks.ResultError("3 results for 4 tasks"))),
          harness.Contender("D", sampler("D"), needs=["no_such_module_here"])]
    before = len(harness.PROBLEMS)
    harness.rotate(cs, 3, None, "test", warm_up=False)
    assert order == ["A", "B", "C", "B", "A", "A", "B"]   # C fails in round 1
    assert cs[2].error.startswith("wrong result") and cs[2].median("x") is None
    assert cs[3].error.startswith("no_such_module_here not installed")
    assert [len(c.samples) for c in cs] == [3, 3, 0, 0]
    del harness.PROBLEMS[before:]


def test_waiting_is_the_gaps_between_tasks_of_one_worker():
    records = [(1, 0.0, 1.0), (1, 1.5, 2.5), (2, 0.2, 1.2), (2, 1.2, 2.2), (1, 3.0, 4.0)]
    waited, busy, gaps, workers = pool_measures.gaps_by_worker(records)
    assert workers == 2 and busy == pytest.approx(5.0)
    assert sorted(gaps) == pytest.approx([0.0, 0.5, 0.5]) and waited == pytest.approx(1.0)


# ---------------------------------------------------------------- provenance
def test_the_command_and_commit_name_no_machine_path():
    inside = os.path.join(report.REPO, "benchmarks", "results", "x.md")
    line = report.command_line([os.path.join(BENCH, "run.py"), "--markdown", inside,
                                "--markdown=/somewhere/else/y.md", "--quick"])
    assert line == ("python benchmarks/run.py --markdown benchmarks/results/x.md "
                    "--markdown=y.md --quick")
    state = report.source_state()
    assert state.startswith(("`", "unknown")) and report.REPO not in state
    text = "\n".join(report.machine_lines("settings", line))
    assert report.REPO not in text and os.uname().nodename not in text


# ---------------------------------------------------------------- the measures, tiny
def test_engine_measures_run_end_to_end_on_tiny_inputs():
    start = pool_measures._start_sample(pool_measures._ours_barrier(None), 2)()
    assert start["first"] <= start["ready"] <= start["call"]
    respawn = pool_measures._respawn_sample(pool_measures._ours_respawn(None), 0.1, 1, 5)()
    assert len(respawn["latency"]) == 1
    tasks = [(i, 0.0005) for i in range(40)]
    check = checks.expect(tasks, [~i for i in range(40)], ordered=True,
                          same=lambda got, want: got[0] == want)
    waiting = pool_measures._waiting_sample(pool_measures._ours_map, bench_tasks.busy_for,
                                            tasks, 2, check, 4)()
    assert waiting["wait"] >= 0 and waiting["cpu_per_k"] >= 0


def test_a_barrier_that_is_not_met_is_a_wrong_result_not_a_hang():
    with pytest.raises(checks.ResultError, match="pids"):
        pool_measures._check_arrivals([(~0, 7, 1.0), (~1, 7, 1.0)],
                                      [("d", 2, 0), ("d", 2, 1)], 2)


def test_the_timeline_still_finds_the_engine_parts_it_stamps(tmp_path):
    """benchmarks/timeline.py wraps the engine's internals: a renamed part must break it
    here, not on a lent machine."""
    import subprocess
    events = tmp_path / "events.txt"
    out = subprocess.run([sys.executable, os.path.join(BENCH, "timeline.py"), "--tasks", "3000",
                          "--calls", "1", "--events", str(events)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ours = [line for line in out.stdout.splitlines() if line.startswith("ours")]
    assert len(ours) == 1 and "2 workers started by" in ours[0] and "results" in ours[0], out.stdout
    assert "Pool.map 0: total" in out.stdout
    stamped = {line.split()[1].split("w")[0] for line in events.read_text().splitlines()[1:]}
    assert {"start>", "<start", "send", "msg", "enc", "dec", "<close"} <= stamped, stamped


def test_the_before_after_script_runs_a_commit_beside_the_working_tree():
    """benchmarks/ab.py copies each revision out of git as its own package and times
    them side by side: every contender gets each round, with ratios paired per round."""
    import subprocess
    out = subprocess.run([sys.executable, os.path.join(BENCH, "ab.py"), "--workers", "2",
                          "--rounds", "3", "HEAD", "worktree"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("trivial, 200,000 tasks, 2 workers, 3 rotated rounds"), lines
    assert [line.split()[0] for line in lines[1:]] == ["Pool.map", "HEAD", "worktree"], lines
    assert "x Pool paired" in lines[2] and "x HEAD paired" in lines[3], lines
