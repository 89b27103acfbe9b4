"""Offline evaluation of a model version against baselines on the day's test split -> `metrics`.

Full ranking over the whole catalogue (no sampled negatives) for every retrieval
objective with test examples: Recall/HR@K, NDCG@K, coverage, and recall on cold items
(targets flagged cold in `item_features`). CTR: AUC and LogLoss on held-out impressions.
The popularity baseline ranks items by their training positives of the same objective.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from recllm.inference import Scorer
from recllm.lake import Lake, check_ds
from recllm.metrics import auc, coverage, log_loss, ndcg_at_k, recall_at_k
from recllm.training import catalog_from_features
from schemas import METRICS

log = logging.getLogger(__name__)

CUTOFFS = (10, 50)
POPULARITY = "popularity"


def _rows(ds: str, model: str, task: str, values: dict[tuple[str, int], float], n: int) -> list[dict]:
    return [dict(ds=ds, model=model, task=task, metric=m, k=k, value=float(v), n=int(n))
            for (m, k), v in values.items() if v == v]


def ranking_metrics(ranked: np.ndarray, targets: np.ndarray, cold: np.ndarray, n_items: int) -> dict:
    """Recall, NDCG and coverage at each cutoff, and recall on the rows whose target is cold."""
    out = {}
    for k in CUTOFFS:
        out[("recall", k)] = recall_at_k(ranked, targets, k)
        out[("ndcg", k)] = ndcg_at_k(ranked, targets, k)
        out[("coverage", k)] = coverage(ranked[:, :k], n_items)
        if cold.any():
            out[("cold_recall", k)] = recall_at_k(ranked[cold], targets[cold], k)
    return out


def evaluate(lake: Lake, ds: str, model_dir: str, model_version: str, batch_size: int = 256) -> pd.DataFrame:
    """Metrics rows (schemas.METRICS columns) for the model and the popularity baseline."""
    check_ds(ds)
    features = lake.read("item_features").toPandas()
    scorer = Scorer.load(model_dir, catalog=catalog_from_features(features))
    is_cold = features.sort_values("item_index")["is_cold"].to_numpy()
    prompts = (lake.read("prompts", ds=ds).where(F.col("split").isin("train", "test"))
               .select("objective", "split", "prompt_text", "history_item_ids", "target_item_ids", "label").toPandas())
    n_items = len(scorer.catalog)
    rows: list[dict] = []
    for objective, group in prompts.groupby("objective"):
        test = group[group["split"] == "test"]
        test = test[test["history_item_ids"].map(lambda h: all(i in scorer.index for i in h))]
        test = test[test["target_item_ids"].map(lambda t: t is not None and len(t) > 0 and t[0] in scorer.index)]
        if test.empty:
            continue
        users = scorer.user_vectors(test["prompt_text"].tolist(), [list(h) for h in test["history_item_ids"]], batch_size)
        items = np.array([scorer.index[t[0]] for t in test["target_item_ids"]])
        if test["label"].notna().any():
            p = scorer.click_probability(users, items.tolist())
            labels = test["label"].to_numpy(dtype=float)
            rows += _rows(ds, model_version, objective, {("auc", 0): auc(labels, p), ("logloss", 0): log_loss(labels, p)},
                          len(test))
            continue
        ranked, _ = scorer.top_k(users, max(CUTOFFS))
        rows += _rows(ds, model_version, objective, ranking_metrics(ranked, items, is_cold[items], n_items), len(test))
        train = group[group["split"] == "train"]
        popular = [scorer.index[i] for i, _ in Counter(t[0] for t in train["target_item_ids"] if t is not None and len(t))
                   .most_common(max(CUTOFFS)) if i in scorer.index]
        if popular:
            ranked_pop = np.full((len(items), max(CUTOFFS)), -1)
            ranked_pop[:, :len(popular)] = popular
            rows += _rows(ds, POPULARITY, objective, ranking_metrics(ranked_pop, items, is_cold[items], n_items),
                          len(test))
    frame = pd.DataFrame(rows, columns=METRICS.column_names)
    log.info("evaluate ds=%s model=%s: %d metric rows over %d objectives", ds, model_version, len(frame),
             frame["task"].nunique() if len(frame) else 0)
    return frame


def write_metrics(lake: Lake, frame: pd.DataFrame, ds: str) -> int:
    """Replace the `ds` partition of `metrics` with these rows."""
    df = lake.spark.createDataFrame(frame, METRICS.spark) if len(frame) else lake.spark.createDataFrame([], METRICS.spark)
    lake.overwrite_partition(METRICS.name, df, ds)
    return len(frame)
