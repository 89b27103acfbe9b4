"""The nightly run: every stage for one date, in order, and the policy of when to train.

    steps = run_nightly(lake, "2026-01-04", config, functions)

ingest, features, prompts, train (`train_if_due`: when `training_decision` says so, else the
latest model is reused; warm-started from the newest model when `train.warm_start` and
`choose_start` allow, cold every `nightly.cold_retrain_every_days`), score and evaluate,
each the same library call its own job makes, so rerunning a date replaces that date's outputs.
With `score.model_version: champion`, evaluate runs before score and on the newest model, so
that a model trained tonight which beats popularity is promoted and scores tonight.
`functions` carries the executor code the stages run (the jobs build it from `udfs`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import functions as F

from recllm.config import RecllmConfig
from recllm.data.frames import LandedDay
from recllm.data.landing import land_day
from recllm.evaluation.evaluate import run_evaluation
from recllm.lake import Lake
from recllm.pipeline.features import run_features
from recllm.pipeline.ingest import run_ingest
from recllm.pipeline.prompts import TRAIN, VALID, run_prompts
from recllm.registry import (CHAMPION, ModelNotFoundError, latest_model_row, resolve_model, resolve_model_if_any,
                             version_to_evaluate)
from recllm.scoring.stage import ScoringFunctions, run_scoring
from recllm.training.driver import Start, choose_start, run_training
from schemas import PROMPTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageFunctions:
    """The executor functions the stages take: the features' text embedding UDF and scoring's."""

    embed: Callable  # Column of item text -> Column of float arrays (a predict_batch_udf)
    scoring: ScoringFunctions


def training_decision(lake: Lake, ds: str, config: RecllmConfig) -> tuple[bool, str]:
    """Whether the nightly run should train for `ds`, and why (or why not)."""
    counts = {r["split"]: r["n"] for r in lake.read(PROMPTS.name, ds=ds).where(F.col("objective") != "ctr")
              .groupBy("split").agg(F.count("*").alias("n")).collect()}
    if not counts.get(TRAIN) or not counts.get(VALID):
        return False, f"not enough history yet (train={counts.get(TRAIN, 0)}, valid={counts.get(VALID, 0)} examples)"
    latest = latest_model_row(lake)
    if latest is None:
        return True, "no model yet"
    age = (dt.date.fromisoformat(ds) - dt.date.fromisoformat(latest.ds)).days
    every = config.nightly.retrain_every_days
    if age >= every or age < 0:
        return True, f"latest model {latest.model_version} is {age} day(s) old (retrain every {every})"
    return False, f"reusing {latest.model_version} ({age} day(s) old, retrain every {every})"


def start_decision(lake: Lake, ds: str, config: RecllmConfig) -> Start:
    """How tonight's training starts: warm from the newest earlier model (`choose_start`: unless the
    cold cadence, a changed model shape or no new examples say cold) when `train.warm_start`, else cold."""
    if not config.train.warm_start:
        return Start("train.warm_start is off")
    return choose_start(lake, ds, config)


@dataclass(frozen=True)
class TrainOutcome:
    """What `train_if_due` did: trained (with `run_training`'s summary and how it started) or not, and why."""

    trained: bool
    reason: str  # `training_decision`'s: why it trained, or why it did not
    result: dict | None = None  # run_training's summary when it trained
    start: Start | None = None  # the warm or cold start it trained from

    def summary(self, eval_k: int = 10) -> str:
        """One line for logs: the model trained and how it validated, or why nothing was trained."""
        if not self.trained:
            return f"skipped: {self.reason}"
        r = self.result
        how = f"warm from {self.start.parent_version}" if self.start.warm else f"cold ({self.start.reason})"
        return (f"model {r['model_version']}: best valid recall@{eval_k} {r['best_valid_recall']:.4f}, "
                f"{r['epochs_run']} epochs, {how}")


def train_if_due(lake: Lake, ds: str, config: RecllmConfig, num_processes: int | None = None) -> TrainOutcome:
    """Train for `ds` when `training_decision` says so, warm or cold as `start_decision` says, else nothing.

    The one train-or-reuse policy of every scheduler: `jobs.nightly`, and `jobs.train --when-due`
    under Airflow or Databricks; a night that does not train writes nothing.
    """
    due, why = training_decision(lake, ds, config)
    if not due:
        return TrainOutcome(False, why)
    start = start_decision(lake, ds, config)
    log.info("train ds=%s: training (%s); %s", ds, why, start.reason if start.warm else f"cold start: {start.reason}")
    return TrainOutcome(True, why, run_training(lake, ds, config, num_processes=num_processes, start=start), start)


def run_nightly(lake: Lake, ds: str, config: RecllmConfig, functions: StageFunctions) -> list[tuple[str, float, str]]:
    """Run every stage for `ds`; returns (stage, seconds, summary) per stage."""
    steps: list[tuple[str, float, str]] = []

    def step(name: str, fn: Callable[[], str]) -> None:
        start = time.time()
        summary = fn()
        steps.append((name, time.time() - start, summary))
        log.info("nightly ds=%s %s: %s (%.1fs)", ds, name, summary, time.time() - start)

    def skip(name: str, why: str) -> None:
        steps.append((name, 0.0, f"skipped: {why}"))
        log.info("nightly ds=%s %s: skipped: %s", ds, name, why)

    step("ingest", lambda: "; ".join(run_ingest(lake, ds, config.ingest).lines()))
    step("features", lambda: str(run_features(lake, ds, config.features, functions.embed)))
    step("prompts", lambda: f"{sum(run_prompts(lake, ds, config.prompts).values())} rows")
    step("train", lambda: train_if_due(lake, ds, config).summary(config.train.eval_k))
    if config.score.model_version == CHAMPION:
        # evaluate the newest model first: it may take the alias champion that scoring then uses
        newest = resolve_model_if_any(lake, version_to_evaluate(CHAMPION), config)
        if newest is None:
            skip("evaluate", "no model is registered in models yet")
        else:
            step("evaluate", lambda: f"{len(run_evaluation(lake, ds, config, newest))} metric rows")
    try:
        model = resolve_model(lake, config.score.model_version, config)
    except ModelNotFoundError as e:
        skip("score", str(e))
        return steps
    step("score", lambda: "candidates={0.candidates} ctr_scores={0.ctr_scores} cold_start_fills={0.cold_start_fills}"
         .format(run_scoring(lake, ds, config, functions.scoring, model_version=model.version)))
    if config.score.model_version != CHAMPION:
        step("evaluate", lambda: f"{len(run_evaluation(lake, ds, config, model))} metric rows")
    return steps


def land_and_prepare(lake: Lake, days: list[LandedDay], config: RecllmConfig, embed: Callable) -> str:
    """Land and ingest every day, then build features and prompts as of the last; returns its ds.

    The set-up of the benchmark and of model tests: a lake ready for training on `days`.
    """
    for day in days:
        land_day(lake, day)
        run_ingest(lake, day.ds, config.ingest)
    ds = days[-1].ds
    run_features(lake, ds, config.features, embed)
    run_prompts(lake, ds, config.prompts)
    return ds
