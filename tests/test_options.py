"""Options: every argument is checked once, before any process starts, and each error
says what was given and what is allowed. No pool here: part of ``make mutate``'s fast set."""
import multiprocessing
import os
import pathlib
import sys
import textwrap
import types

import pytest

from parallelbar_clone import options as options_module
from parallelbar_clone.options import (NEW_OPTION_NAMES, PARAMETERS, POOL_FIELDS, Options,
                                       check_func, default_context, default_n_cpu,
                                       is_dask_client, parameters_doc, parse_memory, uses_dask)


# ------------------------------------------------------------------ memory sizes

@pytest.mark.parametrize("text,expected", [
    ("1", 1), ("1B", 1), ("1b", 1), ("7 B", 7),
    ("1K", 1000), ("1KB", 1000), ("1kb", 1000), ("1MB", 10 ** 6), ("1GB", 10 ** 9),
    ("1TB", 10 ** 12), ("1KiB", 1024), ("1kib", 1024), ("1MiB", 2 ** 20), ("1GiB", 2 ** 30),
    ("1TiB", 2 ** 40), ("1Mi", 2 ** 20), ("  10 mb  ", 10 ** 7), ("1.5GB", 1_500_000_000),
    (".5GB", 500_000_000), ("2.MB", 2_000_000), ("512MB", 512 * 10 ** 6),
])
def test_memory_sizes(text, expected):
    assert parse_memory(text) == expected


def test_memory_as_bytes():
    assert parse_memory(1) == 1 and parse_memory(10 ** 12) == 10 ** 12


@pytest.mark.parametrize("value", [True, 1.5, None, b"1MB", [1]])
def test_memory_of_another_type_is_a_type_error(value):
    with pytest.raises(TypeError) as info:
        parse_memory(value)
    assert str(info.value) == (f"memory_limit must be an int (bytes) or a string such as "
                               f"'512MB', got {type(value).__name__} {value!r}")


@pytest.mark.parametrize("text", ["lots", "", "MB", "1 XB", "1MBB", "-1MB", "1e3", "1,5GB",
                                  "1 2MB"])
def test_memory_string_that_is_no_size(text):
    with pytest.raises(ValueError) as info:
        parse_memory(text)
    assert str(info.value) == (
        f"memory_limit {text!r} is not a size: use bytes as an int, or a number with a unit: "
        f"B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. "
        f"'512MB' or '2GiB'")


@pytest.mark.parametrize("value", [0, -5, "0MB", "0", "0.0000001KB"])
def test_memory_must_be_more_than_nothing(value):
    with pytest.raises(ValueError) as info:
        parse_memory(value)
    assert str(info.value) == f"memory_limit must be more than 0 bytes, got {value!r}"


# ------------------------------------------------------------------ defaults

def test_default_context_is_fork_where_it_exists_but_macos(monkeypatch):
    monkeypatch.setattr(options_module.sys, "platform", "linux")
    monkeypatch.setattr(multiprocessing, "get_all_start_methods",
                        lambda: ["fork", "spawn", "forkserver"])
    assert default_context() == "fork"
    monkeypatch.setattr(options_module.sys, "platform", "darwin")
    assert default_context() == "spawn"
    monkeypatch.setattr(options_module.sys, "platform", "win32")
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert default_context() == "spawn"


def test_default_n_cpu_counts_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_n_cpu() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(), raising=False)
    assert default_n_cpu() == 1


@pytest.mark.parametrize("problem", [AttributeError, OSError])
def test_default_n_cpu_without_affinity(monkeypatch, problem):
    def no_affinity(pid):
        raise problem("no affinity here")
    monkeypatch.setattr(os, "sched_getaffinity", no_affinity, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert default_n_cpu() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_n_cpu() == 1


def test_defaults_are_the_published_ones():
    opts = Options()
    assert (opts.n_cpu, opts.executor, opts.context, opts.initializer, opts.initargs) == \
        (None, "processes", None, None, ())
    assert (opts.maxtasksperchild, opts.chunk_size, opts.total, opts.disable) == \
        (None, None, None, False)
    assert (opts.process_timeout, opts.memory_limit, opts.error_behavior,
            opts.set_error_value) == (None, None, "raise", None)
    assert (opts.need_serialize, opts.used_add_progress_decorator, opts.return_failed_tasks,
            opts.timeout) == (False, False, False, None)
    assert (opts.retries, opts.retry_delay, opts.retry_backoff, opts.retry_on) == \
        (0, 0.0, 1.0, Exception)
    assert (opts.checkpoint, opts.overwrite_checkpoint, opts.keep_failures) == \
        (None, False, False)


def test_workers_and_start_method(monkeypatch):
    monkeypatch.setattr(options_module, "default_n_cpu", lambda: 13)
    monkeypatch.setattr(options_module, "default_context", lambda: "forkserver")
    assert Options().workers == 13 and Options(n_cpu=3).workers == 3
    assert Options().start_method == "forkserver"
    assert Options(context="spawn").start_method == "spawn"


# ------------------------------------------------------------------ each check's message

def test_func_must_be_callable():
    check_func(len)
    with pytest.raises(TypeError) as info:
        check_func(42)
    assert str(info.value) == "func must be callable, got int 42"


@pytest.mark.parametrize("name", ["n_cpu", "maxtasksperchild", "chunk_size"])
def test_counts_of_at_least_one(name):
    assert getattr(Options(**{name: 1}), name) == 1
    assert getattr(Options(**{name: None}), name) is None
    with pytest.raises(ValueError) as info:
        Options(**{name: 0})
    assert str(info.value) == f"{name} must be at least 1 (or None), got 0"
    for wrong in (2.0, True, "3"):
        with pytest.raises(TypeError) as info:
            Options(**{name: wrong})
        assert str(info.value) == \
            f"{name} must be an int or None, got {type(wrong).__name__} {wrong!r}"


def test_total_may_be_zero():
    assert Options(total=0).total == 0
    with pytest.raises(ValueError, match=r"^total must be at least 0 \(or None\), got -1$"):
        Options(total=-1)


@pytest.mark.parametrize("name", ["process_timeout", "timeout"])
def test_seconds_must_be_more_than_zero(name):
    assert getattr(Options(**{name: 0.001}), name) == 0.001
    assert getattr(Options(**{name: 2}), name) == 2
    for wrong in (0, -1, float("nan")):
        with pytest.raises(ValueError) as info:
            Options(**{name: wrong})
        assert str(info.value) == \
            f"{name} must be more than 0 seconds (or None for no limit), got {wrong!r}"
    for wrong in (True, "1", [1]):
        with pytest.raises(TypeError) as info:
            Options(**{name: wrong})
        assert str(info.value) == \
            f"{name} must be a number of seconds or None, got {type(wrong).__name__} {wrong!r}"


def test_error_behavior_choices():
    with pytest.raises(ValueError) as info:
        Options(error_behavior="explode")
    assert str(info.value) == \
        "error_behavior='explode' is not allowed; use one of 'raise', 'coerce', 'ignore'"


@pytest.mark.parametrize("wrong", ["explode", "Processes", 5, None, "dask:"])
def test_executor_choices(wrong):
    with pytest.raises(ValueError) as info:
        Options(executor=wrong)
    assert str(info.value) == (
        f"executor={wrong!r} is not allowed; use 'processes', 'threads', 'dask', a dask "
        "scheduler address such as 'tcp://host:8786', or a distributed.Client")


@pytest.mark.parametrize("right", ["processes", "threads", "dask", "tcp://127.0.0.1:8786",
                                   "tls://scheduler:8786"])
def test_executor_accepted(right):
    assert Options(executor=right).executor == right


def test_contexts_are_those_of_this_platform():
    for method in multiprocessing.get_all_start_methods():
        assert Options(context=method).context == method
    with pytest.raises(ValueError) as info:
        Options(context="teleport")
    allowed = ", ".join(repr(m) for m in multiprocessing.get_all_start_methods())
    assert str(info.value) == f"context='teleport' is not allowed; use one of {allowed}"


def test_initializer_and_initargs():
    assert Options(initializer=print, initargs=[1, 2]).initargs == (1, 2)
    with pytest.raises(TypeError) as info:
        Options(initializer=5)
    assert str(info.value) == "initializer must be callable or None, got int 5"
    with pytest.raises(TypeError) as info:
        Options(initargs="ab")
    assert str(info.value) == "initargs must be a tuple, got str 'ab'"


def test_memory_limit_is_parsed_and_needs_processes():
    assert Options(memory_limit="2GiB").memory_limit == 2 * 2 ** 30
    assert Options(memory_limit=1000, executor="processes").memory_limit == 1000
    with pytest.raises(ValueError) as info:
        Options(memory_limit="1GB", executor="threads")
    assert str(info.value) == ("memory_limit needs executor='processes': a thread cannot be "
                               "stopped or measured on its own")
    assert Options(executor="threads").memory_limit is None


def test_retries():
    assert Options(retries=3).retries == 3
    with pytest.raises(TypeError) as info:
        Options(retries=None)
    assert str(info.value) == "retries must be an int (0 for none), got None"
    with pytest.raises(ValueError, match=r"^retries must be at least 0 \(or None\), got -1$"):
        Options(retries=-1)


@pytest.mark.parametrize("name,low,ok,wrong", [
    ("retry_delay", 0.0, [0, 0.0, 2.5], [-0.1, True, "1", None, float("nan")]),
    ("retry_backoff", 1.0, [1, 1.0, 2], [0.99, 0, True, "2", None]),
])
def test_retry_timing(name, low, ok, wrong):
    for value in ok:
        assert getattr(Options(**{name: value}), name) == value
    for value in wrong:
        with pytest.raises(ValueError) as info:
            Options(**{name: value})
        assert str(info.value) == f"{name} must be a number >= {low}, got {value!r}"


def test_retry_on_takes_exception_classes():
    assert Options(retry_on=KeyError).retry_on is KeyError
    assert Options(retry_on=(KeyError, OSError)).retry_on == (KeyError, OSError)
    assert Options(retry_on=KeyboardInterrupt).retry_on is KeyboardInterrupt
    for wrong in ((), "KeyError", int, (KeyError, 5), KeyError("x"), [KeyError]):
        with pytest.raises(TypeError) as info:
            Options(retry_on=wrong)
        assert str(info.value) == \
            f"retry_on must be an exception class or a tuple of them, got {wrong!r}"


def test_checkpoint_is_a_path():
    assert Options(checkpoint="a.sqlite").checkpoint == "a.sqlite"
    path = pathlib.Path("dir") / "b.sqlite"
    assert Options(checkpoint=path).checkpoint == os.fspath(path)
    with pytest.raises(TypeError) as info:
        Options(checkpoint=5)
    assert str(info.value) == "checkpoint must be a file path (str or os.PathLike), got int 5"


@pytest.mark.parametrize("name", ["disable", "need_serialize", "used_add_progress_decorator",
                                  "return_failed_tasks", "overwrite_checkpoint",
                                  "keep_failures"])
def test_flags_are_true_or_false(name):
    assert getattr(Options(**{name: True}), name) is True
    for wrong in (1, "yes", None):
        with pytest.raises(TypeError) as info:
            Options(**{name: wrong})
        assert str(info.value) == \
            f"{name} must be True or False, got {type(wrong).__name__} {wrong!r}"


def test_options_are_frozen():
    with pytest.raises(AttributeError):
        Options().n_cpu = 2


# ------------------------------------------------------------------ per-call settings

def test_a_call_may_change_run_settings():
    pool = Options(n_cpu=2, process_timeout=5)
    call = pool.with_call(process_timeout=1, memory_limit="1KB", n_cpu=2)
    assert (call.n_cpu, call.process_timeout, call.memory_limit) == (2, 1, 1000)
    assert pool.process_timeout == 5 and pool.memory_limit is None
    with pytest.raises(ValueError, match="chunk_size must be at least 1"):
        pool.with_call(chunk_size=0)      # validated again


def test_a_call_may_not_name_unknown_options():
    with pytest.raises(TypeError) as info:
        Options().with_call(size=1, colour="blue")
    allowed = ", ".join(sorted(f for f in Options.__dataclass_fields__))
    assert str(info.value) == f"unexpected option(s) colour, size; allowed: {allowed}"


def test_a_call_may_not_change_how_workers_are_made():
    pool = Options(n_cpu=2, maxtasksperchild=5)
    with pytest.raises(TypeError) as info:
        pool.with_call(n_cpu=4, maxtasksperchild=6, executor="processes")
    assert str(info.value) == ("maxtasksperchild, n_cpu fix(es) how a ProgressPool makes its "
                               "workers: pass it to ProgressPool(...), not to one call")
    assert POOL_FIELDS == {"n_cpu", "executor", "context", "initializer", "initargs",
                           "maxtasksperchild"}


def test_new_option_names():
    assert NEW_OPTION_NAMES == {"memory_limit", "retries", "retry_delay", "retry_backoff",
                                "retry_on", "checkpoint", "overwrite_checkpoint",
                                "keep_failures"}


# -- dask executors, checked without importing dask -------------------------------------
class _FakeClient:
    pass


@pytest.fixture
def fake_distributed(monkeypatch):
    """A stand-in ``distributed`` module in sys.modules: what is_dask_client looks at."""
    module = types.ModuleType("distributed")
    module.Client = _FakeClient
    monkeypatch.setitem(sys.modules, "distributed", module)
    return module


def test_a_client_is_recognised_only_once_distributed_is_imported(monkeypatch, fake_distributed):
    client = _FakeClient()
    assert is_dask_client(client) and uses_dask(client)
    assert Options(executor=client).executor is client
    assert not is_dask_client(object()) and not is_dask_client("dask")
    fake_distributed.Client = "not a class"
    assert not is_dask_client(client)
    monkeypatch.delitem(sys.modules, "distributed")
    assert not is_dask_client(client) and not uses_dask(client)
    with pytest.raises(ValueError, match="is not allowed"):
        Options(executor=client)


@pytest.mark.parametrize("executor,dask", [
    ("dask", True), ("tcp://10.0.0.1:8786", True), ("inproc://x", True),
    ("processes", False), ("threads", False), ("Dask", False), (None, False), (5, False)])
def test_uses_dask(executor, dask):
    assert uses_dask(executor) is dask


@pytest.mark.parametrize("executor", ["dask", "tcp://127.0.0.1:8786"])
def test_maxtasksperchild_is_refused_with_dask(executor):
    with pytest.raises(ValueError) as info:
        Options(executor=executor, maxtasksperchild=3)
    assert str(info.value) == ("maxtasksperchild needs executor='processes' or 'threads': dask "
                               "starts and stops its own workers")
    assert Options(executor="processes", maxtasksperchild=3).maxtasksperchild == 3
    assert Options(executor=executor).maxtasksperchild is None


def test_memory_limit_with_dask_only_on_a_cluster_we_start(fake_distributed):
    assert Options(executor="dask", memory_limit="1GB").memory_limit == 10 ** 9
    for elsewhere in ("tcp://127.0.0.1:8786", _FakeClient()):
        with pytest.raises(ValueError) as info:
            Options(executor=elsewhere, memory_limit="1GB")
        assert str(info.value) == (
            "memory_limit can only be enforced on a dask cluster this library starts "
            "(executor='dask'); give the workers of this one a memory limit where they are "
            "made (LocalCluster(memory_limit=...), dask worker --memory-limit)")
        assert Options(executor=elsewhere).memory_limit is None


def test_parameters_doc_is_a_numpydoc_section():
    doc = parameters_doc(["n_cpu", "timeout"])
    lines = doc.split("\n")
    assert lines[:2] == ["Parameters", "----------"] and doc.endswith("\n") and lines[-1] == ""
    kind, text = PARAMETERS["n_cpu"]
    assert lines[2] == f"n_cpu : {kind}"
    body = lines[3:lines.index(f"timeout : {PARAMETERS['timeout'][0]}")]
    assert body == textwrap.wrap(text, width=84, initial_indent="    ",
                                 subsequent_indent="    ")
    assert all(len(line) <= 84 and line.startswith("    ") for line in body)
    assert " ".join(line.strip() for line in body) == " ".join(text.split())
    other = parameters_doc(["chunk_size"], heading="Options")
    assert other.startswith("Options\n-------\nchunk_size : ")
    texts = [line for line in parameters_doc(list(PARAMETERS)).split("\n")
             if line.startswith("    ")]
    assert len(max(texts, key=len)) == 84   # the text of every parameter wraps at 84
