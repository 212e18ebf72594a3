"""help() and IDEs show every parameter of every public function with what it means."""
import inspect
import re
from dataclasses import fields

import pytest

from parallelbar_clone import (Options, ProgressPool, progress_imap, progress_imapu, progress_map,
                               progress_starmap)
from parallelbar_clone.options import NEW_OPTION_NAMES, POOL_FIELDS

FUNCTIONS = [progress_map, progress_starmap, progress_imap, progress_imapu]
METHODS = [ProgressPool.map, ProgressPool.starmap, ProgressPool.imap, ProgressPool.imap_unordered,
           ProgressPool.close, ProgressPool.terminate]
CALL_OPTIONS = {f.name for f in fields(Options)} - POOL_FIELDS


def parameter_entries(doc):
    """{name: description} from the numpydoc 'Parameters' section of ``doc``."""
    lines = inspect.cleandoc(doc or "").splitlines()
    entries, current, inside = {}, None, False
    for i, line in enumerate(lines):
        underline = i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1])
        if underline:
            inside, current = line.strip() == "Parameters", None
            continue
        if not inside or re.fullmatch(r"-{3,}", line):
            continue
        entry = re.fullmatch(r"(\*{0,2}\w+)( : .+)?", line)
        if entry:
            current = entry.group(1).lstrip("*")
            entries[current] = ""
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
    return {name: text.strip() for name, text in entries.items()}


def described(entries, name):
    return len(entries.get(name, "")) >= 15     # a sentence, not just a name


@pytest.mark.parametrize("func", FUNCTIONS, ids=lambda f: f.__name__)
def test_each_function_documents_every_parameter(func):
    entries = parameter_entries(func.__doc__)
    for name, param in inspect.signature(func).parameters.items():
        assert described(entries, name), f"{func.__name__}: {name} is not described"
        if param.kind is param.VAR_KEYWORD:
            for option in NEW_OPTION_NAMES:
                assert described(entries, option), f"{func.__name__}: {option}"
                assert option in entries[name]


def test_pool_documents_every_option():
    entries = parameter_entries(ProgressPool.__doc__)
    for field in fields(Options):
        assert described(entries, field.name), f"ProgressPool: {field.name} is not described"


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.__name__)
def test_each_pool_method_documents_every_parameter(method):
    entries = parameter_entries(method.__doc__)
    assert method.__doc__ and method.__doc__.strip()
    for name, param in inspect.signature(method).parameters.items():
        if name == "self":
            continue
        assert described(entries, name), f"ProgressPool.{method.__name__}: {name}"
        if param.kind is param.VAR_KEYWORD:     # per-call options: named here, described
            for option in CALL_OPTIONS:         # once in the class docstring
                assert f"``{option}``" in entries[name], option


@pytest.mark.parametrize("obj", FUNCTIONS + METHODS + [ProgressPool, Options],
                         ids=lambda o: o.__name__)
def test_no_placeholder_left_in_help(obj):
    assert not re.search(r"\{\w+\}", obj.__doc__ or ""), obj.__doc__
