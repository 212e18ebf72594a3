"""Result checks: a call that skipped work, lost a task, delivered one twice or
mixed up the order fails its check and is reported ``n/a (wrong result: ...)``.

- :func:`expect` builds the check of one finite call; it refuses a workload whose
  expected outputs equal its inputs (then a library that returned the tasks
  untouched would pass).
- :class:`StreamCheck` checks a stream item by item while it is consumed (the
  stream may be too long to keep), at the cost of a few bytecodes per item, the
  same for every library.
"""
from __future__ import annotations

import itertools
from collections import Counter
from typing import Any, Callable, Iterable, List, Optional, Sequence, Set

__all__ = ["expect", "StreamCheck", "ResultError"]


class ResultError(AssertionError):
    """A call returned a wrong result; the message says what is wrong."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def expect(tasks: Sequence[Any], expected: Sequence[Any], ordered: bool,
           same: Optional[Callable[[Any, Any], bool]] = None) -> Callable[[Any], None]:
    """The check of a call on ``tasks`` that should give ``expected``.

    Ordered: the result must equal ``expected`` element by element. Unordered: the
    same multiset; the message counts the duplicates and the missing values.
    ``same(got, want)`` compares one element when ``==`` is too strict (results
    that also carry timings); it must still tell apart the outputs of different
    tasks. Raises ValueError at once if any expected output equals its input."""
    tasks = list(tasks)
    expected = list(expected)
    if len(tasks) != len(expected):
        raise ValueError(f"{len(expected)} expected values for {len(tasks)} tasks")
    for i, (task, want) in enumerate(zip(tasks, expected)):
        if want == task:
            raise ValueError(f"task {i}: the expected output {_short(want)} equals the input, "
                             "so a library that skipped the work would pass")
    if same is not None and not ordered:
        raise ValueError("unordered checks compare whole values: no same=")

    def check(result: Any) -> None:
        got = list(result)
        if ordered:
            for i, (g, w) in enumerate(zip(got, expected)):
                if not (g == w if same is None else same(g, w)):
                    raise ResultError(f"result[{i}] is {_short(g)}, expected {_short(w)}")
            if len(got) != len(expected):
                raise ResultError(f"{len(got)} results for {len(expected)} tasks")
            return
        have, want = Counter(got), Counter(expected)
        if have != want:
            extra = have - want
            missing = want - have
            dupes = sum(n for v, n in extra.items() if v in want)
            raise ResultError(
                f"{len(got)} results for {len(expected)} tasks: "
                f"{sum(missing.values())} missing, {dupes} duplicated, "
                f"{sum(extra.values()) - dupes} not an expected value"
                + (f" (e.g. missing {_short(next(iter(missing)))})" if missing else ""))
    return check


class StreamCheck:
    """Checks the stream ``invert(0), invert(1), ...`` (``~x``) as it is consumed.

    ``n``: results the consumer takes. ``finite``: the input was ``range(n)``, so
    every ``~x`` for x < n must come exactly once; otherwise the input was endless
    and an unordered stream may also hold results of tasks past ``n`` (those in
    flight when the consumer stopped), each at most once. ``ordered``: result k
    must be ``~k``.

    The per-item work is a bytearray lookup (allocate this object before taking a
    memory baseline: its ``n`` bytes are touched here)."""

    def __init__(self, n: int, *, ordered: bool, finite: bool) -> None:
        self.n = n
        self.ordered = ordered
        self.finite = finite
        self.seen = bytearray(n)
        for i in range(0, n, 4096):   # touch every page now, not during the timed call
            self.seen[i] = 0
        self.count = 0
        self.bad = 0              # duplicates, or not ~x of any x we could have sent
        self.beyond: Set[int] = set()
        self.first_bad: Optional[str] = None

    def consume(self, iterator: Iterable[int]) -> None:
        """Take the results of ``iterator``, checking each: all of them for a finite
        stream, the first ``n`` of an endless one (the caller closes the iterator)."""
        n, seen, beyond = self.n, self.seen, self.beyond
        source = iterator if self.finite else itertools.islice(iterator, n)
        count = bad = 0
        r: Any = None
        try:
            if self.ordered:
                for r in source:
                    if r != ~count:
                        bad += 1
                        if self.first_bad is None:
                            self.first_bad = f"result {count} is {_short(r)}, expected {~count}"
                    count += 1
            else:
                for r in source:
                    i = ~r
                    if 0 <= i < n and not seen[i]:
                        seen[i] = 1
                    elif i >= n and not self.finite and i not in beyond:
                        beyond.add(i)
                    else:
                        bad += 1
                        if self.first_bad is None:
                            self.first_bad = f"result {count} is {_short(r)} (a duplicate " \
                                             "or no task's result)"
                    count += 1
        except TypeError:   # ~r of something that is not an int
            raise ResultError(f"result {count} is {_short(r)}, not an int") from None
        finally:
            self.count += count
            self.bad += bad

    def problems(self) -> List[str]:
        """What was wrong, empty when the stream was right."""
        out = []
        if self.count != self.n:
            out.append(f"{self.count:,} results, expected {self.n:,}")
        if self.bad:
            out.append(f"{self.bad:,} wrong or duplicated results ({self.first_bad})")
        if not self.ordered and self.finite:
            missing = self.seen.count(0)
            if missing:
                out.append(f"{missing:,} tasks never delivered")
        return out

    def verify(self) -> None:
        problems = self.problems()
        if problems:
            raise ResultError("; ".join(problems))
