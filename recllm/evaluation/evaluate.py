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
the test period), the ID-only expert when one was trained: a SASRec (`recllm.evaluation.sasrec`:
causal self-attention over item IDs, full-softmax cross-entropy at every position, no text),
trained on the expert objective's train rows and early-stopped on its valid rows, ranking
each test row from its history, and, for CTR, a gradient-boosted expert on user/item features
(its item popularity counted on the same interactions before the test period as ALS's).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from recllm.evaluation.baselines import (ALS_NAME, CTR_EXPERT_NAME, als_rankings, ctr_expert, drop_excluded,
                                         popularity_ranking)
from recllm.evaluation.metrics import auc, coverage, gauc, hit_rate_at_k, log_loss, mrr_at_k, ndcg_at_k, novelty, recall_at_k
from recllm.evaluation.sasrec import SASRec, SASRecConfig, fit, load_item_ids, user_sequences
from recllm.lake import Lake
from recllm.model.inference import Scorer
from recllm.model.urm import ItemCatalog
from recllm.registry import ModelRef, mlflow_version_of
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

    `expert_dir`: a trained SASRec (`train_expert`), ranked as `sasrec` from each test row's history.
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
    expert = SASRec.load(expert_dir) if expert_dir else None
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
    before = interactions_before_test(prompts)
    # not item_features.n_positive: that counts the test day's own clicks
    positives_before = before.drop_duplicates()["item_id"].value_counts().to_dict()
    als = timed(ALS_NAME, _als, lake, before, sorted(test.loc[~is_ctr, "user_id"].unique()), scorer.index, depth)
    rows: list[dict] = []
    for objective, group in test.groupby("objective"):
        users = timed(model_version, _user_vectors, scorer, group, batch_size)
        items = np.array([scorer.index[t[0]] for t in group["target_item_ids"]])
        train = prompts[(prompts["split"] == "train") & (prompts["objective"] == objective)]
        if group["label"].notna().any():
            p = timed(model_version, scorer.click_probability, users, items.tolist(),
                      [list(h) for h in group["history_item_ids"]])
            rows += _rows(ds, model_version, objective, ctr_metrics(group, p), len(group))
            if train["label"].nunique() == 2:
                categories = dict(lake.read(ITEMS.name).select("item_id", "category").toPandas().itertuples(index=False))
                p = timed(CTR_EXPERT_NAME, ctr_expert, lake.spark, train, group, categories, positives_before)
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
            ranked_expert = timed(EXPERT_NAME, expert_top_k, expert, load_item_ids(expert_dir),
                                  scorer.catalog.item_ids, group["history_item_ids"], k, exclude)
            rows += _rows(ds, EXPERT_NAME, objective,
                          ranking_metrics(top_k_kept(ranked_expert, exclude, k), items, cold, item_counts), len(group))
    frame = pd.DataFrame(rows, columns=METRICS.column_names)
    log.info("evaluate ds=%s model=%s: %d metric rows over %d objectives", ds, model_version, len(frame),
             frame["task"].nunique() if len(frame) else 0)
    return frame


def top_k_kept(ranked: np.ndarray, exclude: list[list[int]] | None, k: int) -> np.ndarray:
    """The top k of each row, without its excluded items when `exclude` is given."""
    return ranked[:, :k] if exclude is None else drop_excluded(ranked, exclude, k)


def expert_top_k(expert: SASRec, expert_ids: list[str] | None, item_ids: list[str], histories, k: int,
                 exclude: list[list[int]] | None) -> np.ndarray:
    """[len(histories), k] catalogue indices ranked by the SASRec from each history (item ids), without
    each row's `exclude` indices; `expert_ids` (None: the catalogue's own) are the ids of the expert's
    item indices, so a catalogue that gained items since training still ranks (only the items it knows)."""
    expert_ids = item_ids if expert_ids is None else expert_ids
    own = {item: n for n, item in enumerate(expert_ids)}
    catalog = {item: n for n, item in enumerate(item_ids)}
    to_catalog = np.array([catalog.get(i, -1) for i in expert_ids] + [-1], dtype=np.int64)  # [-1]: -1 stays -1
    rows = [[own[h] for h in history if h in own] for history in histories]
    banned = None if exclude is None else [[own[item_ids[i]] for i in row if item_ids[i] in own] for row in exclude]
    ranked = to_catalog[expert.top_k(rows, k, banned)]
    return top_k_kept(ranked, [[] for _ in rows], k) if (ranked < 0).any() else ranked


def _user_vectors(scorer: Scorer, group: pd.DataFrame, batch_size: int):
    return scorer.user_vectors(group["prompt_text"].tolist(), [list(h) for h in group["history_item_ids"]], batch_size)


def ctr_metrics(group: pd.DataFrame, p: np.ndarray) -> dict:
    """AUC, per-user GAUC and LogLoss of click probabilities for labelled prompt rows."""
    labels = group["label"].to_numpy(dtype=float)
    return {("auc", 0): auc(labels, p), ("gauc", 0): gauc(group["user_id"].to_numpy(), labels, p),
            ("logloss", 0): log_loss(labels, p)}


def interactions_before_test(prompts: pd.DataFrame) -> pd.DataFrame:
    """(user_id, item_id) of every retrieval target in the train and valid rows: what baselines may learn from."""
    before = prompts[prompts["split"].isin(["train", "valid"]) & prompts["label"].isna()]
    return pd.DataFrame({"user_id": before["user_id"].to_numpy(),
                         "item_id": before["target_item_ids"].map(lambda t: t[0]).to_numpy()})


def _als(lake: Lake, interactions: pd.DataFrame, users: list[str], index: dict[str, int], k: int) -> dict[str, np.ndarray]:
    """ALS top-k per test user, fitted on the `interactions` before the test period."""
    if not users:
        return {}
    fallback = popularity_ranking(interactions["item_id"].tolist(), index, k)
    ranked = als_rankings(lake.spark, interactions, users, index, k, fallback)
    return dict(zip(users, ranked))


def train_expert(lake: Lake, ds: str, config) -> dict:
    """Train the SASRec expert on partition `ds` of `prompts` and save it under `train.model_root`.

    Its training sequences are rebuilt from the train rows of `evaluate.expert_objective`
    (`sasrec.user_sequences`: every position of each user's sequence predicts the next item);
    its valid rows (history -> target) early-stop it, within `evaluate.expert_epochs` epochs. One
    process, on `train.torch_threads` threads (0: every core this process may use).
    Returns `fit`'s summary (epochs, examples_per_s, peak_memory_bytes, ...) with `path` and
    `model_version`.
    """
    objective = config.evaluate.expert_objective
    features = lake.read(ITEM_FEATURES.name).select("item_id", "item_index").toPandas().sort_values("item_index")
    item_ids = features["item_id"].tolist()
    index = dict(zip(item_ids, range(len(item_ids))))
    rows = (lake.read(PROMPTS.name, ds=ds)
            .where((F.col("objective") == objective) & F.col("split").isin("train", "valid") & F.col("label").isNull())
            .select("user_id", "split", "cutoff_ts", "history_item_ids", "target_item_ids").toPandas())
    sequences = user_sequences(rows[rows["split"] == "train"], index)
    if not sequences:
        raise ValueError(f"prompts for ds={ds} have no train rows of objective {objective!r} for the SASRec expert")
    valid = rows[rows["split"] == "valid"]
    valid = valid[valid["target_item_ids"].map(lambda t: t is not None and len(t) > 0 and t[0] in index)
                  & valid["history_item_ids"].map(lambda h: all(i in index for i in h))]
    expert_config = SASRecConfig(n_items=len(item_ids), epochs=config.evaluate.expert_epochs, seed=config.train.seed)
    model, summary = fit(expert_config, sequences, [[index[i] for i in h] for h in valid["history_item_ids"]],
                         [index[t[0]] for t in valid["target_item_ids"]], threads=config.train.torch_threads or None)
    shape = json.dumps([asdict(expert_config), objective, asdict(config.prompts)], sort_keys=True, default=str)
    version = f"{EXPERT_NAME}-{ds}-{hashlib.sha256(shape.encode()).hexdigest()[:8]}"
    path = os.path.abspath(os.path.join(config.train.model_root, version))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.save(path, item_ids)
    log.info("sasrec expert %s: %d sequences, %d epochs (best %d), valid ndcg@10 %.4f, %.0f s, %.0f examples/s -> %s",
             version, len(sequences), summary["epochs"], summary["best_epoch"], summary["valid_ndcg"],
             summary["train_s"], summary["examples_per_s"], path)
    return {**summary, "model_version": version, "path": path}


def run_evaluation(lake: Lake, ds: str, config, model: ModelRef) -> pd.DataFrame:
    """The evaluate stage: train the ID-only expert on the same split (when `evaluate.id_only_expert`),
    evaluate `model` and every baseline (history masked when `evaluate.mask_history`), and replace
    partition `ds` of `metrics`; returns its rows. With `mlflow.enabled`, the model's MLflow version
    then becomes `champion` if it beats popularity on `evaluate.primary_objective`
    (`recllm.tracking.promote_champion`)."""
    expert_dir = train_expert(lake, ds, config)["path"] if config.evaluate.id_only_expert else None
    frame = evaluate(lake, ds, model.path, model.version, config.score.batch_size, expert_dir,
                     mask_history=config.evaluate.mask_history)
    write_metrics(lake, frame, ds)
    if config.mlflow.enabled:
        from recllm.tracking import promote_champion

        promote_champion(lake.root, config, model.version, mlflow_version_of(lake, model.version), frame)
    return frame


def write_metrics(lake: Lake, frame: pd.DataFrame, ds: str) -> int:
    """Replace the `ds` partition of `metrics` with these rows."""
    df = lake.spark.createDataFrame(frame, METRICS.spark) if len(frame) else lake.spark.createDataFrame([], METRICS.spark)
    lake.overwrite_partition(METRICS.name, df, ds)
    return len(frame)
