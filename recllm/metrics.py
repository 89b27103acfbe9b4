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
    return float(np.where(pos >= 0, 1.0 / np.log2(pos + 2.0), 0.0).mean())
