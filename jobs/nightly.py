"""The nightly pipeline: ingest, features, prompts, train (or reuse), score, evaluate for one date.

    python -m jobs.nightly --ds 2026-01-04 --config jobs/conf/default.yaml

Each step is the same library call its own job makes, so rerunning a date replaces that
date's outputs. Training runs when `nightly.retrain_every_days` have passed since the
latest model's date (or there is none) and the prompts hold training examples; scoring
and evaluation run once a model exists. Ends with a summary of counts and timings.
"""

from __future__ import annotations

import argparse
import logging
import time

from jobs.common import open_lake, parser, run
from recllm.evaluation import evaluate_day, write_metrics
from recllm.features import run_features
from recllm.ingest import run_ingest
from recllm.prompts import run_prompts
from recllm.scoring import ModelNotFoundError, resolve_model
from recllm.training import run_training, training_decision
from udfs.scoring import run_scoring
from udfs.text import text_embedding_udf

log = logging.getLogger("recllm.jobs.nightly")


def run_nightly(lake, ds: str, config) -> list[tuple[str, float, str]]:
    """Run every step for `ds`; returns (step, seconds, summary) per step."""
    steps: list[tuple[str, float, str]] = []

    def step(name: str, fn):
        start = time.time()
        summary = fn()
        steps.append((name, time.time() - start, summary))
        log.info("nightly ds=%s %s: %s (%.1fs)", ds, name, summary, time.time() - start)

    step("ingest", lambda: "; ".join(run_ingest(lake, ds, config.ingest).lines()))
    embed = text_embedding_udf(config.features.text_encoder, config.features.batch_size)
    step("features", lambda: str(run_features(lake, ds, config.features, embed)))
    step("prompts", lambda: f"{sum(run_prompts(lake, ds, config.prompts).values())} rows")
    train, why = training_decision(lake, ds, config)
    if train:
        step("train", lambda: "model {model_version}: best valid recall@10 {best_valid_recall:.4f}, {epochs_run} epochs"
             .format(**run_training(lake, ds, config)))
    else:
        steps.append(("train", 0.0, f"skipped: {why}"))
        log.info("nightly ds=%s train: skipped: %s", ds, why)
    try:
        model = resolve_model(lake, config.score.model_version)
    except ModelNotFoundError as e:
        steps.append(("score", 0.0, f"skipped: {e}"))
        return steps
    step("score", lambda: "candidates={0.candidates} ctr_scores={0.ctr_scores} cold_start_fills={0.cold_start_fills}"
         .format(run_scoring(lake, ds, config, model_version=model.version)))
    step("evaluate", lambda: f"{write_metrics(lake, evaluate_day(lake, ds, config, model.path, model.version), ds)} metric rows")
    return steps


def main(args: argparse.Namespace) -> None:
    config, lake = open_lake(args)
    steps = run_nightly(lake, args.ds, config)
    print(f"\nnightly ds={args.ds}")
    for name, seconds, summary in steps:
        print(f"  {name:<9} {seconds:7.1f}s  {summary}")


def cli(argv: list[str] | None = None) -> None:
    run("nightly", main, parser(__doc__.splitlines()[0]).parse_args(argv))


if __name__ == "__main__":
    cli()
