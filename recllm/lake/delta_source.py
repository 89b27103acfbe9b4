"""A Spark Python Data Source over delta-rs: Delta tables without Delta's JVM jars.

Executors write Parquet files into the table folder; the driver commits every file of
the job in ONE Delta transaction (`commit`, redone on top of another job's commit that
lands first), or deletes them all (`abort`), so a failed write leaves no trace in the log.
Only files no committed version names are ever deleted: a failure after the log entry landed
(a checkpoint, say) is logged as a warning and the write stands.
Readers list the table's files through delta-rs (at a version, pruned by pushed-down
partition filters) and read them with pyarrow in parallel.

Spark hands the source lower-cased options: `path`, `table` (a name in schemas.TABLES),
`replace_ds` (overwrite only that `ds` partition), `version` (time travel), `parallelism`
(read tasks to aim for; default: the driver's cores).

`recllm.lake.Lake.read` itself reads with Spark's native Parquet reader over the file list
delta-rs gives (about 2.4x faster than going through Python); this reader serves direct
`spark.read.format("recllm_delta")` use.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    EqualTo,
    Filter,
    In,
    InputPartition,
    Not,
    WriterCommitMessage,
)
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StructType

from schemas import TABLES, TableSchema

FORMAT_NAME = "recllm_delta"
TARGET_READ_PARTITION_BYTES = 128 * 1024 * 1024
COMMIT_ATTEMPTS = 10
COMMIT_BACKOFF_S = 0.05

log = logging.getLogger(__name__)


class DeltaWriteError(RuntimeError):
    """A write that breaks the table's contract (nulls, wrong partition)."""


@dataclass
class FileAdded:
    """One Parquet file a task wrote, relative to the table root."""

    path: str
    size: int
    partition_values: dict[str, str]
    num_records: int


@dataclass
class FilesWritten(WriterCommitMessage):
    files: list[FileAdded] = field(default_factory=list)


@dataclass
class FileGroup(InputPartition):
    """The files one read task scans, with each file's partition values."""

    files: list[tuple[str, dict[str, str]]]


def contract_for(options: dict) -> TableSchema:
    name = options.get("table")
    if name not in TABLES:
        raise ValueError(f"option 'table' must name one of {sorted(TABLES)}, got {name!r}")
    return TABLES[name]


class DeltaRsDataSource(DataSource):
    """`spark.read/write.format("recllm_delta")`; see the module docstring for options."""

    @classmethod
    def name(cls) -> str:
        return FORMAT_NAME

    def schema(self) -> StructType:
        if "table" in self.options:
            return contract_for(self.options).spark
        from deltalake import DeltaTable

        return from_arrow_schema(pa.schema(DeltaTable(self.options["path"]).schema().to_arrow()))

    def reader(self, schema: StructType) -> "DeltaRsReader":
        return DeltaRsReader(self.options, schema)

    def writer(self, schema: StructType, overwrite: bool) -> "DeltaRsWriter":
        return DeltaRsWriter(self.options, overwrite)


class DeltaRsWriter(DataSourceArrowWriter):
    def __init__(self, options: dict, overwrite: bool):
        self.path = options["path"]
        self.contract = contract_for(options)
        self.overwrite = overwrite
        self.replace_ds = options.get("replace_ds")

    def write(self, batches: Iterator[pa.RecordBatch]) -> FilesWritten:
        """Stream this task's batches into one Parquet file per partition value."""
        open_files: dict[tuple, _OpenFile] = {}
        try:
            for batch in batches:
                if batch.num_rows:
                    self._write_batch(batch, open_files)
            return FilesWritten([f.close() for f in open_files.values()])
        except BaseException:
            for f in open_files.values():
                f.discard()
            raise

    def _write_batch(self, batch: pa.RecordBatch, open_files: dict[tuple, "_OpenFile"]) -> None:
        table = conform_batch(pa.Table.from_batches([batch]), self.contract)
        parts = list(self.contract.partition_by)
        if self.replace_ds is not None:
            stray = pc.unique(pc.filter(table["ds"], pc.not_equal(table["ds"], self.replace_ds)))
            if len(stray):
                raise DeltaWriteError(
                    f"{self.contract.name}: overwrite of ds={self.replace_ds} got rows for "
                    f"ds={stray.to_pylist()[:5]}"
                )
        keys = table.select(parts).group_by(parts).aggregate([]).to_pylist() if parts else [{}]
        for key in keys:
            rows = table
            for col, value in key.items():
                rows = rows.filter(pc.equal(rows[col], value))
            rows = rows.drop_columns(parts)
            handle = tuple(key.items())
            if handle not in open_files:
                open_files[handle] = _OpenFile(self.path, key, rows.schema)
            open_files[handle].write(rows)

    def _delete(self, files: list[FileAdded]) -> None:
        for f in files:
            try:
                os.remove(os.path.join(self.path, f.path))
            except FileNotFoundError:
                pass

    def commit(self, messages: list[FilesWritten]) -> None:
        from deltalake import Schema
        from deltalake.transaction import AddAction

        files = [f for m in messages if m is not None for f in m.files]
        actions = [
            AddAction(
                path=f.path,
                size=f.size,
                partition_values=f.partition_values,
                modification_time=_mtime_ms(os.path.join(self.path, f.path)),
                data_change=True,
                stats=json.dumps({"numRecords": f.num_records}),
            )
            for f in files
        ]
        before = self._latest_version()
        try:
            self._commit_actions(actions, Schema.from_arrow(self.contract.arrow))
        except BaseException as error:
            if files and self._committed_since(before, {f.path for f in files}):
                # The log entry landed and a step after it failed (a checkpoint, say): the version is real,
                # its files must stay, and a later write or checkpoint will catch up.
                log.warning("%s: committed, but a step after the commit failed: %s",
                            self.contract.name, str(error).splitlines()[0] if str(error) else type(error).__name__)
                return
            self._delete(files)
            raise

    def _latest_version(self) -> int:
        from deltalake import DeltaTable

        return DeltaTable(self.path).version() if DeltaTable.is_deltatable(self.path) else -1

    def _committed_since(self, version: int, paths: set[str]) -> bool:
        """Whether a log entry after `version` adds any of `paths`: only files no version names may be deleted."""
        log_dir = os.path.join(self.path, "_delta_log")
        entry = version + 1
        while os.path.exists(name := os.path.join(log_dir, f"{entry:020d}.json")):
            with open(name) as f:
                for line in f:
                    added = json.loads(line).get("add") if line.strip() else None
                    if added and unquote(added["path"]) in paths:  # the log may percent-encode paths
                        return True
            entry += 1
        return False

    def _commit_actions(self, actions: list, schema) -> None:
        """Commit `actions` in one transaction, redone on the latest version if another job's lands first.

        delta-rs refuses a partition overwrite when anything was committed since it read the
        table, even another day ("a concurrent transaction deleted data this operation read"),
        so each attempt re-reads the table and replaces `ds` as it is then: jobs writing
        different days all land, and two writing the SAME day are serialised (the later
        replaces the earlier's rows, as a rerun would; the day never mixes both). A failure with
        no newer commit behind it is no race and is raised at once, as is a race still lost
        after `COMMIT_ATTEMPTS`.
        """
        from deltalake import DeltaTable
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import create_table_with_add_actions

        parts = list(self.contract.partition_by) or None
        mode = "overwrite" if self.overwrite else "append"
        filters = [("ds", "=", self.replace_ds)] if self.overwrite and self.replace_ds is not None else None
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            if not DeltaTable.is_deltatable(self.path):
                try:
                    create_table_with_add_actions(
                        self.path, schema, actions, mode="error", partition_by=parts, name=self.contract.name,
                        description=self.contract.doc,
                    )
                    return
                except Exception:
                    if attempt == COMMIT_ATTEMPTS or not DeltaTable.is_deltatable(self.path):
                        raise
                    log.warning("%s: another job created the table first; committing on top of it",
                                self.contract.name)
                    continue
            table = DeltaTable(self.path)
            read_version = table.version()
            try:
                table.create_write_transaction(
                    actions, mode=mode, schema=schema, partition_by=parts, partition_filters=filters
                )
                return
            except CommitFailedError as error:
                latest = DeltaTable(self.path).version()
                if latest == read_version or attempt == COMMIT_ATTEMPTS:
                    raise
                log.warning(
                    "%s: another job committed version %d first (%s); committing again on top of it "
                    "(attempt %d of %d)", self.contract.name, latest, str(error).splitlines()[0],
                    attempt + 1, COMMIT_ATTEMPTS,
                )
                time.sleep(random.uniform(0, COMMIT_BACKOFF_S * attempt))

    def abort(self, messages: list[FilesWritten]) -> None:
        self._delete([f for m in messages if m is not None for f in m.files])


class _OpenFile:
    """One Parquet file being written by a task, under its partition folder."""

    def __init__(self, root: str, partition_values: dict[str, str], schema: pa.Schema):
        folder = "/".join(f"{k}={v}" for k, v in partition_values.items())
        self.rel = (f"{folder}/" if folder else "") + f"part-{uuid.uuid4().hex}.c000.snappy.parquet"
        self.full = os.path.join(root, self.rel)
        os.makedirs(os.path.dirname(self.full), exist_ok=True)
        self.partition_values = partition_values
        self.rows = 0
        self.writer = pq.ParquetWriter(self.full, schema, compression="snappy")

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> FileAdded:
        self.writer.close()
        return FileAdded(self.rel, os.path.getsize(self.full), self.partition_values, self.rows)

    def discard(self) -> None:
        try:
            self.writer.close()
        finally:
            if os.path.exists(self.full):
                os.remove(self.full)


class DeltaRsReader(DataSourceReader):
    def __init__(self, options: dict, schema: StructType):
        self.path = options["path"]
        self.version = int(options["version"]) if options.get("version") not in (None, "") else None
        self.schema = schema
        self.parallelism = int(options.get("parallelism") or os.cpu_count() or 1)
        self.partition_filters: list[tuple[str, str, object]] = []

    def pushFilters(self, filters: list[Filter]) -> Iterator[Filter]:
        from deltalake import DeltaTable

        partition_cols = set(DeltaTable(self.path).metadata().partition_columns)
        for f in filters:
            pruning = _partition_filter(f, partition_cols)
            if pruning is None:
                yield f
            else:
                self.partition_filters.append(pruning)

    def partitions(self) -> list[FileGroup]:
        from deltalake import DeltaTable

        dt = DeltaTable(self.path, version=self.version)
        actions = []
        for a in pa.table(dt.get_add_actions(flatten=True)).to_pylist():
            values = {k[len("partition.") :]: v for k, v in a.items() if k.startswith("partition.")}
            if _matches(values, self.partition_filters):
                actions.append((a, values))
        total = sum(a["size_bytes"] for a, _ in actions)
        target = min(TARGET_READ_PARTITION_BYTES, max(1, -(-total // self.parallelism)))
        groups: list[FileGroup] = []
        size = target
        for a, values in actions:
            if size + a["size_bytes"] > target:
                groups.append(FileGroup([]))
                size = 0
            groups[-1].files.append((os.path.join(self.path, a["path"]), values))
            size += a["size_bytes"]
        return groups or [FileGroup([])]

    def read(self, partition: FileGroup) -> Iterator[pa.RecordBatch]:
        target = _arrow_schema(self.schema)
        for path, values in partition.files:
            table = pq.read_table(path)
            for col, value in values.items():
                if col in target.names and col not in table.column_names:
                    table = table.append_column(col, pa.array([value] * table.num_rows, pa.string()))
            table = table.select(target.names).cast(target)
            yield from table.to_batches()


def _partition_filter(f: Filter, partition_cols: set[str]) -> tuple[str, str, object] | None:
    """(column, op, value) for a filter on a partition column we can prune by, else None."""
    negated = isinstance(f, Not)
    inner = f.child if negated else f
    attribute = getattr(inner, "attribute", ())
    col = attribute[0] if len(attribute) == 1 else None
    if col not in partition_cols:
        return None
    if isinstance(inner, EqualTo):
        return (col, "!=" if negated else "=", str(inner.value))
    if isinstance(inner, In) and not negated:
        return (col, "in", [str(v) for v in inner.value])
    return None


def _matches(values: dict[str, str], filters: list[tuple[str, str, object]]) -> bool:
    for col, op, want in filters:
        got = values.get(col)
        if (op == "=" and got != want) or (op == "!=" and got == want) or (op == "in" and got not in want):
            return False
    return True


def _arrow_schema(schema: StructType) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone="UTC")


def _mtime_ms(path: str) -> int:
    return int(os.path.getmtime(path) * 1000)


def conform_batch(table: pa.Table, contract: TableSchema) -> pa.Table:
    """Cast to the contract's Arrow schema and refuse nulls in non-nullable columns."""
    target = contract.arrow
    table = table.select(target.names)
    nulls = [c.name for c in contract.columns if not c.nullable and table[c.name].null_count]
    if nulls:
        raise DeltaWriteError(f"{contract.name}: null values in non-nullable column(s) {nulls}")
    return table.cast(target)
