"""Offline evaluation of a model version against baselines on the day's test split -> `metrics`.

Full ranking over the whole catalogue (no sampled negatives) for every retrieval
objective with test examples: Recall@K, HR@K, NDCG@K, MRR@K, coverage, novelty (mean
self-information of the recommended items, from `item_features.n_positive`) and recall on
cold items (targets flagged cold in `item_features`). With `mask_history` (`evaluate.mask_history`;
always in `jobs.benchmark`) every ranking leaves out the row's history items other than its
target before the top-K cut, as RecBole's full-sort protocol does. CTR: AUC, per-user GAUC and LogLoss
on held-out impressions.
Baselines on the same split (`recllm.evaluation.baselines`): popularity (each objective's most
frequent training targets), implicit ALS (Spark MLlib, on every retrieval target before
the test period), the ID-only SASRec-style expert when one was trained (same backbone and
loop, no text) and, for CTR, a gradient-boosted expert on user/item features.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from recllm.evaluation.baselines import (ALS_NAME, CTR_EXPERT_NAME, als_rankings, ctr_expert, drop_excluded,
                                         popularity_ranking)
from recllm.evaluation.metrics import auc, coverage, gauc, hit_rate_at_k, log_loss, mrr_at_k, ndcg_at_k, novelty, recall_at_k
from recllm.lake import Lake
from recllm.model.inference import Scorer
from recllm.model.urm import ItemCatalog
from recllm.registry import ModelRef
from schemas import ITEM_FEATURES, ITEMS, METRICS, PROMPTS

log = logging.getLogger(__name__)

CUTOFFS = (10, 50)
POPULARITY = "popularity"
EXPERT_NAME = "sasrec"


def _rows(ds: str, model: str, task: str, values: dict[tuple[str, int], float], n: int) -> list[dict]:
    return [dict(ds=ds, model=model, task=task, metric=m, k=k, value=float(v), n=int(n))
            for (m, k), v in values.items() if v == v]


def ranking_metrics(ranked: np.ndarray, targets: np.ndarray, cold: np.ndarray, item_counts: np.ndarray) -> dict:
    """Recall, HR, NDCG, MRR, coverage and novelty at each cutoff, and recall on the rows whose target is cold."""
    out = {}
    for k in CUTOFFS:
        out[("recall", k)] = recall_at_k(ranked, targets, k)
        out[("hr", k)] = hit_rate_at_k(ranked, targets, k)
        out[("ndcg", k)] = ndcg_at_k(ranked, targets, k)
        out[("mrr", k)] = mrr_at_k(ranked, targets, k)
        out[("coverage", k)] = coverage(ranked[:, :k], len(item_counts))
        out[("novelty", k)] = novelty(ranked, item_counts, k)
        if cold.any():
            out[("cold_recall", k)] = recall_at_k(ranked[cold], targets[cold], k)
    return out


def history_exclusions(histories, targets, index: dict[str, int]) -> list[list[int]]:
    """Per row, the catalogue indices of its history items other than its target (`target_item_ids[0]`)."""
    return [sorted({index[h] for h in history if h != target[0]}) for history, target in zip(histories, targets)]


def evaluate(lake: Lake, ds: str, model_dir: str, model_version: str, batch_size: int = 256,
             expert_dir: str | None = None, seconds: dict | None = None, mask_history: bool = False) -> pd.DataFrame:
    """Metrics rows (schemas.METRICS columns) for the model and every baseline.

    `expert_dir`: a trained ID-only expert (`run_training(..., id_only=True)`), ranked as `sasrec`.
    `mask_history`: every ranking model ranks without each test row's history items (bar its target).
    `seconds`, when given, collects each model's scoring time (ALS: fitting and ranking) by name.
    """
    seconds = {} if seconds is None else seconds

    def timed(model: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        seconds[model] = seconds.get(model, 0.0) + time.perf_counter() - start
        return result

    features = lake.read(ITEM_FEATURES.name).toPandas()
    scorer = Scorer.load(model_dir, catalog=ItemCatalog.from_features(features))
    expert = Scorer.load(expert_dir, catalog=scorer.catalog) if expert_dir else None
    by_index = features.sort_values("item_index")
    is_cold = by_index["is_cold"].to_numpy()
    item_counts = by_index["n_positive"].to_numpy()
    prompts = (lake.read(PROMPTS.name, ds=ds).where(F.col("split").isin("train", "valid", "test"))
               .select("user_id", "objective", "split", "prompt_text", "history_item_ids", "target_item_ids", "label")
               .toPandas())
    known = prompts["history_item_ids"].map(lambda h: all(i in scorer.index for i in h)) & prompts["target_item_ids"].map(
        lambda t: t is not None and len(t) > 0 and t[0] in scorer.index)
    prompts = prompts[known]
    test = prompts[prompts["split"] == "test"]
    is_ctr = test["label"].notna()
    k = max(CUTOFFS)
    # baselines rank this deep, so that k items remain once a row's history is dropped
    depth = k + (max(map(len, test.loc[~is_ctr, "history_item_ids"]), default=0) if mask_history else 0)
    als = timed(ALS_NAME, _als, lake, prompts, sorted(test.loc[~is_ctr, "user_id"].unique()), scorer.index, depth)
    rows: list[dict] = []
    for objective, group in test.groupby("objective"):
        users = timed(model_version, _user_vectors, scorer, group, batch_size)
        items = np.array([scorer.index[t[0]] for t in group["target_item_ids"]])
        train = prompts[(prompts["split"] == "train") & (prompts["objective"] == objective)]
        if group["label"].notna().any():
            p = timed(model_version, scorer.click_probability, users, items.tolist())
            rows += _rows(ds, model_version, objective, ctr_metrics(group, p), len(group))
            if train["label"].nunique() == 2:
                categories = dict(lake.read(ITEMS.name).select("item_id", "category").toPandas().itertuples(index=False))
                positives = dict(zip(features["item_id"], features["n_positive"]))
                p = timed(CTR_EXPERT_NAME, ctr_expert, lake.spark, train, group, categories, positives)
                rows += _rows(ds, CTR_EXPERT_NAME, objective, ctr_metrics(group, p), len(group))
            continue
        exclude = (history_exclusions(group["history_item_ids"], group["target_item_ids"], scorer.index)
                   if mask_history else None)
        ranked, _ = timed(model_version, lambda: scorer.top_k(users, k, exclude=exclude))
        cold = is_cold[items]
        rows += _rows(ds, model_version, objective,
                      ranking_metrics(top_k_kept(ranked, exclude, k), items, cold, item_counts), len(group))
        popular = popularity_ranking([t[0] for t in train["target_item_ids"]], scorer.index, depth)
        if (popular >= 0).any():
            rows += _rows(ds, POPULARITY, objective,
                          ranking_metrics(top_k_kept(np.tile(popular, (len(items), 1)), exclude, k), items, cold,
                                          item_counts), len(group))
        ranked_als = top_k_kept(np.stack([als[u] for u in group["user_id"]]), exclude, k)
        rows += _rows(ds, ALS_NAME, objective, ranking_metrics(ranked_als, items, cold, item_counts), len(group))
        if expert is not None:
            ranked_expert, _ = timed(EXPERT_NAME, lambda: expert.top_k(_user_vectors(expert, group, batch_size), k,
                                                                       exclude=exclude))
            rows += _rows(ds, EXPERT_NAME, objective,
                          ranking_metrics(top_k_kept(ranked_expert, exclude, k), items, cold, item_counts), len(group))
    frame = pd.DataFrame(rows, columns=METRICS.column_names)
    log.info("evaluate ds=%s model=%s: %d metric rows over %d objectives", ds, model_version, len(frame),
             frame["task"].nunique() if len(frame) else 0)
    return frame


def top_k_kept(ranked: np.ndarray, exclude: list[list[int]] | None, k: int) -> np.ndarray:
    """The top k of each row, without its excluded items when `exclude` is given."""
    return ranked[:, :k] if exclude is None else drop_excluded(ranked, exclude, k)


def _user_vectors(scorer: Scorer, group: pd.DataFrame, batch_size: int):
    return scorer.user_vectors(group["prompt_text"].tolist(), [list(h) for h in group["history_item_ids"]], batch_size)


def ctr_metrics(group: pd.DataFrame, p: np.ndarray) -> dict:
    """AUC, per-user GAUC and LogLoss of click probabilities for labelled prompt rows."""
    labels = group["label"].to_numpy(dtype=float)
    return {("auc", 0): auc(labels, p), ("gauc", 0): gauc(group["user_id"].to_numpy(), labels, p),
            ("logloss", 0): log_loss(labels, p)}


def _als(lake: Lake, prompts: pd.DataFrame, users: list[str], index: dict[str, int], k: int) -> dict[str, np.ndarray]:
    """ALS top-k per test user, fitted on every retrieval target before the test period."""
    if not users:
        return {}
    before = prompts[prompts["split"].isin(["train", "valid"]) & prompts["label"].isna()]
    interactions = pd.DataFrame({"user_id": before["user_id"], "item_id": before["target_item_ids"].map(lambda t: t[0])})
    fallback = popularity_ranking(interactions["item_id"].tolist(), index, k)
    ranked = als_rankings(lake.spark, interactions, users, index, k, fallback)
    return dict(zip(users, ranked))


def train_expert(lake: Lake, ds: str, config) -> dict:
    """Train the ID-only expert on the same split, with its own epoch budget; `run_training`'s result."""
    from recllm.training.driver import run_training

    expert_config = replace(config, train=replace(config.train, epochs=config.evaluate.expert_epochs))
    return run_training(lake, ds, expert_config, id_only=True)


def run_evaluation(lake: Lake, ds: str, config, model: ModelRef) -> pd.DataFrame:
    """The evaluate stage: train the ID-only expert on the same split (when `evaluate.id_only_expert`),
    evaluate `model` and every baseline (history masked when `evaluate.mask_history`), and replace
    partition `ds` of `metrics`; returns its rows."""
    expert_dir = train_expert(lake, ds, config)["path"] if config.evaluate.id_only_expert else None
    frame = evaluate(lake, ds, model.path, model.version, config.score.batch_size, expert_dir,
                     mask_history=config.evaluate.mask_history)
    write_metrics(lake, frame, ds)
    return frame


def write_metrics(lake: Lake, frame: pd.DataFrame, ds: str) -> int:
    """Replace the `ds` partition of `metrics` with these rows."""
    df = lake.spark.createDataFrame(frame, METRICS.spark) if len(frame) else lake.spark.createDataFrame([], METRICS.spark)
    lake.overwrite_partition(METRICS.name, df, ds)
    return len(frame)
