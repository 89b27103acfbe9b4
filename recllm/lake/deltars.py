"""The embedded default backend: Delta tables through delta-rs, no Delta jars needed."""

from __future__ import annotations

import os

import pyarrow as pa
from pyspark.sql import DataFrame

from recllm.lake.base import Lake, check_ds, log
from recllm.lake.delta_source import COMMIT_ATTEMPTS, FORMAT_NAME, DeltaRsDataSource, conform_batch
from schemas import TableSchema


class DeltaRsLake(Lake, backend="deltars"):
    """Writes through the `recllm_delta` Python Data Source; reads, merges and maintains with delta-rs."""

    def _open(self) -> None:
        self.root = os.path.abspath(self.root)
        self._documented: set[str] = set()
        self.spark.dataSource.register(DeltaRsDataSource)

    def _table(self, table: str, version: int | None = None):
        """The table's delta-rs handle (imported here, as everywhere in the lake, only when used)."""
        from deltalake import DeltaTable

        return DeltaTable(self.location(table), version=version)

    def _scan(self, contract: TableSchema, version: int | None, ds: str | None) -> DataFrame:
        """Spark's own Parquet reader over the file list delta-rs gives for the version (and day)."""
        dt = self._table(contract.name, version)
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

    def _files(self, table: str, ds: str | None) -> list[str]:
        filters = [("ds", "=", check_ds(ds))] if ds is not None else None
        return self._table(table).file_uris(partition_filters=filters)

    def _version(self, table: str) -> int:
        return self._table(table).version()

    def _history(self, table: str):
        import pandas as pd

        hist = pd.DataFrame(self._table(table).history())
        hist["timestamp"] = pd.to_datetime(hist["timestamp"], unit="ms", utc=True)
        return hist.sort_values("version", ascending=False).reset_index(drop=True)

    def _save(self, contract: TableSchema, df: DataFrame, overwrite: bool, replace_ds: str | None) -> None:
        writer = (
            df.write.format(FORMAT_NAME)
            .mode("overwrite" if overwrite else "append")
            .option("path", self.location(contract.name))
            .option("table", contract.name)
        )
        if replace_ds is not None:
            writer = writer.option("replace_ds", replace_ds)
        writer.save()

    def _create(self, contract: TableSchema) -> None:
        from deltalake import DeltaTable

        try:
            DeltaTable.create(self.location(contract.name), schema=contract.arrow, mode="ignore",
                              partition_by=list(contract.partition_by) or None, name=contract.name,
                              description=contract.doc)
        except Exception:
            if not self.exists(contract.name):
                raise
            log.warning("%s: another job created the table first", contract.name)

    def _document(self, contract: TableSchema) -> None:
        """A table created before tables carried a description and Delta's `comment` per column (comments
        were under Spark's private `SPARK::metadata::json` key) gets its contract's: one alter commit for each
        thing that differs, checked once per table and lake object."""
        if contract.name in self._documented:
            return
        table = self._table(contract.name)
        comments = {f.name: f.metadata.get("comment") for f in table.schema().fields}
        stale = [c for c in contract.columns if comments.get(c.name) != c.doc]
        if table.metadata().description != contract.doc:
            table.alter.set_table_description(contract.doc)
        for column in stale:
            table.alter.set_column_metadata(column.name, {"comment": column.doc})
        if stale:
            log.info("%s: %d column comments brought up to the contract", contract.name, len(stale))
        self._documented.add(contract.name)

    def _merge(self, contract: TableSchema, df: DataFrame) -> int:
        """delta-rs's merge; when another job commits first (a concurrent merge added rows this one did not
        read), the merge is done again on the newer version rather than committing duplicate keys."""
        from deltalake.exceptions import CommitFailedError

        source = conform_batch(pa.table(df.toArrow()), contract)
        on = " AND ".join(f"t.{k} = s.{k}" for k in contract.keys)
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            table = self._table(contract.name)
            try:
                (
                    table.merge(source, predicate=on, source_alias="s", target_alias="t")
                    .when_matched_update_all(predicate=self.merge_update_condition(contract))
                    .when_not_matched_insert_all()
                    .execute()
                )
                break
            except CommitFailedError as error:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                log.warning("%s: another job committed first (%s); merging again on top of it (attempt %d of %d)",
                            contract.name, str(error).splitlines()[0], attempt + 1, COMMIT_ATTEMPTS)
        version = table.version()  # this merge's commit, even when another job has committed since
        log.info("%s: merged %d rows -> version %d", contract.name, source.num_rows, version)
        return version

    def _optimize(self, table: str) -> None:
        self._table(table).optimize.compact()

    def _vacuum(self, table: str, retention_hours: int) -> list[str]:
        return self._table(table).vacuum(
            retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False, full=True
        )
