"""`recllm sql`'s library half: run a query over the lake and render its result as text."""

from __future__ import annotations

import logging

import pandas as pd

from recllm.lake.base import Lake

log = logging.getLogger("recllm.lake")

FORMATS = ("table", "csv", "json")


def query(lake: Lake, sql: str, limit: int | None = 100) -> tuple[pd.DataFrame, bool]:
    """The first `limit` rows of `sql`'s result (None: all of them) and whether there were more."""
    result = lake.sql(sql)
    if limit is None:
        return result.toPandas(), False
    frame = result.limit(limit + 1).toPandas()
    return frame.head(limit), len(frame) > limit


def render(frame: pd.DataFrame, fmt: str = "table") -> str:
    """The result as an aligned text table, CSV with a header, or JSON lines (one object per row)."""
    if fmt == "table":
        return frame.to_string(index=False) if len(frame) else f"(no rows; columns: {', '.join(frame.columns)})"
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return frame.to_json(orient="records", lines=True, date_format="iso").rstrip("\n")
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
