"""Ingest: validate one day of landed raw rows into typed tables, quarantining the rest.

Each raw row gets the FIRST rule it breaks as its reason (rules are checked in the order
of each `validate_*` function's rules); rows with no reason are accepted. Counts reconcile exactly, and
are checked independently (`reconcile`: the raw rows counted on their own against accepted +
quarantined, per table) before anything is written. All validation happens before any write, and
every write replaces (events, quarantine: the `ds` partition) or upserts (items, users),
so a rerun for the same `ds` leaves the tables as they were.

Catalogue text (title, description, category, brand) is stored with anything shaped like
a control token defused (`<|item|>` becomes `<item>`, as `recllm.tokens.neutralize` does):
training reads titles straight from `items` as language-model targets.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recllm.config import IngestConfig
from recllm.lake import Lake
from recllm.model.tokens import BLANK_CHARACTER, BLANK_ENDS, CONTROL_PATTERN
from schemas import EVENT_TYPES, EVENTS, EVENTS_RAW, ITEMS, ITEMS_RAW, QUARANTINE, USERS, USERS_RAW

log = logging.getLogger(__name__)

REASONS = (
    "null_id",
    "missing_field",
    "unknown_event_type",
    "unparseable_ts",
    "future_ts",
    "implausible_ts",
    "bad_type",
    "out_of_range",
    "unknown_user",
    "unknown_item",
    "duplicate_id",
)
"""Every reason a row can be quarantined with."""

NUMBER = r"\A\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*\z|\A\s*(?i:[+-]?(nan|inf|infinity))\s*\z"
"""A number as upstream writes one (ASCII digits, optional sign, point and exponent; NaN and Infinity spelled
out, for the range rules to judge); anything else, hex, "1,5", full-width digits or a NUL, is bad_type."""
CONTROL_CHARACTER = r"[\x00-\x08\x0e-\x1f\x7f]"
"""A control character other than white space: no timestamp holds one (Spark's cast would drop a NUL)."""


@dataclass
class TableCounts:
    rows_in: int
    accepted: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class IngestReport:
    ds: str
    run_id: str
    tables: dict[str, TableCounts]

    def lines(self) -> list[str]:
        out = []
        for name, c in self.tables.items():
            why = ", ".join(f"{r}={n}" for r, n in sorted(c.reasons.items())) or "none"
            out.append(f"{name}: in={c.rows_in} accepted={c.accepted} quarantined={c.quarantined} ({why})")
        return out


def _first_failing(rules: list[tuple[str, Column]]) -> Column:
    """The name of the first rule whose condition is true, else null."""
    reason = F.lit(None).cast("string")
    for name, broken in reversed(rules):
        reason = F.when(broken, F.lit(name)).otherwise(reason)
    return reason


def _defused(c: Column) -> Column:
    """Text with control-token shapes rewritten as plain text (Spark twin of `recllm.tokens.neutralize`)."""
    return F.regexp_replace(c, CONTROL_PATTERN, "<$1>")


def _blank(c: Column) -> Column:
    """Null, or only characters that show nothing (Unicode white space, control, format: `tokens.is_blank`)."""
    return c.isNull() | c.rlike(rf"\A{BLANK_CHARACTER}*\z")


def _stripped_or_null(c: Column) -> Column:
    """Text without blank ends; null when nothing is left."""
    return F.nullif(F.regexp_replace(c, BLANK_ENDS, ""), F.lit(""))


def _after_day(ts: Column, ds: str) -> Column:
    return ts >= F.to_timestamp(F.lit(ds)) + F.expr("INTERVAL 1 DAY")


def _before(ts: Column, earliest: str) -> Column:
    """Before `ingest.earliest_ts`: epoch 0, year 1 and the like, which no shop logged (and year 1 breaks
    `collect()`/`toPandas()` of a partition that holds it)."""
    return ts < F.to_timestamp(F.lit(earliest))


def _number(c: Column, spark_type: str) -> Column:
    """`c` as `spark_type` when it is written as a number (`NUMBER`), else null."""
    return F.when(c.rlike(NUMBER), c.try_cast(spark_type))


def _timestamp(c: Column) -> Column:
    """`c` as a timestamp, null when Spark cannot parse it or it holds a control character."""
    return F.when(~c.rlike(CONTROL_CHARACTER), c.try_cast("timestamp"))


def _row_json(raw: DataFrame) -> Column:
    return F.to_json(F.struct(*[F.col(c) for c in raw.columns]), {"ignoreNullFields": "false"})


def _duplicate_rank(key: str, order: Column) -> Column:
    """1 for the first row of each key (by `order`, then content), 2+ for its duplicates."""
    return F.row_number().over(Window.partitionBy(key).orderBy(order, F.col("_row_json")))


def validate_events(
    raw: DataFrame,
    ds: str,
    known_users: DataFrame | None,
    known_items: DataFrame,
    earlier_event_ids: DataFrame,
    config: IngestConfig,
) -> DataFrame:
    """Raw events with typed columns, `_row_json`, and `_reason` (null when accepted).

    `known_users` is None when the lake keeps no users (then user ids are not checked).
    """
    ts = _timestamp(F.col("ts"))
    value = _number(F.col("value"), "double")
    df = raw.withColumn("_row_json", _row_json(raw)).withColumn("_ts", ts).withColumn("_value", value)
    df = df.join(known_items.select(F.col("item_id"), F.lit(True).alias("_item_known")), "item_id", "left")
    df = df.join(earlier_event_ids.select("event_id", F.lit(True).alias("_seen_before")), "event_id", "left")
    if known_users is not None:
        df = df.join(known_users.select("user_id", F.lit(True).alias("_user_known")), "user_id", "left")
        user_unknown = F.col("_user_known").isNull()
    else:
        user_unknown = F.lit(False)
    is_rating = F.col("event_type") == "rating"
    rating_out = is_rating & ((F.col("_value") < config.rating_min) | (F.col("_value") > config.rating_max))
    rules = [
        ("null_id", _blank(F.col("event_id")) | _blank(F.col("user_id")) | _blank(F.col("item_id"))),
        ("unknown_event_type", ~F.coalesce(F.col("event_type").isin(*EVENT_TYPES), F.lit(False))),
        ("unparseable_ts", F.col("_ts").isNull()),
        ("future_ts", _after_day(F.col("_ts"), ds)),
        ("implausible_ts", _before(F.col("_ts"), config.earliest_ts)),
        ("bad_type", F.col("value").isNotNull() & (F.col("_value").isNull() | F.isnan(F.col("_value")))),
        ("out_of_range", rating_out | (F.col("_value") < 0) | (F.abs(F.col("_value")) == float("inf"))),
        ("unknown_user", user_unknown),
        ("unknown_item", F.col("_item_known").isNull()),
        ("duplicate_id", F.col("_seen_before").isNotNull()),
    ]
    df = df.withColumn("_reason", _first_failing(rules))
    within_day = F.when(F.col("_reason").isNull(), _duplicate_rank("event_id", F.col("_ts")))
    df = df.withColumn("_reason", F.when(within_day > 1, F.lit("duplicate_id")).otherwise(F.col("_reason")))
    return df.select(
        "event_id",
        "user_id",
        "item_id",
        "event_type",
        F.coalesce(_stripped_or_null(F.col("scenario")), F.lit("unknown")).alias("scenario"),
        _stripped_or_null(F.col("query")).alias("query"),
        F.col("_value").alias("value"),
        F.col("_ts").alias("ts"),
        F.lit(ds).alias("ds"),
        "_row_json",
        "_reason",
    )


def validate_items(raw: DataFrame, ds: str, config: IngestConfig) -> DataFrame:
    """Raw catalogue rows with typed columns, `_row_json`, and `_reason`."""
    created = _timestamp(F.col("created_ts"))
    price = _number(F.col("price"), "double")
    df = raw.withColumn("_row_json", _row_json(raw)).withColumn("_created", created).withColumn("_price", price)
    rules = [
        ("null_id", _blank(F.col("item_id"))),
        ("missing_field", _blank(F.col("title"))),
        ("unparseable_ts", F.col("_created").isNull()),
        ("future_ts", _after_day(F.col("_created"), ds)),
        ("implausible_ts", _before(F.col("_created"), config.earliest_ts)),
        ("bad_type", F.col("price").isNotNull() & (F.col("_price").isNull() | F.isnan(F.col("_price")))),
        ("out_of_range", (F.col("_price") < 0) | (F.col("_price") == float("inf"))),
    ]
    df = _mark_duplicates(df.withColumn("_reason", _first_failing(rules)), "item_id", F.col("_created"))
    return df.select(
        "item_id",
        *[_defused(F.col(c)).alias(c) for c in ("title", "description", "category", "brand")],
        F.col("_price").alias("price"),
        "image_embedding",
        F.col("_created").alias("created_ts"),
        F.lit(ds).alias("ds"),
        "_row_json",
        "_reason",
    )


def validate_users(raw: DataFrame, ds: str, config: IngestConfig) -> DataFrame:
    """Raw user profiles with typed columns, `_row_json`, and `_reason`."""
    created = _timestamp(F.col("created_ts"))
    age = _number(F.col("age"), "int")
    df = raw.withColumn("_row_json", _row_json(raw)).withColumn("_created", created).withColumn("_age", age)
    rules = [
        ("null_id", _blank(F.col("user_id"))),
        ("unparseable_ts", F.col("_created").isNull()),
        ("future_ts", _after_day(F.col("_created"), ds)),
        ("implausible_ts", _before(F.col("_created"), config.earliest_ts)),
        ("bad_type", F.col("age").isNotNull() & F.col("_age").isNull()),
        ("out_of_range", (F.col("_age") < config.age_min) | (F.col("_age") > config.age_max)),
    ]
    df = _mark_duplicates(df.withColumn("_reason", _first_failing(rules)), "user_id", F.col("_created"))
    return df.select(
        "user_id",
        F.col("_age").alias("age"),
        "gender",
        "country",
        "profile_text",
        F.col("_created").alias("created_ts"),
        F.lit(ds).alias("ds"),
        "_row_json",
        "_reason",
    )


def _mark_duplicates(df: DataFrame, key: str, order: Column) -> DataFrame:
    rank = F.when(F.col("_reason").isNull(), _duplicate_rank(key, order))
    return df.withColumn("_reason", F.when(rank > 1, F.lit("duplicate_id")).otherwise(F.col("_reason")))


def accepted(validated: DataFrame) -> DataFrame:
    return validated.where(F.col("_reason").isNull()).drop("_row_json", "_reason")


def quarantined(validated: DataFrame, source_table: str, ds: str, run_id: str) -> DataFrame:
    return validated.where(F.col("_reason").isNotNull()).select(
        F.lit(ds).alias("ds"),
        F.lit(run_id).alias("run_id"),
        F.lit(source_table).alias("source_table"),
        F.col("_reason").alias("reason"),
        F.col("_row_json").alias("row_json"),
        F.current_timestamp().alias("quarantined_at"),
    )


class ReconciliationError(RuntimeError):
    """Validation produced more or fewer rows than were landed: nothing is written."""


def reconcile(raw_rows: dict[str, int], report: IngestReport) -> None:
    """Raise unless each table's landed raw rows (counted on their own) equal its accepted + quarantined rows."""
    broken = [f"{name}: {n} raw rows landed, {report.tables[name].accepted} accepted + "
              f"{report.tables[name].quarantined} quarantined" for name, n in raw_rows.items()
              if n != report.tables[name].accepted + report.tables[name].quarantined]
    if broken:
        raise ReconciliationError(f"ingest ds={report.ds}: counts do not reconcile; nothing written ({'; '.join(broken)})")


def count_reasons(validated: DataFrame) -> TableCounts:
    """Rows in, accepted and quarantined (by reason) of one validated table; they reconcile."""
    by_reason = {r["_reason"]: r["count"] for r in validated.groupBy("_reason").count().collect()}
    accepted_n = by_reason.pop(None, 0)
    quarantined_n = sum(by_reason.values())
    rows_in = accepted_n + quarantined_n
    return TableCounts(rows_in, accepted_n, quarantined_n, by_reason)


def run_ingest(lake: Lake, ds: str, config: IngestConfig, run_id: str | None = None) -> IngestReport:
    """Validate the raw partitions of `ds` and write events, items, users and quarantine."""
    run_id = run_id or uuid.uuid4().hex[:12]
    spark = lake.spark

    def raw(name: str) -> DataFrame:
        return lake.read(name, ds=ds) if lake.exists(name) else spark.createDataFrame([], lake.contract(name).spark)

    items = validate_items(raw(ITEMS_RAW.name), ds, config).cache()
    users = validate_users(raw(USERS_RAW.name), ds, config).cache()
    new_item_ids = accepted(items).select("item_id")
    new_user_ids = accepted(users).select("user_id")
    known_items = lake.read_or_empty(ITEMS.name).select("item_id").union(new_item_ids).distinct()
    keeps_users = lake.exists(USERS.name) or count_reasons(users).accepted > 0
    known_users = (
        lake.read_or_empty(USERS.name).select("user_id").union(new_user_ids).distinct() if keeps_users else None
    )
    earlier_ids = (
        lake.read(EVENTS.name).where(F.col("ds") != ds).select("event_id").distinct()
        if lake.exists(EVENTS.name)
        else spark.createDataFrame([], "event_id string")
    )
    events = validate_events(raw(EVENTS_RAW.name), ds, known_users, known_items, earlier_ids, config).cache()

    validated = {EVENTS_RAW.name: events, ITEMS_RAW.name: items, USERS_RAW.name: users}
    report = IngestReport(ds, run_id, {name: count_reasons(v) for name, v in validated.items()})
    for line in report.lines():
        log.info("ingest ds=%s run=%s %s", ds, run_id, line)
    reconcile({name: raw(name).count() for name in validated}, report)
    if report.tables[EVENTS_RAW.name].rows_in == 0:
        log.warning("ingest ds=%s: no raw events landed for this date; writing an empty events partition", ds)

    rejects = None
    for name, v in validated.items():
        q = quarantined(v, name, ds, run_id)
        rejects = q if rejects is None else rejects.unionByName(q)

    # Item and user upserts first, so events never reference ids missing from their tables.
    if report.tables[ITEMS_RAW.name].accepted:
        lake.merge(ITEMS.name, accepted(items))
    if report.tables[USERS_RAW.name].accepted:
        lake.merge(USERS.name, accepted(users))
    lake.overwrite_partition(EVENTS.name, accepted(events), ds)
    lake.overwrite_partition(QUARANTINE.name, rejects, ds)
    for v in validated.values():
        v.unpersist()
    return report
