"""Item features: stable integer indices, frozen text embeddings, event counts and cold flags.

`item_features` is a dimension table, rewritten whole in one transaction each run:

* every item of `items` gets a row; a row whose item has left `items` is kept, so its
  index is never handed to another item;
* `item_index` never changes for a known item; new items get consecutive indices after
  the current maximum (from 0 on the first run), ordered by the catalogue's `created_ts`
  (when the item was first seen: every new item of a run shares `first_seen_ds`), then `item_id`;
* text embeddings are reused: only items without one, or whose `items` row was updated
  by a landing newer than their last featurisation (`items.ds > item_features.ds`), go
  through the encoder. Changing `features.text_encoder`, or correcting catalogue text
  under an already featurised `ds`, needs `reembed_all=True` (`--reembed-all`);
* counts cover accepted `events` with `ds <= run ds`, recomputed in full each run (a
  cheap aggregate) so a rerun or backfill never double counts.

A rerun for the same `ds` reuses every embedding and index, so it writes identical rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recllm.config import FeaturesConfig
from recllm.lake import Lake
from recllm.model.text_encoder import TEXT_SEPARATOR
from schemas import EVENTS, ITEM_FEATURES, ITEMS, LIKED_MIN_RATING

log = logging.getLogger(__name__)

POSITIVE_EVENT_TYPES = ("click", "purchase", "like")
"""Event types that count as positive feedback."""

Embed = Callable[[Column], Column]
"""Maps a text column to its embedding column (the job passes `udfs.text.text_embedding_udf(...)`)."""


@dataclass
class FeaturesReport:
    """Row counts of a written `item_features`: all items, those first seen on `ds`, cold ones."""

    ds: str | None
    total: int
    new: int
    cold: int


def item_text_column(config: FeaturesConfig) -> Column:
    """Spark twin of `recllm.text_encoder.item_text`: "title. category. brand. description", cut to max_text_chars."""
    parts = [F.nullif(F.col(c), F.lit("")) for c in ("title", "category", "brand", "description")]
    return F.substring(F.concat_ws(TEXT_SEPARATOR, *parts), 1, config.max_text_chars)


def event_counts(lake: Lake, ds: str) -> DataFrame:
    """Per item: accepted events and positive events (clicks, purchases, likes, ratings >= LIKED_MIN_RATING) up to `ds`."""
    events = lake.read_or_empty(EVENTS.name).where(F.col("ds") <= ds)
    rating_positive = (F.col("event_type") == "rating") & (F.col("value") >= LIKED_MIN_RATING)
    positive = F.col("event_type").isin(*POSITIVE_EVENT_TYPES) | F.coalesce(rating_positive, F.lit(False))
    return events.groupBy("item_id").agg(
        F.count(F.lit(1)).cast("long").alias("n_events"),
        F.sum(positive.cast("long")).alias("n_positive"),
    )


def previous_features(lake: Lake) -> DataFrame:
    """The current `item_features`, pinned to its version so the overwrite of this run cannot change it."""
    if not lake.exists(ITEM_FEATURES.name):
        return lake.read_or_empty(ITEM_FEATURES.name)
    return lake.read(ITEM_FEATURES.name, version=lake.version(ITEM_FEATURES.name))


def _catalogue(lake: Lake, config: FeaturesConfig, previous: DataFrame) -> DataFrame:
    """Items joined with their previous features (full outer: items that left `items` keep their row)."""
    items = lake.read(ITEMS.name).select(
        "item_id",
        item_text_column(config).alias("text"),
        "image_embedding",
        "created_ts",
        F.col("ds").alias("item_ds"),
    )
    old = previous.select(
        "item_id",
        "item_index",
        F.col("text_embedding").alias("old_text_embedding"),
        F.col("image_embedding").alias("old_image_embedding"),
        "first_seen_ds",
        F.col("ds").alias("old_ds"),
    )
    return items.join(old, "item_id", "full")


def _new_indices(catalogue: DataFrame, next_index: int) -> DataFrame:
    """(item_id, new_index) for items without an index: consecutive from `next_index` by (created_ts, item_id).

    Consecutive numbering is one global order, so the new items (whose `item_index` is
    null) form one window partition: cheap for a day's arrivals, done once for the first catalogue.
    """
    order = Window.partitionBy("item_index").orderBy("created_ts", "item_id")
    return catalogue.where(F.col("item_index").isNull()).select(
        "item_id", (F.row_number().over(order) - 1 + F.lit(next_index)).cast("int").alias("new_index")
    )


def _needs_embedding(reembed_all: bool) -> Column:
    """True for catalogue items with no embedding yet or a catalogue row newer than their features."""
    in_catalogue = F.col("item_ds").isNotNull()
    stale = F.col("old_text_embedding").isNull() | (F.col("item_ds") > F.col("old_ds"))
    return in_catalogue & (F.lit(reembed_all) | stale)


def _embedded(rows: DataFrame, embed: Embed, n_rows: int, batch_size: int) -> DataFrame:
    """`rows` with `text_embedding` from the encoder, over up to spark.sql.shuffle.partitions tasks of >= one batch."""
    max_tasks = int(rows.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    tasks = max(1, min(max_tasks, math.ceil(n_rows / batch_size)))
    return rows.repartition(tasks).withColumn("text_embedding", embed(F.col("text")).cast("array<float>"))


def _plan(lake: Lake, config: FeaturesConfig, reembed_all: bool) -> tuple[DataFrame, int]:
    """Catalogue rows with their kept or new `item_index` and `_embed` flag, and how many need embedding."""
    catalogue = _catalogue(lake, config, previous_features(lake)).withColumn("_embed", _needs_embedding(reembed_all))
    max_index, to_embed = catalogue.agg(F.max("item_index"), F.count_if(F.col("_embed"))).first()
    next_index = 0 if max_index is None else max_index + 1
    rows = catalogue.join(_new_indices(catalogue, next_index), "item_id", "left").withColumn(
        "item_index", F.coalesce("item_index", "new_index")
    )
    return rows, int(to_embed)


def build_item_features(
    lake: Lake, ds: str, config: FeaturesConfig, embed: Embed, reembed_all: bool = False
) -> DataFrame:
    """The full `item_features` table for run date `ds`; only new or changed items go through `embed`."""
    rows, to_embed = _plan(lake, config, reembed_all)
    log.info("features ds=%s: %d item(s) to embed%s", ds, to_embed, " (re-embedding all)" if reembed_all else "")
    features = rows.where(~F.col("_embed")).withColumn("text_embedding", F.col("old_text_embedding"))
    if to_embed:
        fresh = _embedded(rows.where(F.col("_embed")), embed, to_embed, config.batch_size)
        features = features.unionByName(fresh)
    n_events = F.coalesce(F.col("n_events"), F.lit(0).cast("long"))
    return features.join(event_counts(lake, ds), "item_id", "left").select(
        "item_id",
        "item_index",
        "text_embedding",
        F.when(F.col("item_ds").isNotNull(), F.col("image_embedding"))
        .otherwise(F.col("old_image_embedding"))
        .alias("image_embedding"),
        F.coalesce(F.col("first_seen_ds"), F.lit(ds)).alias("first_seen_ds"),
        n_events.alias("n_events"),
        F.coalesce(F.col("n_positive"), F.lit(0).cast("long")).alias("n_positive"),
        (n_events < config.cold_min_events).alias("is_cold"),
        F.lit(ds).alias("ds"),
    )


def write_item_features(lake: Lake, df: DataFrame) -> FeaturesReport:
    """Replace `item_features` with `df` in one transaction; logs and returns the written table's counts."""
    lake.overwrite(ITEM_FEATURES.name, df)
    row = (
        lake.read(ITEM_FEATURES.name)
        .agg(
            F.max("ds").alias("ds"),
            F.count(F.lit(1)).alias("total"),
            F.count_if(F.col("first_seen_ds") == F.col("ds")).alias("new"),
            F.count_if("is_cold").alias("cold"),
        )
        .first()
    )
    report = FeaturesReport(ds=row["ds"], total=row["total"], new=row["new"], cold=row["cold"])
    log.info("features ds=%s: item_features rows=%d new=%d cold=%d", report.ds, report.total, report.new, report.cold)
    return report


def run_features(
    lake: Lake, ds: str, config: FeaturesConfig, embed: Embed, reembed_all: bool = False
) -> FeaturesReport:
    """Build and write `item_features` for `ds` (what `jobs.features` runs)."""
    return write_item_features(lake, build_item_features(lake, ds, config, embed, reembed_all))
