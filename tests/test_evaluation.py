"""History masking (RecBole's full-sort protocol): rankings drop each row's history items, never its target."""

from __future__ import annotations

import numpy as np
import pytest

from recllm.evaluation.baselines import drop_excluded, popularity_ranking
from recllm.evaluation.evaluate import history_exclusions, top_k_kept
from recllm.evaluation.metrics import ndcg_at_k, recall_at_k

INDEX = {f"i{k}": k for k in range(10)}


def test_history_items_are_excluded_but_the_target_stays_rankable():
    exclude = history_exclusions([["i3", "i1", "i3"], ["i7", "i2"], []], [["i7"], ["i7"], ["i0"]], INDEX)
    assert exclude == [[1, 3], [2], []]


def test_dropping_excluded_items_keeps_order_and_pads_with_minus_one():
    ranked = np.array([[3, 1, 7, 2], [5, -1, -1, -1]])
    assert drop_excluded(ranked, [[3, 1], [5]], 3).tolist() == [[7, 2, -1], [-1, -1, -1]]


def test_masking_lifts_a_target_ranked_behind_history_items():
    ranked = np.array([[3, 1, 7, 2], [4, 6, 0, 9]])
    targets = np.array([7, 6])
    exclude = history_exclusions([["i3", "i1"], ["i4"]], [["i7"], ["i6"]], INDEX)
    assert recall_at_k(top_k_kept(ranked, None, 1), targets, 1) == 0.0
    masked = top_k_kept(ranked, exclude, 1)
    assert masked.tolist() == [[7], [6]]
    assert recall_at_k(masked, targets, 1) == 1.0
    assert ndcg_at_k(top_k_kept(ranked, exclude, 2), targets, 2) == pytest.approx(1.0)


def test_a_baseline_ranked_k_plus_the_longest_history_deep_still_fills_k_after_masking():
    popular = popularity_ranking(["i0", "i0", "i0", "i1", "i1", "i2", "i3", "i4"], INDEX, 2 + 2)
    masked = drop_excluded(np.tile(popular, (2, 1)), [[0, 1], [2]], 2)
    assert masked.tolist() == [[2, 3], [0, 1]]
