"""The lake: one small interface every job uses to read and write recllm's Delta tables.

    lake = Lake(spark, root="lake")                 # embedded default: delta-rs backend
    lake.overwrite_partition("candidates", df, ds)  # idempotent daily write
    lake.read("events", ds="2026-01-02")            # or version=3 for time travel

Two backends, chosen by `backend="auto"`: `native` (`NativeLake`: Spark's own `format("delta")`,
when the session has Delta: Databricks, or Delta's jars on the classpath) and `deltars`
(`DeltaRsLake`: the Python Data Source in `recllm.lake.delta_source`). Both write real Delta
tables. Every write is checked against the table's contract in `schemas` first; `Lake` in
`recllm.lake.base` holds what the two share.
"""

from recllm.lake.base import (
    Lake,
    SchemaMismatchError,
    TableNotFoundError,
    check_ds,
    check_identifier,
    conform,
    session_has_delta,
)
from recllm.lake.deltars import DeltaRsLake
from recllm.lake.native import NativeLake

__all__ = [
    "DeltaRsLake",
    "Lake",
    "NativeLake",
    "SchemaMismatchError",
    "TableNotFoundError",
    "check_ds",
    "check_identifier",
    "conform",
    "session_has_delta",
]
