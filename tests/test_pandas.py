"""df.pbar / series.pbar against pandas' own results, and faults found by their labels.

Frames have a string index (r0, r1, ...), mixed dtypes, and blocks of 4 rows
(chunk_size=4) where a fault must hit one row of a block and spare the other three.
Runs under pandas 2.x and 3.x (``make test-pandas PANDAS=2`` / ``PANDAS=3``); skipped
where pandas is not installed.
"""
import json
import os
import subprocess
import sys
import warnings

import pytest

pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")

import pandas_tasks as pt  # noqa: E402
import parallelbar_clone.pandas  # noqa: E402,F401  (registers .pbar)
from pandas.testing import assert_frame_equal, assert_series_equal  # noqa: E402
from parallelbar_clone import TaskTimeoutError, WorkerDiedError, progress_map  # noqa: E402
from parallelbar_clone.errors import SerializationError  # noqa: E402

HERE = os.path.dirname(__file__)
N = 24
QUICK = dict(n_cpu=2, disable=True)
BLOCKS = dict(QUICK, chunk_size=4)


def make_frame(n=N):
    return pd.DataFrame({
        "qty": np.arange(n, dtype=np.int64) % 7 + 1,
        "price": np.round(np.linspace(0.5, 12.0, n), 2),
        "name": [f"item{i % 5}" for i in range(n)],
        "when": pd.date_range("2024-01-01", periods=n, freq="h"),
        "ok": [i % 3 == 0 for i in range(n)],
        "kind": pd.Categorical([("a", "b", "c")[i % 3] for i in range(n)]),
    }, index=pd.Index([f"r{i}" for i in range(n)], name="id"))


@pytest.fixture
def df():
    return make_frame()


def assert_same(ours, theirs):
    if isinstance(theirs, pd.DataFrame):
        assert_frame_equal(ours, theirs)
    else:
        assert_series_equal(ours, theirs)


# ------------------------------------------------------------------ equal to pandas' own

CASES = {
    "rows-scalar": (lambda d: d.pbar.apply(pt.score, axis=1, **QUICK),
                    lambda d: d.apply(pt.score, axis=1)),
    "rows-series": (lambda d: d.pbar.apply(pt.describe, axis=1, **BLOCKS),
                    lambda d: d.apply(pt.describe, axis=1)),
    "rows-list": (lambda d: d.pbar.apply(pt.as_list, axis=1, **BLOCKS),
                  lambda d: d.apply(pt.as_list, axis=1)),
    "rows-expand": (lambda d: d.pbar.apply(pt.as_list, axis=1, result_type="expand", **BLOCKS),
                    lambda d: d.apply(pt.as_list, axis=1, result_type="expand")),
    "rows-raw": (lambda d: d[["qty", "price"]].pbar.apply(np.sum, axis=1, raw=True, **BLOCKS),
                 lambda d: d[["qty", "price"]].apply(np.sum, axis=1, raw=True)),
    "columns": (lambda d: d.pbar.apply(pt.column_summary, **QUICK),
                lambda d: d.apply(pt.column_summary)),
    "map-str": (lambda d: d["name"].pbar.map(pt.upper, **BLOCKS),
                lambda d: d["name"].map(pt.upper)),
    "map-datetime": (lambda d: d["when"].pbar.map(lambda t: t.hour, **BLOCKS),
                     lambda d: d["when"].map(lambda t: t.hour)),
    "map-category": (lambda d: d["kind"].pbar.map(pt.upper, **QUICK),
                     lambda d: d["kind"].map(pt.upper)),
    "apply-args": (lambda d: d["qty"].pbar.apply(lambda x, k: x * k, args=(2.5,), **BLOCKS),
                   lambda d: d["qty"].apply(lambda x, k: x * k, args=(2.5,))),
    "apply-to-series": (lambda d: d["qty"].pbar.apply(lambda x: pd.Series([x, -x]), **BLOCKS),
                        lambda d: d["qty"].apply(lambda x: pd.Series([x, -x]))),
    "groupby-scalar": (lambda d: d.pbar.groupby_apply("name", pt.spread, **QUICK),
                       lambda d: d.groupby("name")[["qty", "price", "when", "ok", "kind"]]
                       .apply(pt.spread)),
    "groupby-frame": (lambda d: d.pbar.groupby_apply(["name", "ok"], pt.group_frame, **QUICK),
                      lambda d: d.groupby(["name", "ok"])[["qty", "price", "when", "kind"]]
                      .apply(pt.group_frame)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_equal_to_pandas(case, df):
    ours, theirs = CASES[case]
    assert_same(ours(df), theirs(df))


def test_lambda_and_na_action_under_spawn(df):
    s = df["price"].where(df["qty"] > 2)  # some NaN
    double = lambda x: x * 2  # noqa: E731  (a lambda: travels through dill)
    assert_same(s.pbar.map(double, na_action="ignore", context="spawn", **BLOCKS),
                s.map(double, na_action="ignore"))
    assert_same(df.pbar.apply(lambda r: r["name"] * 2, axis=1, context="spawn", **BLOCKS),
                df.apply(lambda r: r["name"] * 2, axis=1))


def test_groupby_apply_is_pandas_3_apply(df):
    if int(pd.__version__.split(".")[0]) < 3:
        pytest.skip("pandas 3's groupby().apply excludes the grouping columns")
    assert_same(df.pbar.groupby_apply("name", pt.spread, **QUICK),
                df.groupby("name").apply(pt.spread))


@pytest.mark.parametrize("case", ["rows-scalar", "rows-series", "columns", "map-str",
                                  "map-category", "apply-args", "groupby-scalar"])
def test_empty_input_is_pandas_own(case):
    empty = make_frame(0)
    ours, theirs = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same(ours(empty), theirs(empty))


def test_threads_executor(df):
    assert_same(df.pbar.apply(pt.score, axis=1, executor="threads", **BLOCKS),
                df.apply(pt.score, axis=1))


# ------------------------------------------------------------------ faults, by label

def check_others(result, df, func_of_row):
    good = result.drop(pt.BAD)
    expected = df.drop(pt.BAD).apply(func_of_row, axis=1)
    assert_series_equal(good, expected.astype(good.dtype))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("func,options,error", [
    (pt.raises, {}, ValueError),
    (pt.hangs_in_c, {"process_timeout": 0.5}, TaskTimeoutError),
    (pt.segfaults, {}, WorkerDiedError),
    (pt.unpicklable, {}, SerializationError),
], ids=["raise", "hang", "segfault", "unpicklable"])
def test_a_bad_row_fails_alone(func, options, error, df):
    result, failed = df.pbar.apply(func, axis=1, error_behavior="coerce", set_error_value=np.nan,
                                   return_failed_tasks=True, **BLOCKS, **options)
    assert failed == [pt.BAD]
    assert result.dtype == np.float64 and np.isnan(result[pt.BAD])
    assert list(result.index) == list(df.index)
    check_others(result, df, lambda r: r["qty"] * 1.5)  # r4, r6, r7 share its block

    coerced = df.pbar.apply(func, axis=1, error_behavior="coerce", **BLOCKS, **options)
    exc = coerced[pt.BAD]
    assert isinstance(exc, error) and exc.index_label == pt.BAD

    kept = df.pbar.apply(func, axis=1, error_behavior="ignore", **BLOCKS, **options)
    assert list(kept.index) == [i for i in df.index if i != pt.BAD]

    with pytest.raises(error) as info:
        df.pbar.apply(func, axis=1, **BLOCKS, **options)
    assert info.value.index_label == pt.BAD


def test_series_rows_with_a_failure_are_pandas_own(df):
    """A row returning a Series fails: pandas broadcasts the NaN along its row."""
    def describe_or_raise(row):
        if row.name == pt.BAD:
            raise ValueError("no")
        return pt.describe(row)
    result = df.pbar.apply(describe_or_raise, axis=1, error_behavior="coerce",
                           set_error_value=np.nan, **BLOCKS)
    expected = df.apply(lambda r: np.nan if r.name == pt.BAD else pt.describe(r), axis=1)
    assert_frame_equal(result, expected)
    kept = df.pbar.apply(describe_or_raise, axis=1, error_behavior="ignore", **BLOCKS)
    assert_frame_equal(kept, df.drop(pt.BAD).apply(pt.describe, axis=1))


def test_row_error_keeps_its_traceback(df):
    result = df.pbar.apply(pt.raises, axis=1, error_behavior="coerce", **BLOCKS)
    exc = result[pt.BAD]
    assert "bad row r5" in str(exc) and "pandas_tasks.py" in exc.traceback


def test_series_map_failures_by_label(df):
    s = df["name"].where(df.index != "r9", "poison")
    result, failed = s.pbar.map(pt.text_len, error_behavior="coerce", set_error_value=-1,
                                return_failed_tasks=True, **BLOCKS)
    assert failed == ["r9"]
    expected = s.map(lambda t: -1 if t == "poison" else len(t))
    assert_series_equal(result, expected)


def test_failed_group_and_column_by_label(df):
    def spread_or_fail(group):
        if group["qty"].iloc[0] == 1:  # the group of item0 starts with qty 1
            raise ValueError("no")
        return pt.spread(group)
    result, failed = df.pbar.groupby_apply("name", spread_or_fail, error_behavior="ignore",
                                           return_failed_tasks=True, **QUICK)
    assert failed == ["item0"]
    assert_series_equal(result, df[df["name"] != "item0"].groupby("name")[
        ["qty", "price", "when", "ok", "kind"]].apply(pt.spread))

    by = df["qty"].to_numpy() % 2  # keys that are no column
    result = df.pbar.groupby_apply(by, spread_or_fail, error_behavior="ignore", **QUICK)
    first_rows = df.groupby(by).head(1)
    failing = set(by[np.flatnonzero(df.index.isin(first_rows.index[first_rows["qty"] == 1]))])
    keep = ~np.isin(by, list(failing))
    assert_series_equal(result, df[keep].groupby(by[keep]).apply(pt.spread))

    def numeric_only(column):
        return column.sum() if column.dtype.kind in "if" else column.dtype.kind / 0
    result, failed = df.pbar.apply(numeric_only, error_behavior="coerce",
                                   set_error_value=np.nan, return_failed_tasks=True, **QUICK)
    assert failed == ["name", "when", "ok", "kind"]
    assert result["qty"] == df["qty"].sum() and np.isnan(result["when"])


def test_retries_rerun_a_flaky_row(df, tmp_path):
    paths = (str(tmp_path / "log"), str(tmp_path / "marker"))
    result = df.pbar.apply(pt.logged_score, axis=1, args=paths, retries=1,
                           error_behavior="coerce", **BLOCKS)
    assert isinstance(result[pt.BAD], ConnectionError) and result[pt.BAD].attempts == 2
    assert open(paths[0]).read().split().count(pt.BAD) == 2


# ------------------------------------------------------------------ checkpoint and resume

def test_checkpointed_run_resumes(df, tmp_path):
    """A first run in another process fails on one row; the second, resumed from its
    journal, runs only that row's block and returns the whole result."""
    paths = (str(tmp_path / "log"), str(tmp_path / "marker"))
    journal = str(tmp_path / "run.sqlite")
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "import pandas_tasks as pt, test_pandas as t, parallelbar_clone.pandas\n"
        "r = t.make_frame().pbar.apply(pt.logged_score, axis=1, args=%r, checkpoint=%r,"
        " error_behavior='coerce', chunk_size=4, n_cpu=2, disable=True)\n"
        "print(type(r[pt.BAD]).__name__)\n" % (HERE, paths, journal))
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                           cwd=HERE)
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    assert first.stdout.decode().strip() == "ConnectionError"
    assert sorted(open(tmp_path / "log").read().split()) == sorted(df.index)

    open(tmp_path / "marker", "w").close()
    os.remove(tmp_path / "log")
    result = df.pbar.apply(pt.logged_score, axis=1, args=paths, checkpoint=journal, **BLOCKS)
    assert_series_equal(result, df.apply(lambda r: r["qty"] * r["price"], axis=1))
    assert sorted(open(tmp_path / "log").read().split()) == ["r4", "r5", "r6", "r7"]


# ------------------------------------------------------------------ the rest of the API

def test_progress_map_over_a_dataframe_warns(df):
    with pytest.warns(UserWarning, match="column names.*df.pbar.apply"):
        assert progress_map(len, df, **QUICK) == [len(c) for c in df.columns]


@pytest.mark.parametrize("call,error,words", [
    (lambda d: d.pbar.apply(pt.score, axis=2), ValueError, "axis=2"),
    (lambda d: d.pbar.apply(pt.score, axis=1, n_cpus=2), TypeError, "n_cpus"),
    (lambda d: d.pbar.apply(pt.score, axis=1, process_timeout=-1), ValueError, "process_timeout"),
    (lambda d: d["qty"].pbar.map({1: 2}), TypeError, "func must be callable"),
    (lambda d: d["qty"].pbar.map(str, na_action="skip"), ValueError, "na_action"),
    (lambda d: d.pbar.apply(pt.score, result_type="wide"), ValueError, "result_type"),
])
def test_bad_arguments_say_what_is_allowed(call, error, words, df):
    with pytest.raises(error, match=words):
        call(df)


@pytest.mark.timeout(120)
def test_pandas_notebook_runs(tmp_path):
    """The notebook's code, fed to an interpreter as a notebook would run it (its
    functions defined in a __main__ without a file travel by value)."""
    with open(os.path.join(HERE, "..", "notebooks", "pandas.ipynb")) as f:
        notebook = json.load(f)
    code = "\n\n".join("".join(cell["source"]) for cell in notebook["cells"]
                       if cell["cell_type"] == "code")
    assert "n = 10_000\n" in code
    code = code.replace("n = 10_000\n", "n = 3_000\n")  # the same story, quicker
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    out = done.stdout.decode()
    assert "failed rows: ['A100123', 'A101777', 'A102042']" in out
    assert "A102042 TaskTimeoutError" in out and "same result: True" in out
