"""The lake: one small interface every job uses to read and write recllm's Delta tables.

    lake = Lake(spark, root="lake")                 # embedded default: delta-rs backend
    lake.overwrite_partition("candidates", df, ds)  # idempotent daily write
    lake.read("events", ds="2026-01-02")            # or version=3 for time travel

Two backends, chosen by `backend="auto"`: `native` (Spark's own `format("delta")`, when
the session has Delta: Databricks, or Delta's jars on the classpath) and `deltars` (the
Python Data Source in `recllm.delta_source`). Both write real Delta tables. Every write
is checked against the table's contract in `schemas` first.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, MapType, StructType

from recllm.delta_source import FORMAT_NAME, DeltaRsDataSource, conform_batch
from schemas import TABLES, TableSchema

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DS = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class SchemaMismatchError(ValueError):
    """A DataFrame does not match the contract of the table it is written to."""


class TableNotFoundError(LookupError):
    """A table was read before any job wrote it."""


def check_ds(ds: str) -> str:
    """Return `ds` if it is an ISO date `YYYY-MM-DD`, else raise a clear error."""
    if not isinstance(ds, str) or not _DS.match(ds):
        raise ValueError(f"ds must be a date as YYYY-MM-DD, got {ds!r}")
    return ds


def check_identifier(name: str, what: str = "identifier") -> str:
    """Return `name` if it is a plain SQL identifier (letters, digits, _), else raise."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"{what} must match [A-Za-z_][A-Za-z0-9_]*, got {name!r}")
    return name


def session_has_delta(spark: SparkSession) -> bool:
    """True when Spark's own Delta connector is available (Databricks or jars present)."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    on_databricks = "DATABRICKS_RUNTIME_VERSION" in os.environ
    return on_databricks or "DeltaSparkSessionExtension" in extensions


def _strip_nullability(t: DataType) -> DataType:
    if isinstance(t, ArrayType):
        return ArrayType(_strip_nullability(t.elementType), True)
    if isinstance(t, MapType):
        return MapType(_strip_nullability(t.keyType), _strip_nullability(t.valueType), True)
    if isinstance(t, StructType):
        return StructType([f.__class__(f.name, _strip_nullability(f.dataType), True) for f in t.fields])
    return t


def conform(df: DataFrame, contract: TableSchema) -> DataFrame:
    """Select `df`'s columns in contract order, or refuse it naming every column that differs."""
    have = {f.name: f.dataType for f in df.schema.fields}
    want = {c.name: c.type for c in contract.columns}
    problems = []
    missing = [c for c in want if c not in have]
    extra = [c for c in have if c not in want]
    if missing:
        problems.append(f"missing column(s) {missing}")
    if extra:
        problems.append(f"unexpected column(s) {extra}")
    for name in want.keys() & have.keys():
        if _strip_nullability(have[name]) != _strip_nullability(want[name]):
            problems.append(
                f"column {name!r} is {have[name].simpleString()}, expected {want[name].simpleString()}"
            )
    if problems:
        raise SchemaMismatchError(f"table {contract.name}: " + "; ".join(sorted(problems)))
    return df.select(*contract.column_names)


@dataclass
class Lake:
    """Reads and writes recllm tables by name under a root folder or catalog prefix."""

    spark: SparkSession
    root: str = "lake"
    backend: str = "auto"
    catalog_prefix: str | None = None

    def __post_init__(self) -> None:
        if self.backend == "auto":
            self.backend = "native" if session_has_delta(self.spark) else "deltars"
        if self.backend not in ("native", "deltars"):
            raise ValueError(f"lake backend must be auto, native or deltars, got {self.backend!r}")
        if self.catalog_prefix:
            for part in self.catalog_prefix.split("."):
                check_identifier(part, "lake.catalog_prefix part")
        if self.backend == "deltars":
            self.root = os.path.abspath(self.root)
            self.spark.dataSource.register(DeltaRsDataSource)

    # -- naming -------------------------------------------------------------------------

    def contract(self, table: str) -> TableSchema:
        if table not in TABLES:
            raise KeyError(f"unknown table {table!r}; known tables: {sorted(TABLES)}")
        return TABLES[table]

    def location(self, table: str) -> str:
        """Folder of the table's Delta log and files."""
        self.contract(table)
        return os.path.join(self.root, table)

    def qualified_name(self, table: str) -> str | None:
        """Catalog name of the table (native backend with a prefix), else None."""
        return f"{self.catalog_prefix}.{table}" if self.catalog_prefix else None

    def exists(self, table: str) -> bool:
        if self.backend == "native" and self.catalog_prefix:
            return self.spark.catalog.tableExists(self.qualified_name(table))
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.location(table))

    def _require(self, table: str) -> None:
        if not self.exists(table):
            raise TableNotFoundError(
                f"table {table!r} does not exist at {self.qualified_name(table) or self.location(table)}; "
                "run the job that writes it first"
            )

    # -- reads --------------------------------------------------------------------------

    def read(self, table: str, version: int | None = None, ds: str | None = None) -> DataFrame:
        """The table as a DataFrame, optionally as of a version and/or one `ds` partition."""
        contract = self.contract(table)
        self._require(table)
        if self.backend == "native":
            reader = self.spark.read.format("delta")
            if version is not None:
                reader = reader.option("versionAsOf", version)
            name = self.qualified_name(table)
            df = reader.table(name) if name and version is None else reader.load(self.location(table))
        else:
            df = self._read_files(contract, version, ds)
        if ds is not None:
            df = df.where(F.col("ds") == check_ds(ds))
        return df

    def _read_files(self, contract: TableSchema, version: int | None, ds: str | None) -> DataFrame:
        """Spark's own Parquet reader over the file list delta-rs gives for the version (and day)."""
        from deltalake import DeltaTable

        dt = DeltaTable(self.location(contract.name), version=version)
        filters = [("ds", "=", check_ds(ds))] if ds is not None and "ds" in contract.partition_by else None
        files = dt.file_uris(partition_filters=filters)
        if not files:
            return self.spark.createDataFrame([], contract.spark)
        return (
            self.spark.read.schema(contract.spark)
            .option("basePath", self.location(contract.name))
            .parquet(*files)
            .select(*contract.column_names)
        )

    def read_or_empty(self, table: str) -> DataFrame:
        """The table, or an empty frame with its schema when no job has written it yet."""
        if self.exists(table):
            return self.read(table)
        return self.spark.createDataFrame([], self.contract(table).spark)

    def files(self, table: str, ds: str | None = None) -> list[str]:
        """Absolute paths of the Parquet files of the table's current version (one `ds` if given)."""
        self._require(table)
        if self.backend == "native":
            return sorted(self.read(table, ds=ds).inputFiles())
        from deltalake import DeltaTable

        dt = DeltaTable(self.location(table))
        filters = [("ds", "=", check_ds(ds))] if ds is not None else None
        return sorted(dt.file_uris(partition_filters=filters))

    def version(self, table: str) -> int:
        """Current version of the table's Delta log."""
        self._require(table)
        if self.backend == "native":
            return int(self.history(table)["version"].max())
        from deltalake import DeltaTable

        return DeltaTable(self.location(table)).version()

    def history(self, table: str):
        """The table's commits, newest first, as a pandas DataFrame (version, timestamp, operation ...)."""
        import pandas as pd

        self._require(table)
        if self.backend == "native":
            return self.spark.sql(f"DESCRIBE HISTORY {self._sql_ref(table)}").toPandas()
        from deltalake import DeltaTable

        rows = DeltaTable(self.location(table)).history()
        hist = pd.DataFrame(rows)
        hist["timestamp"] = pd.to_datetime(hist["timestamp"], unit="ms", utc=True)
        return hist.sort_values("version", ascending=False).reset_index(drop=True)

    # -- writes -------------------------------------------------------------------------

    def append(self, table: str, df: DataFrame) -> int:
        """Add `df`'s rows to the table in one transaction; returns the new version."""
        return self._write(table, df, overwrite=False, replace_ds=None)

    def overwrite(self, table: str, df: DataFrame) -> int:
        """Replace the whole table's contents with `df` in one transaction."""
        return self._write(table, df, overwrite=True, replace_ds=None)

    def overwrite_partition(self, table: str, df: DataFrame, ds: str) -> int:
        """Replace partition `ds` with `df` in one transaction: reruns replace, never duplicate.

        Jobs overwriting different days of a table at once all land. With the deltars backend
        two overwriting the same day at once are serialised: the later commit replaces the
        earlier's rows, as a rerun would (Delta's own writer, the native backend, may fail the
        later one with a concurrent-modification error instead). Returns the table's version
        after the write (a later one if another job has committed since).
        """
        contract = self.contract(table)
        if "ds" not in contract.partition_by:
            raise ValueError(f"table {table!r} is not partitioned by ds")
        return self._write(table, df, overwrite=True, replace_ds=check_ds(ds))

    def _write(self, table: str, df: DataFrame, overwrite: bool, replace_ds: str | None) -> int:
        contract = self.contract(table)
        df = conform(df, contract)
        if self.backend == "native":
            self._native_write(contract, df, overwrite, replace_ds)
        else:
            writer = (
                df.write.format(FORMAT_NAME)
                .mode("overwrite" if overwrite else "append")
                .option("path", self.location(table))
                .option("table", table)
            )
            if replace_ds is not None:
                writer = writer.option("replace_ds", replace_ds)
            writer.save()
        version = self.version(table)
        log.info("%s: %s -> version %d", table, "overwrite ds=" + replace_ds if replace_ds else
                 ("overwrite" if overwrite else "append"), version)
        return version

    def _native_write(self, contract: TableSchema, df: DataFrame, overwrite: bool, replace_ds: str | None) -> None:
        writer = df.write.format("delta").mode("overwrite" if overwrite else "append")
        if contract.partition_by:
            writer = writer.partitionBy(*contract.partition_by)
        if replace_ds is not None:
            writer = writer.option("replaceWhere", f"ds = '{replace_ds}'")
        name = self.qualified_name(contract.name)
        if name:
            writer.saveAsTable(name)
        else:
            writer.save(self.location(contract.name))

    def merge(self, table: str, df: DataFrame) -> int:
        """Upsert `df` by the table's key: matching rows are updated, new keys inserted."""
        contract = self.contract(table)
        df = conform(df, contract)
        keys = list(contract.keys)
        dupes = df.groupBy(*keys).count().where("count > 1").limit(5).collect()
        if dupes:
            raise ValueError(f"merge into {table}: source has duplicate keys {[tuple(r)[:-1] for r in dupes]}")
        if not self.exists(table):
            return self.append(table, df)
        if self.backend == "native":
            view = f"_recllm_merge_{table}"
            df.createOrReplaceTempView(view)
            on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
            self.spark.sql(
                f"MERGE INTO {self._sql_ref(table)} t USING {view} s ON {on} "
                "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
            )
            return self.version(table)
        from deltalake import DeltaTable

        source = conform_batch(pa.table(df.toArrow()), contract)
        on = " AND ".join(f"t.{k} = s.{k}" for k in keys)
        (
            DeltaTable(self.location(table))
            .merge(source, predicate=on, source_alias="s", target_alias="t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
        version = self.version(table)
        log.info("%s: merged %d rows -> version %d", table, source.num_rows, version)
        return version

    # -- maintenance --------------------------------------------------------------------

    def optimize(self, table: str) -> None:
        """Compact small files (a new version with the same rows)."""
        self._require(table)
        if self.backend == "native":
            self.spark.sql(f"OPTIMIZE {self._sql_ref(table)}")
        else:
            from deltalake import DeltaTable

            DeltaTable(self.location(table)).optimize.compact()

    def vacuum(self, table: str, retention_hours: int = 168) -> list[str]:
        """Delete files no version within `retention_hours` needs; returns what was removed.

        That includes files no commit ever named, such as those a killed job wrote before it
        could commit (a "full" vacuum: delta-rs's default only removes files the log removed).
        A file younger than `retention_hours` is kept, so a write still in flight is safe.
        """
        self._require(table)
        if self.backend == "native":
            self.spark.sql(f"VACUUM {self._sql_ref(table)} RETAIN {int(retention_hours)} HOURS")
            return []
        from deltalake import DeltaTable

        return DeltaTable(self.location(table)).vacuum(
            retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False, full=True
        )

    def register_views(self) -> list[str]:
        """Expose every existing table as a temp view of the same name, for Spark SQL."""
        names = [t for t in TABLES if self.exists(t)]
        for t in names:
            self.read(t).createOrReplaceTempView(t)
        return names

    def _sql_ref(self, table: str) -> str:
        return self.qualified_name(table) or f"delta.`{self.location(table)}`"
