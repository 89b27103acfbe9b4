"""The native backend: Spark's own `format("delta")`, where the session has Delta (Databricks or its jars)."""

from __future__ import annotations

from pyspark.sql import DataFrame

from recllm.lake.base import Lake
from schemas import TableSchema


class NativeLake(Lake, backend="native"):
    """Tables through Spark's Delta connector: by catalog name with `catalog_prefix`, else by path."""

    def exists(self, table: str) -> bool:
        if self.catalog_prefix:
            return self.spark.catalog.tableExists(self.qualified_name(table))
        return super().exists(table)

    def _sql_ref(self, table: str) -> str:
        return self.qualified_name(table) or f"delta.`{self.location(table)}`"

    def _scan(self, contract: TableSchema, version: int | None, ds: str | None) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        name = self.qualified_name(contract.name)
        return reader.table(name) if name and version is None else reader.load(self.location(contract.name))

    def _files(self, table: str, ds: str | None) -> list[str]:
        return self.read(table, ds=ds).inputFiles()

    def _version(self, table: str) -> int:
        return int(self.history(table)["version"].max())

    def _history(self, table: str):
        return self.spark.sql(f"DESCRIBE HISTORY {self._sql_ref(table)}").toPandas()

    def _save(self, contract: TableSchema, df: DataFrame, overwrite: bool, replace_ds: str | None) -> None:
        created = not self.exists(contract.name)
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
        if created:
            self._describe(contract)

    def _describe(self, contract: TableSchema) -> None:
        """Set the table's description (Delta keeps the table property `comment` as it); the column
        comments come with the schema's `comment` metadata."""
        description = contract.doc.replace("\\", "\\\\").replace("'", "\\'")
        self.spark.sql(f"ALTER TABLE {self._sql_ref(contract.name)} SET TBLPROPERTIES ('comment' = '{description}')")

    def _create(self, contract: TableSchema) -> None:
        """An empty append creates the table; Delta's own protocol fails a second creator clearly."""
        self._save(contract, self.spark.createDataFrame([], contract.spark), overwrite=False, replace_ds=None)

    def _merge(self, contract: TableSchema, df: DataFrame) -> int:
        view = f"_recllm_merge_{contract.name}"
        df.createOrReplaceTempView(view)
        on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in contract.keys)
        newer = self.merge_update_condition(contract)
        self.spark.sql(
            f"MERGE INTO {self._sql_ref(contract.name)} t USING {view} s ON {on} "
            f"WHEN MATCHED{f' AND {newer}' if newer else ''} THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        )
        return self.version(contract.name)

    def _optimize(self, table: str) -> None:
        self.spark.sql(f"OPTIMIZE {self._sql_ref(table)}")

    def _vacuum(self, table: str, retention_hours: int) -> list[str]:
        self.spark.sql(f"VACUUM {self._sql_ref(table)} RETAIN {int(retention_hours)} HOURS")
        return []
