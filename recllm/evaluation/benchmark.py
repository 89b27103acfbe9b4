"""Real-data benchmark: the URM default against every baseline on one dataset, one run.

Loads a MovieLens, Amazon or RecBole dataset, lands and ingests it, builds features and
leave-last-out prompts (a dataset that ships its own split is rebuilt so that this split
reproduces it), trains the URM default and the ID-only expert, and evaluates them with
popularity and ALS on the objective with the most test examples (`like` for rating-only
data, `click` for clicks), each test row's history items masked from every ranking (RecBole's
full-sort protocol, so figures compare with published ones). CTR metrics (URM's CTR head
against the GBT expert) come from impressions, or, for rating-only data, from likes against
dislikes (ratings at or above `prompts.rating_ctr_threshold`, default
`schemas.LIKED_MIN_RATING`). Results are rows `{"model", "metric", "k", "value"}`; each
trained model (urm, sasrec) also has `train_s`, `examples_per_s` and `peak_memory_bytes` (k 0).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import pandas as pd
from pyspark.sql import functions as F

from recllm.data.formats import load_dataset
from recllm.evaluation.evaluate import EXPERT_NAME, evaluate, train_expert
from recllm.lake import Lake
from recllm.nightly import land_and_prepare
from recllm.training.driver import run_training
from schemas import LIKED_MIN_RATING, PROMPTS

log = logging.getLogger(__name__)

URM_NAME = "urm"
TABLE_METRICS = (("recall", 10), ("recall", 50), ("ndcg", 10), ("ndcg", 50), ("cold_recall", 10), ("cold_recall", 50),
                 ("auc", 0), ("gauc", 0), ("logloss", 0), ("train_s", 0), ("score_s", 0))


def primary_objective(lake: Lake, ds: str) -> str:
    """The retrieval objective with the most test examples."""
    counts = (lake.read(PROMPTS.name, ds=ds).where("split = 'test' AND label IS NULL").groupBy("objective").count()
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
        LIKED_MIN_RATING if threshold is None else threshold)))
    ds = land_and_prepare(lake, [day], config, embed)
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
    frame = evaluate(lake, ds, urm["path"], urm["model_version"], config.score.batch_size, expert["path"], seconds,
                     mask_history=True)
    evaluate_s = time.perf_counter() - start

    frame = frame[frame["task"].isin([objective, "ctr"])].copy()
    frame["model"] = frame["model"].replace({urm["model_version"]: URM_NAME})
    rows = [{"model": r.model, "metric": r.metric, "k": int(r.k), "value": float(r.value)} for r in frame.itertuples()]
    for name, result, train_s in ((URM_NAME, urm, urm_train_s), (EXPERT_NAME, expert, expert_train_s)):
        rows += [{"model": name, "metric": "train_s", "k": 0, "value": train_s},
                 {"model": name, "metric": "examples_per_s", "k": 0, "value": float(result["examples_per_s"])},
                 {"model": name, "metric": "peak_memory_bytes", "k": 0, "value": float(result["peak_memory_bytes"])}]
    rows += [{"model": "all", "metric": "evaluate_s", "k": 0, "value": evaluate_s}]
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
