"""Real-data benchmark: the URM default against every baseline on one dataset, one run.

Loads a MovieLens, Amazon or RecBole dataset, lands and ingests it, builds features and
leave-last-out prompts (a dataset that ships its own split is rebuilt so that this split
reproduces it), trains the URM default and the ID-only expert, and evaluates them with
popularity and ALS on the objective with the most test examples (`like` for rating-only
data, `click` for clicks). CTR metrics (URM's CTR head against the GBT expert) come from
impressions, or, for rating-only data, from likes against dislikes (ratings at or above
`prompts.rating_ctr_threshold`, default 4). Results are rows `{"model", "metric", "k", "value"}`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
from pyspark.sql import functions as F

from recllm.evaluation import EXPERT_NAME, evaluate, train_expert
from recllm.lake import Lake
from recllm.landing import prepare_history
from recllm.training import run_training

log = logging.getLogger(__name__)

FORMATS = ("movielens", "amazon", "recbole")
URM_NAME = "urm"
DEFAULT_RATING_THRESHOLD = 4.0
"""Likes (rating >= this) against dislikes are the CTR labels of rating-only data, unless
`prompts.rating_ctr_threshold` says otherwise."""
TABLE_METRICS = (("recall", 10), ("recall", 50), ("ndcg", 10), ("ndcg", 50), ("cold_recall", 10), ("cold_recall", 50),
                 ("auc", 0), ("gauc", 0), ("logloss", 0), ("train_s", 0), ("score_s", 0))


def load_dataset(path: str, fmt: str):
    """The dataset as one landing (`SyntheticDay`) and whether it ships its own split."""
    if fmt == "movielens":
        from recllm.movielens import load_movielens

        return load_movielens(path), False
    if fmt == "amazon":
        from recllm.amazon import load_amazon

        root = Path(path)
        reviews = sorted(p for p in root.glob("*") if "meta" not in p.name and p.suffix in (".json", ".jsonl", ".gz"))
        meta = sorted(p for p in root.glob("*meta*") if p.suffix in (".json", ".jsonl", ".gz"))
        if not reviews:
            raise ValueError(f"{path}: no reviews JSON lines file (*.json, *.jsonl, *.gz without 'meta' in its name)")
        return load_amazon(reviews[0], meta[0] if meta else None), False
    if fmt == "recbole":
        from recllm.recbole import load_recbole

        data = load_recbole(path)
        return data.day, data.presplit
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def primary_objective(lake: Lake, ds: str) -> str:
    """The retrieval objective with the most test examples."""
    counts = (lake.read("prompts", ds=ds).where("split = 'test' AND label IS NULL").groupBy("objective").count()
              .orderBy(F.desc("count"), "objective").first())
    if counts is None:
        raise ValueError(f"prompts for ds={ds} have no test examples: the dataset is too small to split")
    return counts.objective


def run_benchmark(lake: Lake, path: str, fmt: str, config, embed) -> list[dict]:
    """Train and evaluate everything on one dataset; returns the result rows."""
    day, presplit = load_dataset(path, fmt)
    log.info("benchmark: %s (%s): %d events, %d items, %d users%s", path, fmt, len(day.events_raw),
             len(day.items_raw), len(day.users_raw), "; ships its own split" if presplit else "")
    threshold = config.prompts.rating_ctr_threshold
    config = replace(config, prompts=replace(config.prompts, split="leave_last_out", rating_ctr_threshold=(
        DEFAULT_RATING_THRESHOLD if threshold is None else threshold)))
    ds = prepare_history(lake, [day], config, embed)
    objective = primary_objective(lake, ds)
    config = replace(config, evaluate=replace(config.evaluate, expert_objective=objective))
    log.info("benchmark: primary objective %s", objective)

    start = time.perf_counter()
    urm = run_training(lake, ds, config)
    urm_train_s = time.perf_counter() - start
    start = time.perf_counter()
    expert = train_expert(lake, ds, config)
    expert_train_s = time.perf_counter() - start
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    frame = evaluate(lake, ds, urm["path"], urm["model_version"], config.score.batch_size, expert["path"], seconds)
    evaluate_s = time.perf_counter() - start

    frame = frame[frame["task"].isin([objective, "ctr"])].copy()
    frame["model"] = frame["model"].replace({urm["model_version"]: URM_NAME})
    rows = [{"model": r.model, "metric": r.metric, "k": int(r.k), "value": float(r.value)} for r in frame.itertuples()]
    rows += [{"model": URM_NAME, "metric": "train_s", "k": 0, "value": urm_train_s},
             {"model": EXPERT_NAME, "metric": "train_s", "k": 0, "value": expert_train_s},
             {"model": "all", "metric": "evaluate_s", "k": 0, "value": evaluate_s}]
    rows += [{"model": URM_NAME if model == urm["model_version"] else model, "metric": "score_s", "k": 0, "value": s}
             for model, s in seconds.items()]
    return rows


def results_table(rows: list[dict]) -> str:
    """One Markdown table: a row per model, a column per metric present."""
    frame = pd.DataFrame(rows)
    frame = frame[frame["model"] != "all"]
    columns = [(m, k) for m, k in TABLE_METRICS if ((frame["metric"] == m) & (frame["k"] == k)).any()]
    header = ["model"] + [f"{m}@{k}" if k else m for m, k in columns]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(columns) + "|"]
    for model in [URM_NAME] + sorted(set(frame["model"]) - {URM_NAME}):
        mine = frame[frame["model"] == model]
        cells = []
        for m, k in columns:
            hit = mine[(mine["metric"] == m) & (mine["k"] == k)]["value"]
            cells.append("" if hit.empty else (f"{hit.iloc[0]:.0f}" if m.endswith("_s") else f"{hit.iloc[0]:.4f}"))
        lines.append("| " + " | ".join([model] + cells) + " |")
    return "\n".join(lines)
