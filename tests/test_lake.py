"""The lake interface: every table round-trips, writes are atomic, idempotent and checked."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    TimestampType,
)

from recllm.lake import DeltaRsLake, Lake, SchemaMismatchError, TableNotFoundError, check_ds, check_identifier
from schemas import TABLES, TableSchema
from tests.helpers import read_delta_rs


def sample_value(dtype, i: int, column: str):
    if column == "ds":
        return f"2026-01-0{1 + i % 2}"
    if isinstance(dtype, StringType):
        return f"{column}-{i}"
    if isinstance(dtype, (IntegerType, LongType)):
        return i + 1
    if isinstance(dtype, DoubleType):
        return 0.5 * (i + 1)
    if isinstance(dtype, BooleanType):
        return i % 2 == 0
    if isinstance(dtype, TimestampType):
        return dt.datetime(2026, 1, 1, 12, i, tzinfo=dt.timezone.utc)
    if isinstance(dtype, ArrayType) and isinstance(dtype.elementType, FloatType):
        return [0.25 * i, -1.5, 2.0]
    if isinstance(dtype, ArrayType) and isinstance(dtype.elementType, StringType):
        return [f"{column}-{i}-a", f"{column}-{i}-b"]
    raise TypeError(f"no sample for {dtype}")


def sample_rows(contract: TableSchema, n: int = 4, ds: str | None = None) -> list[tuple]:
    rows = []
    for i in range(n):
        row = [sample_value(c.type, i, c.name) for c in contract.columns]
        if ds is not None and "ds" in contract.column_names:
            row[contract.column_names.index("ds")] = ds
        # a nullable column holds a null on one row, so nulls round-trip too
        for j, c in enumerate(contract.columns):
            if c.nullable and i == n - 1:
                row[j] = None
        rows.append(tuple(row))
    return rows


def sample_df(spark, table: str, n: int = 4, ds: str | None = None):
    contract = TABLES[table]
    return spark.createDataFrame(sample_rows(contract, n, ds), contract.spark)


def write_sample(lake, table: str, df):
    if "ds" in TABLES[table].partition_by:
        for ds in sorted({r.ds for r in df.select("ds").distinct().collect()}):
            lake.overwrite_partition(table, df.where(F.col("ds") == ds), ds)
    else:
        lake.append(table, df)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_table_round_trips_through_lake_and_plain_delta_rs(spark, lake, table):
    df = sample_df(spark, table)
    write_sample(lake, table, df)

    assert_df_equality(lake.read(table), df, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)

    plain = read_delta_rs(lake.location(table))
    expected = df.toPandas()
    plain = plain[expected.columns].sort_values(list(TABLES[table].keys)).reset_index(drop=True)
    expected = expected.sort_values(list(TABLES[table].keys)).reset_index(drop=True)
    assert len(plain) == len(expected)
    for col in expected.columns:
        for got, want in zip(plain[col], expected[col]):
            if want is None or (isinstance(want, float) and want != want):
                assert got is None or got != got, (table, col)
            elif hasattr(want, "__len__") and not isinstance(want, str):
                assert list(got) == pytest.approx(list(want)), (table, col)
            elif isinstance(want, dt.datetime) or hasattr(want, "to_pydatetime"):
                assert got.timestamp() == want.timestamp(), (table, col)
            else:
                assert got == want, (table, col)


@pytest.mark.parametrize("table, write", [("metrics", "write"), ("models", "merge")])
def test_a_new_table_carries_its_description_and_column_comments_for_any_delta_reader(spark, lake, table, write):
    from deltalake import DeltaTable

    df = sample_df(spark, table)
    write_sample(lake, table, df) if write == "write" else lake.merge(table, df)

    plain = DeltaTable(lake.location(table))
    contract = TABLES[table]
    assert plain.metadata().description == contract.doc
    assert {f.name: f.metadata for f in plain.schema().fields} == {c.name: {"comment": c.doc} for c in contract.columns}


def test_a_table_written_before_comments_were_standard_gets_them_on_its_next_write(spark, lake):
    from deltalake import DeltaTable
    from pyspark.sql.pandas.types import to_arrow_schema

    contract = TABLES["metrics"]
    old_schema = to_arrow_schema(contract.spark, timezone="UTC", prefers_large_types=False)  # SPARK::metadata::json
    DeltaTable.create(lake.location("metrics"), schema=old_schema, partition_by=["ds"], name="metrics")
    assert DeltaTable(lake.location("metrics")).schema().fields[0].metadata.get("comment") is None

    write_sample(lake, "metrics", sample_df(spark, "metrics"))

    plain = DeltaTable(lake.location("metrics"))
    assert plain.metadata().description == contract.doc
    assert {f.name: f.metadata["comment"] for f in plain.schema().fields} == {c.name: c.doc for c in contract.columns}
    assert len(lake.read("metrics").collect()) == 4


def test_overwrite_partition_is_idempotent_and_leaves_other_days_alone(spark, lake):
    day1 = sample_df(spark, "candidates", ds="2026-01-01")
    day2 = sample_df(spark, "candidates", ds="2026-01-02")
    lake.overwrite_partition("candidates", day1, "2026-01-01")
    lake.overwrite_partition("candidates", day2, "2026-01-02")
    lake.overwrite_partition("candidates", day1, "2026-01-01")
    lake.overwrite_partition("candidates", day1, "2026-01-01")

    assert_df_equality(lake.read("candidates"), day1.union(day2), ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)

    rescored = day1.withColumn("score", F.lit(9.0))
    lake.overwrite_partition("candidates", rescored, "2026-01-01")
    assert_df_equality(lake.read("candidates", ds="2026-01-01"), rescored, ignore_row_order=True,
                       ignore_nullable=True, ignore_metadata=True)
    assert lake.read("candidates", ds="2026-01-02").count() == 4


def test_overwriting_with_an_empty_frame_empties_just_that_partition(spark, lake):
    lake.overwrite_partition("metrics", sample_df(spark, "metrics", ds="2026-01-01"), "2026-01-01")
    lake.overwrite_partition("metrics", sample_df(spark, "metrics", ds="2026-01-02"), "2026-01-02")
    empty = spark.createDataFrame([], TABLES["metrics"].spark)
    lake.overwrite_partition("metrics", empty, "2026-01-01")
    assert lake.read("metrics", ds="2026-01-01").count() == 0
    assert lake.read("metrics").count() == 4


def test_overwrite_partition_refuses_rows_of_another_day(spark, lake):
    lake.overwrite_partition("metrics", sample_df(spark, "metrics", ds="2026-01-01"), "2026-01-01")
    before = lake.version("metrics")
    with pytest.raises(Exception, match="overwrite of ds=2026-01-01 got rows for ds="):
        lake.overwrite_partition("metrics", sample_df(spark, "metrics", ds="2026-01-02"), "2026-01-01")
    assert lake.version("metrics") == before


def _data_files(root: str) -> set[str]:
    return {
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root)
        for f in files
        if f.endswith(".parquet")
    }


def test_a_write_that_fails_in_one_task_leaves_version_contents_and_files_unchanged(spark, lake):
    good = sample_df(spark, "candidates", n=4, ds="2026-01-01")
    lake.overwrite_partition("candidates", good, "2026-01-01")
    version, files = lake.version("candidates"), _data_files(lake.location("candidates"))

    @F.udf("int")
    def explode_on_rank_3(rank):
        if rank == 3:
            raise RuntimeError("boom in one task")
        return rank

    bad = (
        sample_df(spark, "candidates", n=4, ds="2026-01-01")
        .repartition(2, "rank")
        .withColumn("rank", explode_on_rank_3("rank"))
    )
    with pytest.raises(Exception, match="boom in one task"):
        lake.overwrite_partition("candidates", bad, "2026-01-01")

    assert lake.version("candidates") == version
    assert _data_files(lake.location("candidates")) == files
    assert_df_equality(lake.read("candidates"), good, ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)


def test_a_failed_first_write_creates_no_table(spark, lake):
    df = sample_df(spark, "metrics", ds="2026-01-01").withColumn("model", F.lit(None).cast("string"))
    with pytest.raises(Exception, match=r"null values in non-nullable column\(s\) \['model'\]"):
        lake.overwrite_partition("metrics", df, "2026-01-01")
    assert not lake.exists("metrics")
    assert _data_files(lake.location("metrics")) == set()


def test_schema_mismatch_is_refused_naming_the_columns(spark, lake):
    df = sample_df(spark, "metrics", ds="2026-01-01")
    lake.overwrite_partition("metrics", df, "2026-01-01")
    wrong = df.drop("n").withColumn("k", F.col("k").cast("string")).withColumn("extra", F.lit(1))
    with pytest.raises(SchemaMismatchError) as err:
        lake.overwrite_partition("metrics", wrong, "2026-01-01")
    message = str(err.value)
    assert "table metrics" in message
    assert "missing column(s) ['n']" in message
    assert "unexpected column(s) ['extra']" in message
    assert "column 'k' is string, expected int" in message
    assert lake.version("metrics") == 0


def test_merge_updates_matching_keys_and_inserts_new_ones(spark, lake):
    rows = sample_df(spark, "models", n=3)
    lake.merge("models", rows)
    update = rows.where(F.col("model_version") == "model_version-1").withColumn("path", F.lit("/new"))
    new = sample_df(spark, "models", n=5).where(F.col("model_version") == "model_version-3")
    lake.merge("models", update.union(new))

    expected = rows.where(F.col("model_version") != "model_version-1").union(update).union(new)
    assert_df_equality(lake.read("models"), expected, ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)
    with pytest.raises(ValueError, match="duplicate keys"):
        lake.merge("models", rows.union(rows))


def test_merge_never_replaces_a_row_with_one_from_an_earlier_day(spark, lake):
    def items(title, ds):
        return sample_df(spark, "items", n=2, ds=ds).withColumn("title", F.lit(title))

    lake.merge("items", items("day 3", "2026-01-03"))
    lake.merge("items", items("day 2 again", "2026-01-02"))
    assert {(r.title, r.ds) for r in lake.read("items").collect()} == {("day 3", "2026-01-03")}
    lake.merge("items", items("day 3 rerun", "2026-01-03"))  # the same day replaces, as a rerun must
    assert {(r.title, r.ds) for r in lake.read("items").collect()} == {("day 3 rerun", "2026-01-03")}


def test_a_failure_after_the_commit_landed_keeps_the_committed_version_whole(spark, lake):
    from deltalake import DeltaTable

    day1 = sample_df(spark, "metrics", ds="2026-01-01")
    lake.overwrite_partition("metrics", day1, "2026-01-01")
    DeltaTable(lake.location("metrics")).alter.set_table_properties({"delta.checkpointInterval": "1"})
    version = lake.version("metrics")
    # the checkpoint delta-rs writes right after the next commit cannot be written: a real post-commit failure
    os.makedirs(os.path.join(lake.location("metrics"), "_delta_log", f"{version + 1:020d}.checkpoint.parquet"))
    day2 = sample_df(spark, "metrics", ds="2026-01-02")
    assert lake.overwrite_partition("metrics", day2, "2026-01-02") == version + 1
    for path in lake.files("metrics"):
        assert os.path.exists(path.removeprefix("file://")), f"{path}: named by the log, deleted by the cleanup"
    assert_df_equality(lake.read("metrics"), day1.union(day2), ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)


def test_time_travel_history_and_maintenance(spark, lake):
    day1 = sample_df(spark, "metrics", ds="2026-01-01")
    lake.overwrite_partition("metrics", day1, "2026-01-01")
    lake.overwrite_partition("metrics", day1.withColumn("value", F.lit(1.0)), "2026-01-01")

    assert_df_equality(lake.read("metrics", version=0), day1, ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)
    assert list(lake.history("metrics")["version"]) == [1, 0]

    lake.optimize("metrics")
    removed = lake.vacuum("metrics", retention_hours=0)
    assert removed, "vacuum removed the files of the overwritten version"
    assert lake.read("metrics").where("value = 1.0").count() == 4


def test_tables_can_be_queried_by_name_in_spark_sql(spark, lake):
    lake.overwrite_partition("metrics", sample_df(spark, "metrics", ds="2026-01-01"), "2026-01-01")
    assert "metrics" in lake.register_views()
    assert spark.sql("SELECT count(*) AS n FROM metrics WHERE ds = '2026-01-01'").first().n == 4


def test_reading_a_table_no_job_wrote_says_so(lake):
    with pytest.raises(TableNotFoundError, match="table 'prompts' does not exist"):
        lake.read("prompts")
    assert lake.read_or_empty("prompts").count() == 0


def test_lake_builds_the_backend_it_is_asked_for(spark, tmp_path):
    assert type(Lake(spark, root=str(tmp_path / "a"), backend="deltars")) is DeltaRsLake
    assert Lake(spark, root=str(tmp_path / "b")).backend == "deltars"  # this session has no Delta jars
    with pytest.raises(ValueError, match="lake backend must be auto, native or deltars"):
        Lake(spark, root=str(tmp_path / "c"), backend="delta")


def test_bad_identifiers_and_dates_are_refused(spark, lake):
    with pytest.raises(ValueError, match="must match"):
        check_identifier("x; DROP TABLE y")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        lake.read("metrics", ds="2026/01/01") if lake.exists("metrics") else lake.overwrite_partition(
            "metrics", sample_df(spark, "metrics"), "2026/01/01")


@pytest.mark.parametrize("ds", ["2026-13-45", "2026-02-30", "2026-03-01\n", "2026-03-01 ", " 2026-03-01",
                                "\uff12\uff10\uff12\uff16-03-01", "2026-3-1", "20260301", "", None, 20260301])
def test_a_run_date_must_be_a_real_ascii_calendar_date_and_nothing_else(ds):
    with pytest.raises(ValueError, match="ds must be a real calendar date as YYYY-MM-DD"):
        check_ds(ds)
    assert check_ds("2028-02-29") == "2028-02-29"


def test_the_data_source_reads_versions_and_prunes_partitions_by_itself(spark, lake):
    day1 = sample_df(spark, "metrics", ds="2026-01-01")
    lake.overwrite_partition("metrics", day1, "2026-01-01")
    lake.overwrite_partition("metrics", sample_df(spark, "metrics", ds="2026-01-02"), "2026-01-02")
    def source():
        return spark.read.format("recllm_delta").option("path", lake.location("metrics")).option("table", "metrics")

    pruned = source().load().where("ds = '2026-01-01'")
    assert "Filter (" not in pruned._jdf.queryExecution().executedPlan().toString()
    assert_df_equality(pruned, day1, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)
    assert_df_equality(source().option("version", "0").load(), day1, ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)
    assert source().load().count() == 8
