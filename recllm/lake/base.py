"""The lake's interface and what both backends share: contracts, checks, naming, `ds` filters."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Iterable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, MapType, StructType

from recllm.config import is_calendar_date
from schemas import TABLES, TableSchema

log = logging.getLogger("recllm.lake")  # the lake's one logger, whichever backend writes

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SchemaMismatchError(ValueError):
    """A DataFrame does not match the contract of the table it is written to."""


class TableNotFoundError(LookupError):
    """A table was read before any job wrote it."""


def check_ds(ds: str) -> str:
    """Return `ds` if it is a real calendar date written `YYYY-MM-DD` in ASCII and nothing else, else raise.

    The one check every run date passes where it enters (job arguments, stages, reads), before Spark starts."""
    if not is_calendar_date(ds):
        raise ValueError(f"ds must be a real calendar date as YYYY-MM-DD, got {ds!r}")
    return ds


def run_date(ds: str | None, day_before: str | None) -> str | None:
    """The one run-date rule: `ds` when given, else the day before `day_before` (a trigger date), else None.

    A nightly schedule triggered on day T processes day T - 1, the day its data interval covers: Airflow passes
    `--ds {{ data_interval_start | ds }}`, Databricks `--day-before {{job.trigger.time.iso_date}}`."""
    if ds:
        return ds
    if day_before:
        return (dt.date.fromisoformat(day_before) - dt.timedelta(days=1)).isoformat()
    return None


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


_BACKENDS: dict[str, type[Lake]] = {}


@dataclass(init=False)
class Lake(ABC):
    """Reads and writes recllm tables by name under a root folder or catalog prefix.

    `Lake(spark, root=..., backend=...)` builds the backend class `backend` names; each backend
    implements the `_`-prefixed storage steps below, the public methods are shared.
    """

    spark: SparkSession
    root: str
    catalog_prefix: str | None
    backend: ClassVar[str]  # "native" or "deltars": set by each backend class

    def __init_subclass__(cls, backend: str, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.backend = backend
        _BACKENDS[backend] = cls

    def __new__(cls, spark: SparkSession, root: str = "lake", backend: str = "auto",
                catalog_prefix: str | None = None) -> Lake:
        """`auto` is native when the session has Delta, else deltars."""
        if cls is Lake:
            if backend == "auto":
                backend = "native" if session_has_delta(spark) else "deltars"
            if backend not in _BACKENDS:
                raise ValueError(f"lake backend must be auto, native or deltars, got {backend!r}")
            cls = _BACKENDS[backend]
        elif backend not in ("auto", cls.backend):
            raise ValueError(f"{cls.__name__} is the {cls.backend} backend, got backend={backend!r}")
        return super().__new__(cls)

    def __init__(self, spark: SparkSession, root: str = "lake", backend: str = "auto",
                 catalog_prefix: str | None = None) -> None:
        self.spark = spark
        self.root = root
        self.catalog_prefix = catalog_prefix
        if self.catalog_prefix:
            for part in self.catalog_prefix.split("."):
                check_identifier(part, "lake.catalog_prefix part")
        self._open()

    def _open(self) -> None:
        """Backend set-up once the settings are checked."""

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
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.location(table))

    def _require_exists(self, table: str) -> None:
        if not self.exists(table):
            raise TableNotFoundError(
                f"table {table!r} does not exist at {self.qualified_name(table) or self.location(table)}; "
                "run the job that writes it first"
            )

    # -- reads --------------------------------------------------------------------------

    def read(self, table: str, version: int | None = None, ds: str | None = None) -> DataFrame:
        """The table as a DataFrame, optionally as of a version and/or one `ds` partition."""
        contract = self.contract(table)
        self._require_exists(table)
        df = self._scan(contract, version, ds)
        if ds is not None:
            df = df.where(F.col("ds") == check_ds(ds))
        return df

    def read_or_empty(self, table: str) -> DataFrame:
        """The table, or an empty frame with its schema when no job has written it yet."""
        if self.exists(table):
            return self.read(table)
        return self.spark.createDataFrame([], self.contract(table).spark)

    def files(self, table: str, ds: str | None = None) -> list[str]:
        """Absolute paths of the Parquet files of the table's current version (one `ds` if given)."""
        self._require_exists(table)
        return sorted(self._files(table, ds))

    def version(self, table: str) -> int:
        """Current version of the table's Delta log."""
        self._require_exists(table)
        return self._version(table)

    def history(self, table: str):
        """The table's commits, newest first, as a pandas DataFrame (version, timestamp, operation ...)."""
        self._require_exists(table)
        return self._history(table)

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
        self._save(contract, df, overwrite, replace_ds)
        self._document(contract)
        version = self.version(table)
        log.info("%s: %s -> version %d", table, "overwrite ds=" + replace_ds if replace_ds else
                 ("overwrite" if overwrite else "append"), version)
        return version

    def merge(self, table: str, df: DataFrame) -> int:
        """Upsert `df` by the table's key: new keys are inserted, matching rows updated, except that a row is
        never replaced by one from an earlier `ds` (a rerun of an older day leaves newer upserts alone).

        A table no job has written yet is created empty first and merged into like any other, so two jobs
        upserting into a new table at once end with one row per key (the later one merges again on top).
        """
        contract = self.contract(table)
        df = conform(df, contract)
        keys = list(contract.keys)
        dupes = df.groupBy(*keys).count().where("count > 1").limit(5).collect()
        if dupes:
            raise ValueError(f"merge into {table}: source has duplicate keys {[tuple(r)[:-1] for r in dupes]}")
        if not self.exists(table):
            self._create(contract)
        self._document(contract)
        return self._merge(contract, df)

    @staticmethod
    def merge_update_condition(contract: TableSchema, source: str = "s", target: str = "t") -> str | None:
        """SQL condition for updating a matched row: the source is not from an earlier `ds` (None: no `ds`)."""
        return f"{source}.ds >= {target}.ds" if "ds" in contract.column_names else None

    # -- maintenance --------------------------------------------------------------------

    def optimize(self, table: str) -> None:
        """Compact small files (a new version with the same rows)."""
        self._require_exists(table)
        self._optimize(table)

    def vacuum(self, table: str, retention_hours: int = 168) -> list[str]:
        """Delete files no version within `retention_hours` needs; returns what was removed.

        That includes files no commit ever named, such as those a killed job wrote before it
        could commit (a "full" vacuum: delta-rs's default only removes files the log removed).
        A file younger than `retention_hours` is kept, so a write still in flight is safe.
        """
        self._require_exists(table)
        return self._vacuum(table, retention_hours)

    def register_views(self, tables: Iterable[str] = TABLES) -> list[str]:
        """Expose every existing table of `tables` (default: all) as a temp view of the same name, for Spark SQL."""
        names = [t for t in tables if self.exists(t)]
        for t in names:
            self.read(t).createOrReplaceTempView(t)
        return names

    def sql(self, query: str) -> DataFrame:
        """Spark SQL over the lake, every existing table a view of its own name (`SELECT * FROM candidates`);
        only the tables the query names are opened."""
        self.register_views(t for t in TABLES if re.search(rf"\b{t}\b", query, re.IGNORECASE))
        return self.spark.sql(query)

    def _document(self, contract: TableSchema) -> None:
        """Bring an existing table's description and column comments up to its contract (a backend may)."""

    # -- what each backend implements (the table is known to exist, except for _save) ----

    @abstractmethod
    def _scan(self, contract: TableSchema, version: int | None, ds: str | None) -> DataFrame:
        """The table's rows at `version` (None: current); `ds` may prune, `read` filters it."""

    @abstractmethod
    def _files(self, table: str, ds: str | None) -> list[str]:
        """Paths of the current version's Parquet files, of one `ds` if given."""

    @abstractmethod
    def _version(self, table: str) -> int:
        """Current version of the Delta log."""

    @abstractmethod
    def _history(self, table: str):
        """The commits as a pandas DataFrame, newest first."""

    @abstractmethod
    def _save(self, contract: TableSchema, df: DataFrame, overwrite: bool, replace_ds: str | None) -> None:
        """Commit the conformed `df`: append, overwrite all, or overwrite partition `replace_ds`."""

    @abstractmethod
    def _create(self, contract: TableSchema) -> None:
        """Create the table empty; another job creating it at the same moment is no error."""

    @abstractmethod
    def _merge(self, contract: TableSchema, df: DataFrame) -> int:
        """Upsert the conformed, key-unique `df` into the existing table, updating a matched row only under
        `merge_update_condition`; returns the new version."""

    @abstractmethod
    def _optimize(self, table: str) -> None:
        """Compact small files."""

    @abstractmethod
    def _vacuum(self, table: str, retention_hours: int) -> list[str]:
        """Delete unneeded files older than `retention_hours`; returns those it lists as removed."""
