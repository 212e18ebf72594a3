"""Row, column and group functions for test_pandas: module level, so every start method
can import them. The faulty ones misbehave on the row labelled BAD only."""
import ctypes
import faulthandler
import os
import time

BAD = "r5"


def score(row):
    return row["qty"] * row["price"]


def describe(row):
    import pandas as pd
    return pd.Series({"total": row["qty"] * row["price"], "tag": f"{row['name']}-{row['qty']}"})


def as_list(row):
    return [row["qty"], row["name"]]


def raises(row):
    if row.name == BAD:
        raise ValueError(f"bad row {row.name}")
    return row["qty"] * 1.5


def hangs_in_c(row):
    if row.name == BAD:
        ctypes.CDLL(None).sleep(30)
    return row["qty"] * 1.5


def segfaults(row):
    if row.name == BAD:
        # (pytest turns faulthandler on and workers inherit it: else each deliberate
        # crash prints a "Fatal Python error" dump that reads like a real one in CI logs)
        faulthandler.disable()
        ctypes.string_at(0)
    return row["qty"] * 1.5


def unpicklable(row):
    if row.name == BAD:
        return (i for i in range(3))
    return row["qty"] * 1.5


def upper(text):
    return text.upper()


def text_len(text):
    if text == "poison":
        raise KeyError(text)
    return len(text)


def column_summary(column):
    return f"{column.dtype}:{len(column)}"


def spread(group):
    return group["price"].max() - group["price"].min()


def group_frame(group):
    return group.assign(share=group["qty"] / group["qty"].sum())


def logged_score(row, log, marker):
    """score(row), logging the row's label, and failing on BAD until ``marker`` exists."""
    with open(log, "a") as f:  # one short append per call: atomic
        f.write(f"{row.name}\n")
    if row.name == BAD and not os.path.exists(marker):
        raise ConnectionError("flaky")
    time.sleep(0.001)
    return row["qty"] * row["price"]
