"""Spark bindings of nightly scoring: `mapInPandas` functions and the score job's orchestration.

    report = run_scoring(lake, "2026-01-03", config)                 # model: score.model_version
    report = run_scoring(lake, "2026-01-03", config, "urm-2026-01-02-1a2b3c4d")

Each mapInPandas task asks `recllm.scoring.get_scorer` for its scorer: the cache lives in
that importable module, so a Python worker loads a model version and computes the
catalogue's item output vectors once for all the tasks it runs (Spark reuses workers).
Before loading, the task sets torch's CPU threads (`score.torch_threads`, default 1: Spark
already runs one task per core) and picks its device (`score.device`: auto = the GPU Spark
assigned to the task, or the first one, when present; else CPU).

What the job writes for `ds`, each row with its `model_version`:

* `candidates`: the top `score.top_k` items of the WHOLE current catalogue for every
  inference prompt of `ds` (one per user and retrieval objective), items the user bought up
  to `ds` excluded (`score.exclude_purchased`). Items that arrived after training are in the
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
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import Window

from recllm.config import RecllmConfig
from recllm.lake import Lake, check_ds
from recllm.objectives import CTR, objectives_from_config
from recllm.scoring import (
    CANDIDATE,
    CANDIDATE_SCHEMA,
    CTR_SCHEMA,
    NEW_ITEM,
    NEW_USER,
    ModelRef,
    check_score_config,
    cold_objective,
    ctr_objective,
    current_features,
    fit_catalog,
    infer_prompts,
    new_item_indices,
    new_users,
    purchases,
    read_requests,
    render_prompts,
    resolve_model,
    user_context,
    write_catalog_snapshot,
)
from recllm.training import catalog_from_features
from schemas import CANDIDATES, COLD_START_FILLS, CTR_SCORES, ITEM_FEATURES

log = logging.getLogger(__name__)



def _no_strings():
    """An empty array<string> column (built when used: a Column needs a live session)."""
    return F.array().cast("array<string>")


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


# -- what runs on the workers ---------------------------------------------------------------


def _task_device(setting: str) -> str:
    """The task's device: the GPU Spark assigned to it when there is one, else per `score.device`."""
    from recllm.scoring import resolve_device

    device = resolve_device(setting)
    if device == "cuda":
        from pyspark import TaskContext

        ctx = TaskContext.get()
        gpus = ctx.resources().get("gpu") if ctx is not None else None
        if gpus is not None and gpus.addresses:
            device = f"cuda:{gpus.addresses[0]}"
    return device


def _worker_scorer(spec: dict):
    from recllm.scoring import get_scorer, set_torch_threads

    set_torch_threads(spec["torch_threads"])
    return get_scorer(spec["model_dir"], spec["catalog_dir"], _task_device(spec["device"]))


def candidates_fn(spec: dict, k: int, new_items: list[int] | None = None, new_item_users: int = 0,
                  placement_objective: str | None = None):
    """mapInPandas function: prompt rows -> `recllm.scoring.score_candidates` rows (CANDIDATE_SCHEMA)."""

    from recllm.scoring import score_candidates

    return _per_batch(spec, lambda pdf, scorer: score_candidates(
        pdf, scorer, k, spec["batch_size"], spec["chunk_size"], new_items, new_item_users, placement_objective))


def ctr_fn(spec: dict):
    """mapInPandas function: (user, scenario, prompt, items) rows -> `recllm.scoring.score_ctr` rows (CTR_SCHEMA)."""

    from recllm.scoring import score_ctr

    return _per_batch(spec, lambda pdf, scorer: score_ctr(pdf, scorer, spec["batch_size"]))


def _per_batch(spec: dict, score_batch):
    """A mapInPandas function applying `score_batch` to each non-empty batch with the worker's scorer."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = None
        for pdf in batches:
            if pdf.empty:
                continue
            scorer = scorer or _worker_scorer(spec)
            yield score_batch(pdf, scorer)

    return score


def _tasks(df: DataFrame, n_rows: int, batch_size: int) -> int:
    """Enough tasks to use every core, never fewer than one batch each."""
    slots = max(1, df.sparkSession.sparkContext.defaultParallelism)
    return max(1, min(slots, math.ceil(n_rows / batch_size)))


# -- the job ----------------------------------------------------------------------------------


def _empty(lake: Lake, table: str) -> DataFrame:
    return lake.spark.createDataFrame([], lake.contract(table).spark)


def write_empty_day(lake: Lake, ds: str, model: ModelRef, reason: str) -> ScoreReport:
    log.warning("score ds=%s: %s; writing empty candidates, ctr_scores and cold_start_fills partitions", ds, reason)
    for table in (CANDIDATES.name, CTR_SCORES.name, COLD_START_FILLS.name):
        lake.overwrite_partition(table, _empty(lake, table), ds)
    return ScoreReport(ds, model.version, empty_day=True)


def run_scoring(lake: Lake, ds: str, config: RecllmConfig, model_version: str | None = None) -> ScoreReport:
    """Score day `ds` with a model version (default `score.model_version`) and write the three tables."""
    check_ds(ds)
    sc, pc = config.score, config.prompts
    check_score_config(sc, pc)
    model = resolve_model(lake, model_version or sc.model_version)
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
    catalog = fit_catalog(catalog_from_features(features), model)
    new_items = new_item_indices(features, ds, model.n_items_trained)
    run_dir = os.path.abspath(os.path.join(sc.work_root, ds, f"{model.version}-{uuid.uuid4().hex[:12]}"))
    spec = {
        "model_dir": model.path,
        "catalog_dir": write_catalog_snapshot(catalog, os.path.join(run_dir, "catalog")),
        "device": sc.device,
        "torch_threads": sc.torch_threads,
        "batch_size": sc.batch_size,
        "chunk_size": sc.chunk_size,
    }
    log.info("score ds=%s: %d inference prompts, catalogue of %d items (item_features v%d, %d new today), "
             "snapshot %s", ds, n_infer, len(catalog), features_version, len(new_items), spec["catalog_dir"])
    cached: list[DataFrame] = []
    try:
        return _score_and_write(lake, ds, config, model, spec, infer, n_infer, new_items, cached)
    finally:
        for df in cached:
            df.unpersist()
        shutil.rmtree(run_dir, ignore_errors=True)


def _score_and_write(lake: Lake, ds: str, config: RecllmConfig, model: ModelRef, spec: dict, infer: DataFrame,
                     n_infer: int, new_items: list[int], cached: list[DataFrame]) -> ScoreReport:
    sc, pc = config.score, config.prompts
    cold = cold_objective(sc, pc)
    version = F.lit(model.version)
    bought = purchases(lake, ds) if sc.exclude_purchased else None
    # every stage's input is about the size of today's prompts (users x objectives at most)
    tasks = _tasks(infer, n_infer, sc.batch_size)

    def excluding(df: DataFrame) -> DataFrame:
        if bought is None:
            return df.withColumn("exclude_item_ids", _no_strings())
        return df.join(bought, "user_id", "left").withColumn(
            "exclude_item_ids", F.coalesce(F.col("exclude_item_ids"), _no_strings()))

    def keep(df: DataFrame) -> DataFrame:
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(df)
        return df

    # 1. candidates (and, from the cold objective's prompts, each new item's best users per task)
    scored = keep(
        excluding(infer).repartition(tasks).mapInPandas(
            candidates_fn(spec, sc.top_k, new_items, sc.cold_item_users, cold.name), CANDIDATE_SCHEMA)
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
    from recllm.prompts import EMPTY_HISTORY, UNKNOWN

    context = keep(user_context(lake, ds, pc))
    fresh = keep(
        render_prompts(new_users(lake, ds, context).join(context.select("user_id", "scenario"), "user_id", "left"),
                       lake, pc, cold, F.col("scenario"), F.lit(EMPTY_HISTORY))
        .select(F.lit(cold.name).alias("objective"), "user_id", "prompt_text", _no_strings().alias("history_item_ids"))
    )
    user_fills = keep(
        excluding(fresh).repartition(tasks)
        .mapInPandas(candidates_fn(spec, sc.new_user_k), CANDIDATE_SCHEMA)
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
    ctr = keep(
        ctr_prompts.repartition(tasks).mapInPandas(ctr_fn(spec), CTR_SCHEMA)
    ).select(F.lit(ds).alias("ds"), "user_id", "item_id", "scenario", "p_click", version.alias("model_version"))

    # 4. everything computed before the first write: a scoring failure leaves the tables as they were
    fills = item_fills.unionByName(user_fills)
    per_objective = {r["objective"]: r["count"] for r in candidates.groupBy("objective").count().collect()}
    per_reason = {r["reason"]: (r["rows"], r["users"]) for r in fills.groupBy("reason").agg(
        F.count(F.lit(1)).alias("rows"), F.countDistinct("user_id").alias("users")).collect()}
    report = ScoreReport(
        ds, model.version,
        candidates=sum(per_objective.values()),
        ctr_scores=ctr.count(),
        cold_start_fills=sum(rows for rows, _ in per_reason.values()),
        new_items=len(new_items),
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
