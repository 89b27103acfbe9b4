"""The `TableSchema` contract type: one place that knows a table's Spark and Arrow shapes."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import DataType, StructField, StructType


@dataclass(frozen=True)
class Column:
    """One column: its name, Spark type, whether it may be null, and what it means."""

    name: str
    type: DataType
    nullable: bool
    doc: str


@dataclass(frozen=True)
class TableSchema:
    """A table's contract: columns in order, primary key, partition columns, meaning."""

    name: str
    doc: str
    columns: tuple[Column, ...]
    keys: tuple[str, ...]
    partition_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = self.column_names
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name}: duplicate column names in {names}")
        for col in (*self.keys, *self.partition_by):
            if col not in names:
                raise ValueError(f"table {self.name}: key/partition column {col!r} is not a column")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def spark(self) -> StructType:
        """The Spark schema, with each column's meaning kept as its `comment` metadata."""
        return StructType(
            [StructField(c.name, c.type, c.nullable, {"comment": c.doc}) for c in self.columns]
        )

    @property
    def arrow(self) -> pa.Schema:
        """The Arrow schema files of this table are written with (timestamps in UTC).

        Each field carries its meaning under `comment`, the key Delta's schema uses for a
        column comment, so every Delta reader (Spark, delta-rs, Databricks) shows it.
        """
        plain = to_arrow_schema(self.spark_without_comments, timezone="UTC", prefers_large_types=False)
        return pa.schema([f.with_metadata({"comment": c.doc}) for f, c in zip(plain, self.columns)])

    @property
    def spark_without_comments(self) -> StructType:
        return StructType([StructField(c.name, c.type, c.nullable) for c in self.columns])
