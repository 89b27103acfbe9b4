"""Requested (user, item, scenario) pairs for CTR scoring, from a table name or a Delta/Parquet folder.

`score.requests_table` names them; a name is checked part by part as an identifier, so it
can only ever name a table.
"""

from __future__ import annotations

import os

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recllm.lake import check_identifier
from recllm.pipeline.prompts import UNKNOWN


def requests_ref(ref: str) -> tuple[str, str]:
    """("path", p) for a folder path (Delta or Parquet), else ("table", name) after checking each name part."""
    if "/" in ref or "\\" in ref:
        return "path", ref
    for part in ref.split("."):
        check_identifier(part, "score.requests_table part")
    return "table", ref


def read_requests(spark: SparkSession, ref: str, ds: str) -> DataFrame:
    """(user_id, item_id, scenario) pairs to score from a table name or a Delta/Parquet folder.

    When the table has a `ds` column only that day's rows are read. A missing scenario reads
    'unknown'. A missing table or column is an error naming it.
    """
    kind, where = requests_ref(ref)
    if kind == "table":
        if not spark.catalog.tableExists(where):
            raise LookupError(f"score.requests_table {where!r} does not exist")
        df = spark.table(where)
    elif os.path.isdir(os.path.join(where, "_delta_log")):
        from deltalake import DeltaTable

        files = DeltaTable(where).file_uris()
        if not files:
            return spark.createDataFrame([], "user_id string, item_id string, scenario string")
        df = spark.read.option("basePath", where).parquet(*files)
    elif os.path.exists(where) or "://" in where:
        df = spark.read.parquet(where)
    else:
        raise LookupError(f"score.requests_table path {where!r} does not exist")
    missing = [c for c in ("user_id", "item_id") if c not in df.columns]
    if missing:
        raise ValueError(f"score.requests_table {ref!r} has no column(s) {missing}; it needs user_id, item_id, scenario")
    if "ds" in df.columns:
        df = df.where(F.col("ds").cast("string") == ds)
    scenario = F.col("scenario").cast("string") if "scenario" in df.columns else F.lit(None).cast("string")
    return df.select(
        F.col("user_id").cast("string").alias("user_id"),
        F.col("item_id").cast("string").alias("item_id"),
        F.coalesce(scenario, F.lit(UNKNOWN)).alias("scenario"),
    ).where(F.col("user_id").isNotNull() & F.col("item_id").isNotNull())
