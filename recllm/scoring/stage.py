"""Nightly scoring, the driver side: the score stage's DataFrame plans and its writes.

    report = run_scoring(lake, "2026-01-03", config, functions)              # model: score.model_version
    report = run_scoring(lake, "2026-01-03", config, functions, "urm-2026-01-02-1a2b3c4d")

`functions` are the executor functions (`ScoringFunctions`; the jobs pass `udfs.scoring`'s
mapInPandas builders), which score batches with `recllm.scoring.batch` on the workers.

What the job writes for `ds`, each row with its `model_version`:

* `candidates`: the top `score.top_k` items of the WHOLE current catalogue for every
  inference prompt of `ds` (one per user and retrieval objective), items the user bought up
  to `ds` excluded (`score.exclude_purchased`), and with `score.exclude_history` the items
  of the prompt's history too. Items that arrived after training are in the
  catalogue, scored from text and image.
* `ctr_scores`: p_click for each user's top `score.ctr_top_n` candidates of every objective
  (deduplicated by user, item, scenario; the scenario is the objective's own or the user's
  latest), plus every pair of `score.requests_table`. Each (user, scenario) gets the prompt
  CTR training examples had: the `ctr` instruction, that scenario, the profile and the
  user's history at the end of `ds`. Pairs naming an item outside the catalogue are
  dropped with a warning.
* `cold_start_fills`: reason `new_item`: every item first seen on `ds` that the model never
  trained an ID for is placed with the `score.cold_item_users` users (ranked by their
  `score.cold_objective` prompt) most likely to want it; `rank` orders a user's new items.
  Reason `new_user`: users whose first event is on `ds`, who have no history yet, or who
  signed up on `ds` without events get `score.new_user_k` items from a prompt with their
  profile and the cold objective's text alone (history "none").

Failure and reruns: the model version is resolved first (an unknown version fails naming
the known ones, before any work). All three outputs are computed and cached before the
first write, so a failure in scoring leaves every table as it was; each table's partition
is then replaced in one transaction, so a rerun leaves exactly one copy of each row. A day
with no inference prompts (the prompts job wrote none for `ds`) writes EMPTY partitions
of all three tables and logs a warning; requested pairs are not scored on such a day.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch
from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recllm.config import ConfigError, PromptsConfig, RecllmConfig, ScoreConfig, check_section
from recllm.lake import Lake
from recllm.model.urm import ItemCatalog
from recllm.pipeline.objectives import CTR, DEFAULT_OBJECTIVES, Objective, objectives_from_config
from recllm.pipeline.prompts import EMPTY_HISTORY, INFER, UNKNOWN, render_prompts, user_context
from recllm.registry import ModelRef, resolve_model
from recllm.scoring.batch import CANDIDATE, CANDIDATE_SCHEMA, CTR_SCHEMA, NEW_ITEM, NEW_USER, WorkerSpec
from recllm.scoring.requests import read_requests, requests_ref
from schemas import CANDIDATES, COLD_START_FILLS, CTR_SCORES, EVENTS, ITEM_FEATURES, PROMPTS, USERS

log = logging.getLogger(__name__)


@dataclass
class ScoreReport:
    """What a scoring run wrote for `ds` (row counts), and with which model."""

    ds: str
    model_version: str
    candidates: int = 0
    ctr_scores: int = 0
    cold_start_fills: int = 0
    new_items: int = 0
    new_users: int = 0
    empty_day: bool = False
    per_objective: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoringFunctions:
    """The executor functions scoring runs with `mapInPandas` (the jobs pass `udfs.scoring`'s).

    `candidates(spec, k, new_items, new_item_users, placement_objective)` and `ctr(spec)` each
    return a function from an iterator of pandas batches to an iterator of result batches.
    """

    candidates: Callable
    ctr: Callable


# -- configuration and inputs ------------------------------------------------------------


def check_score_config(config: ScoreConfig, prompts: PromptsConfig) -> None:
    """Refuse settings scoring cannot honour, naming the key, before any work."""
    check_section(config, "score")
    cold = cold_objective(config, prompts)
    if cold.query_aware:
        raise ConfigError(f"score.cold_objective {cold.name!r} is query-aware; pick one that needs no query")
    if config.requests_table:
        requests_ref(config.requests_table)


def cold_objective(config: ScoreConfig, prompts: PromptsConfig) -> Objective:
    """The enabled retrieval objective whose prompts place new items and render new-user prompts."""
    by_name = {o.name: o for o in objectives_from_config(prompts) if o.kind != CTR}
    if config.cold_objective not in by_name:
        raise ConfigError(f"score.cold_objective {config.cold_objective!r} is not an enabled retrieval objective; "
                          f"enabled: {sorted(by_name)}")
    return by_name[config.cold_objective]


def ctr_objective(prompts: PromptsConfig) -> tuple[Objective, bool]:
    """The `ctr` objective (its instruction renders CTR prompts) and whether training used CTR examples."""
    for o in objectives_from_config(prompts):
        if o.kind == CTR:
            return o, True
    return next(o for o in DEFAULT_OBJECTIVES if o.kind == CTR), False


def fit_catalog(catalog: ItemCatalog, model: ModelRef) -> ItemCatalog:
    """The catalogue shaped for the model: a text dimension that differs is an error; images absent
    from the catalogue become zeros (the image path contributes nothing, as for any item without one)."""
    if catalog.text.shape[1] != model.text_dim:
        raise ValueError(f"item_features text embeddings have {catalog.text.shape[1]} dims but model "
                         f"{model.version} was trained on {model.text_dim}: the text encoder changed; retrain")
    image, has_image = catalog.image, catalog.has_image
    if image.shape[1] != model.image_dim:
        if has_image.any() and model.image_dim:
            raise ValueError(f"item_features image embeddings have {image.shape[1]} dims but model "
                             f"{model.version} was trained on {model.image_dim}")
        image = torch.zeros(len(catalog), model.image_dim)
        has_image = torch.zeros(len(catalog), dtype=torch.bool)
    return ItemCatalog(catalog.text, image, has_image, catalog.item_ids)


def write_catalog_snapshot(catalog: ItemCatalog, directory: str) -> str:
    """Write `catalog` into `directory` (atomically: a temporary folder, then a rename); returns its path."""
    directory = os.path.abspath(directory)
    tmp = directory + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    catalog.save(tmp)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    os.rename(tmp, directory)
    return directory


def new_item_indices(features: pd.DataFrame, ds: str, n_items_trained: int) -> list[int]:
    """Items first seen on `ds` that the model never trained an ID for (index >= n_items_trained)."""
    new = features[(features["first_seen_ds"] == ds) & (features["item_index"] >= n_items_trained)]
    return sorted(int(i) for i in new["item_index"])


def infer_prompts(lake: Lake, ds: str) -> DataFrame:
    """Today's inference prompts (split infer, every retrieval objective): one per user and objective."""
    if not lake.exists(PROMPTS.name):
        return lake.read_or_empty(PROMPTS.name)
    return lake.read(PROMPTS.name, ds=ds).where((F.col("split") == INFER) & (F.col("objective") != CTR))


def purchases(lake: Lake, ds: str) -> DataFrame:
    """Per user, the items bought up to `ds` (exclude_item_ids)."""
    return (
        lake.read_or_empty(EVENTS.name)
        .where((F.col("ds") <= ds) & (F.col("event_type") == "purchase"))
        .groupBy("user_id")
        .agg(F.array_sort(F.collect_set("item_id")).alias("exclude_item_ids"))
    )


def new_users(lake: Lake, ds: str, context: DataFrame) -> DataFrame:
    """user_id of today's new users: first event on `ds`, no history in today's context, or
    created on `ds` (in `users`) without any event yet."""
    first = (lake.read_or_empty(EVENTS.name).where(F.col("ds") <= ds).groupBy("user_id")
             .agg(F.min("ds").alias("_first")).where(F.col("_first") == ds).select("user_id"))
    empty = context.where(F.size("history_item_ids") == 0).select("user_id")
    ids = first.unionByName(empty)
    if lake.exists(USERS.name):
        signed_up = lake.read(USERS.name).where(F.to_date("created_ts") == F.to_date(F.lit(ds))).select("user_id")
        ids = ids.unionByName(signed_up.join(context.select("user_id"), "user_id", "left_anti"))
    return ids.distinct()


def current_features(lake: Lake) -> tuple[pd.DataFrame, int]:
    """The current `item_features` as pandas (what the catalogue is built from) and its table version."""
    version = lake.version(ITEM_FEATURES.name)
    frame = lake.read(ITEM_FEATURES.name, version=version).select(
        "item_id", "item_index", "text_embedding", "image_embedding", "first_seen_ds", "ds").toPandas()
    return frame, version


# -- the stage --------------------------------------------------------------------------------


def _no_strings():
    """An empty array<string> column (built when used: a Column needs a live session)."""
    return F.array().cast("array<string>")


def _empty(lake: Lake, table: str) -> DataFrame:
    return lake.spark.createDataFrame([], lake.contract(table).spark)


def write_empty_day(lake: Lake, ds: str, model: ModelRef, reason: str) -> ScoreReport:
    log.warning("score ds=%s: %s; writing empty candidates, ctr_scores and cold_start_fills partitions", ds, reason)
    for table in (CANDIDATES.name, CTR_SCORES.name, COLD_START_FILLS.name):
        lake.overwrite_partition(table, _empty(lake, table), ds)
    return ScoreReport(ds, model.version, empty_day=True)


def run_scoring(lake: Lake, ds: str, config: RecllmConfig, functions: ScoringFunctions,
                model_version: str | None = None) -> ScoreReport:
    """Score day `ds` with a model version (default `score.model_version`) and write the three tables."""
    sc, pc = config.score, config.prompts
    check_score_config(sc, pc)
    model = resolve_model(lake, model_version or sc.model_version, config)
    log.info("score ds=%s with model %s (%s)", ds, model.version, model.path)

    infer = infer_prompts(lake, ds).select("objective", "user_id", "prompt_text", "history_item_ids")
    n_infer = infer.count()
    if n_infer == 0:
        return write_empty_day(lake, ds, model, f"prompts has no inference rows for ds={ds}")

    features, features_version = current_features(lake)
    latest = features["ds"].max()
    if latest < ds:
        raise ValueError(f"item_features was last built for ds={latest}, before {ds}: run the features job for {ds}")
    features = features[features["first_seen_ds"] <= ds]
    catalog = fit_catalog(ItemCatalog.from_features(features), model)
    new_items = new_item_indices(features, ds, model.n_items_trained)
    run_dir = os.path.abspath(os.path.join(sc.work_root, ds, f"{model.version}-{uuid.uuid4().hex[:12]}"))
    spec = WorkerSpec(
        model_dir=model.path,
        catalog_dir=write_catalog_snapshot(catalog, os.path.join(run_dir, "catalog")),
        device=sc.device,
        torch_threads=sc.torch_threads,
        batch_size=sc.batch_size,
        chunk_size=sc.chunk_size,
        ann_nprobe=sc.ann_nprobe if sc.uses_index(len(catalog)) else 0,
    )
    log.info("score ds=%s: %d inference prompts, catalogue of %d items (item_features v%d, %d new today), "
             "top-K %s, snapshot %s", ds, n_infer, len(catalog), features_version, len(new_items),
             f"through the item index ({spec.ann_nprobe} lists per query)" if spec.ann_nprobe else "exact",
             spec.catalog_dir)
    cached: list[DataFrame] = []

    def persisted(df: DataFrame) -> DataFrame:
        """`df` kept in memory (spilling to disk) until the run ends: each is read by a count and a write."""
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(df)
        return df

    try:
        tables = build_scored_tables(lake, ds, config, functions, model, spec, infer, n_infer, new_items, persisted)
        return write_scored_tables(lake, ds, model, tables, len(new_items))
    finally:
        for df in cached:
            df.unpersist()
        shutil.rmtree(run_dir, ignore_errors=True)


@dataclass
class ScoredTables:
    """The day's three outputs as DataFrames, each already with the tables' columns."""

    candidates: DataFrame
    ctr_scores: DataFrame
    cold_start_fills: DataFrame


def _tasks(df: DataFrame, n_rows: int, batch_size: int) -> int:
    """Enough tasks to use every core, never fewer than one batch each."""
    slots = max(1, df.sparkSession.sparkContext.defaultParallelism)
    return max(1, min(slots, math.ceil(n_rows / batch_size)))


def build_scored_tables(lake: Lake, ds: str, config: RecllmConfig, functions: ScoringFunctions, model: ModelRef,
                        spec: WorkerSpec, infer: DataFrame, n_infer: int, new_items: list[int],
                        persisted: Callable[[DataFrame], DataFrame]) -> ScoredTables:
    """The plans of candidates, ctr_scores and cold_start_fills for `ds` (nothing is written).

    `persisted` marks the DataFrames that several outputs or counts read, so the model runs
    once per row.
    """
    sc, pc = config.score, config.prompts
    cold = cold_objective(sc, pc)
    version = F.lit(model.version)
    bought = purchases(lake, ds) if sc.exclude_purchased else None
    # every stage's input is about the size of today's prompts (users x objectives at most)
    tasks = _tasks(infer, n_infer, sc.batch_size)

    def excluding(df: DataFrame) -> DataFrame:
        """`df` with exclude_item_ids: the user's purchases, plus the row's history (`score.exclude_history`)."""
        if bought is None:
            df = df.withColumn("exclude_item_ids", _no_strings())
        else:
            df = df.join(bought, "user_id", "left").withColumn(
                "exclude_item_ids", F.coalesce(F.col("exclude_item_ids"), _no_strings()))
        if sc.exclude_history:
            df = df.withColumn("exclude_item_ids", F.array_sort(F.array_union(
                "exclude_item_ids", F.coalesce(F.col("history_item_ids"), _no_strings()))))
        return df

    # 1. candidates (and, from the cold objective's prompts, each new item's best users per task)
    scored = persisted(
        excluding(infer).repartition(tasks).mapInPandas(
            functions.candidates(spec, sc.top_k, new_items, sc.cold_item_users, cold.name), CANDIDATE_SCHEMA)
    )
    candidates = scored.where(F.col("kind") == CANDIDATE).select(
        F.lit(ds).alias("ds"), "objective", "user_id", "rank", "item_id", "score", version.alias("model_version"))
    per_item = Window.partitionBy("item_id").orderBy(F.desc("score"), "user_id")
    per_user = Window.partitionBy("user_id").orderBy(F.desc("score"), "item_id")
    item_fills = (
        scored.where(F.col("kind") == NEW_ITEM)
        .withColumn("_best", F.row_number().over(per_item)).where(F.col("_best") <= sc.cold_item_users)
        .select(F.lit(ds).alias("ds"), "user_id", F.row_number().over(per_user).cast("int").alias("rank"),
                "item_id", "score", F.lit(NEW_ITEM).alias("reason"), version.alias("model_version"))
    )

    # 2. today's users as the prompt job sees them; new users' profile-only prompts
    context = persisted(user_context(lake, ds, pc))
    fresh = persisted(
        render_prompts(new_users(lake, ds, context).join(context.select("user_id", "scenario"), "user_id", "left"),
                       lake, pc, cold, F.col("scenario"), F.lit(EMPTY_HISTORY))
        .select(F.lit(cold.name).alias("objective"), "user_id", "prompt_text", _no_strings().alias("history_item_ids"))
    )
    user_fills = persisted(
        excluding(fresh).repartition(tasks)
        .mapInPandas(functions.candidates(spec, sc.new_user_k), CANDIDATE_SCHEMA)
    ).select(F.lit(ds).alias("ds"), "user_id", "rank", "item_id", "score", F.lit(NEW_USER).alias("reason"),
             version.alias("model_version"))

    # 3. CTR for the top candidates of every objective and any requested pairs
    ctr_obj, trained_ctr = ctr_objective(pc)
    if not trained_ctr:
        log.warning("score ds=%s: prompts.ctr is false, so the CTR head saw no impressions in training; "
                    "p_click is uncalibrated", ds)
    own_scenario = lake.spark.createDataFrame(
        [(o.name, o.scenario) for o in objectives_from_config(pc) if o.kind != CTR],
        "objective string, _own_scenario string")
    pairs = (
        candidates.where(F.col("rank") <= sc.ctr_top_n)
        .join(F.broadcast(own_scenario), "objective", "left")
        .join(context.select("user_id", F.col("scenario").alias("_latest")), "user_id", "left")
        .select("user_id", "item_id", F.coalesce("_own_scenario", "_latest", F.lit(UNKNOWN)).alias("scenario"))
    )
    if sc.requests_table:
        requested = read_requests(lake.spark, sc.requests_table, ds)
        pairs = pairs.unionByName(requested)
        catalogue_ids = lake.read(ITEM_FEATURES.name).where(F.col("first_seen_ds") <= ds).select("item_id")
        outside = requested.join(catalogue_ids, "item_id", "left_anti").count()
        if outside:
            log.warning("score ds=%s: %d requested pair(s) name items outside the catalogue; not scored", ds, outside)
    ctr_rows = (
        pairs.distinct().groupBy("user_id", "scenario").agg(F.array_sort(F.collect_set("item_id")).alias("item_ids"))
        .join(context.select("user_id", "history_text", "history_item_ids"), "user_id", "left")
        .withColumn("history_item_ids", F.coalesce("history_item_ids", _no_strings()))
    )
    ctr_rows = render_prompts(ctr_rows, lake, pc, ctr_obj, F.col("scenario"),
                              F.coalesce(F.col("history_text"), F.lit(EMPTY_HISTORY)))
    ctr_prompts = ctr_rows.select("user_id", "scenario", "prompt_text", "history_item_ids", "item_ids")
    ctr = persisted(
        ctr_prompts.repartition(tasks).mapInPandas(functions.ctr(spec), CTR_SCHEMA)
    ).select(F.lit(ds).alias("ds"), "user_id", "item_id", "scenario", "p_click", version.alias("model_version"))

    return ScoredTables(candidates, ctr, item_fills.unionByName(user_fills))


def write_scored_tables(lake: Lake, ds: str, model: ModelRef, tables: ScoredTables, new_items: int) -> ScoreReport:
    """Count every output first (a scoring failure leaves the tables as they were), then replace
    each table's `ds` partition in one transaction."""
    candidates, ctr, fills = tables.candidates, tables.ctr_scores, tables.cold_start_fills
    per_objective = {r["objective"]: r["count"] for r in candidates.groupBy("objective").count().collect()}
    per_reason = {r["reason"]: (r["rows"], r["users"]) for r in fills.groupBy("reason").agg(
        F.count(F.lit(1)).alias("rows"), F.countDistinct("user_id").alias("users")).collect()}
    report = ScoreReport(
        ds, model.version,
        candidates=sum(per_objective.values()),
        ctr_scores=ctr.count(),
        cold_start_fills=sum(rows for rows, _ in per_reason.values()),
        new_items=new_items,
        new_users=per_reason.get(NEW_USER, (0, 0))[1],
        per_objective=per_objective,
    )
    lake.overwrite_partition(CANDIDATES.name, candidates, ds)
    lake.overwrite_partition(CTR_SCORES.name, ctr, ds)
    lake.overwrite_partition(COLD_START_FILLS.name, fills, ds)
    for objective, n in sorted(per_objective.items()):
        log.info("score ds=%s: candidates objective=%s rows=%d", ds, objective, n)
    log.info("score ds=%s model=%s: candidates=%d ctr_scores=%d cold_start_fills=%d (new items %d, new users %d)",
             ds, model.version, report.candidates, report.ctr_scores, report.cold_start_fills, report.new_items,
             report.new_users)
    return report
