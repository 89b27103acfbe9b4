"""Offline metrics over full rankings (every catalogue item ranked; no sampled negatives).

Rankings come as integer item arrays [n_users, K] (best first); targets as one item per
row. A NaN score must never count as a hit, so rankings are built from NaN-free scores
(see `recllm.inference.Scorer.top_k`) and -1 marks an empty position.
"""

from __future__ import annotations

import numpy as np


def hit_positions(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target within its top-K, or -1 when absent."""
    ranked = np.asarray(ranked)
    match = (ranked == np.asarray(targets)[:, None]) & (ranked >= 0)
    return np.where(match.any(axis=1), match.argmax(axis=1), -1)


def recall_at_k(ranked: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Share of rows whose single target is in the top k (equals HR@k for one target)."""
    if len(targets) == 0:
        return float("nan")
    pos = hit_positions(np.asarray(ranked)[:, :k], targets)
    return float((pos >= 0).mean())


def ndcg_at_k(ranked: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Mean NDCG@k with one relevant item per row: 1 / log2(rank + 2) when hit."""
    if len(targets) == 0:
        return float("nan")
    pos = hit_positions(np.asarray(ranked)[:, :k], targets)
    return float(np.where(pos >= 0, 1.0 / np.log2(np.maximum(pos, 0) + 2.0), 0.0).mean())


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); nan when only one class is present."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    for end in range(1, len(scores) + 1):
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities against 0/1 labels."""
    p = np.clip(np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.5), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if len(y) else float("nan")


def coverage(ranked: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one top-K list."""
    ranked = np.asarray(ranked)
    return float(len(np.unique(ranked[ranked >= 0])) / n_items) if n_items else float("nan")


def hit_rate_at_k(ranked: np.ndarray, targets: np.ndarray, k: int) -> float:
    """HR@k: share of rows with a hit in the top k (with one target per row, equal to Recall@k)."""
    return recall_at_k(ranked, targets, k)


def mrr_at_k(ranked: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Mean reciprocal rank of the target within the top k (0 when absent)."""
    if len(targets) == 0:
        return float("nan")
    pos = hit_positions(np.asarray(ranked)[:, :k], targets)
    return float(np.where(pos >= 0, 1.0 / (np.maximum(pos, 0) + 1.0), 0.0).mean())


def gauc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Per-user AUC averaged with each user's impression count as weight; users with one class are skipped."""
    groups, labels, scores = np.asarray(groups), np.asarray(labels), np.asarray(scores)
    total = weight = 0.0
    for g in np.unique(groups):
        mine = groups == g
        value = auc(labels[mine], scores[mine])
        if value == value:
            total += value * mine.sum()
            weight += mine.sum()
    return float(total / weight) if weight else float("nan")


def novelty(ranked: np.ndarray, item_counts: np.ndarray, k: int) -> float:
    """Mean self-information -log2 p(i) of recommended items, p from training interaction counts (+1 smoothing)."""
    ranked = np.asarray(ranked)[:, :k]
    counts = np.asarray(item_counts, dtype=np.float64) + 1.0
    p = counts / counts.sum()
    shown = ranked[ranked >= 0]
    return float(-np.log2(p[shown]).mean()) if shown.size else float("nan")
