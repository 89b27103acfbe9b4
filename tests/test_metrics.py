"""Metrics match hand-computed values, and a NaN score is never a hit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recllm.evaluation.metrics import (auc, coverage, gauc, hit_positions, hit_rate_at_k, log_loss, mrr_at_k, ndcg_at_k, novelty,
                            recall_at_k)

RANKED = np.array([[3, 1, 2], [0, 4, 5], [7, 8, -1]])
TARGETS = np.array([1, 9, 7])


def test_hit_positions_and_recall_by_hand():
    assert hit_positions(RANKED, TARGETS).tolist() == [1, -1, 0]
    assert recall_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, TARGETS, 2) == pytest.approx(2 / 3)


def test_ndcg_by_hand():
    assert ndcg_at_k(RANKED, TARGETS, 3) == pytest.approx((1 / math.log2(3) + 0 + 1) / 3)


def test_an_empty_position_is_never_a_hit():
    assert recall_at_k(np.array([[-1, -1]]), np.array([-1]), 2) == 0.0


def test_auc_by_hand_with_ties():
    # positives 0.9, 0.5; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.5=0.5 -> half, 0.5>0.1) = 3.5/4
    assert auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.5, 0.5, 0.1])) == pytest.approx(0.875)
    assert math.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_a_nan_score_ranks_last_in_auc():
    assert auc(np.array([1, 0]), np.array([np.nan, 0.1])) == 0.0


def pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The definition, pair by pair: a positive above a negative counts 1, a tie 1/2; NaN below everything."""
    scores = np.where(np.isnan(scores), -np.inf, scores)
    pos, neg = scores[labels.astype(bool)], scores[~labels.astype(bool)]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def random_ctr_rows(rng: np.random.Generator, n: int, n_users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, labels, scores): scores rounded to one decimal (many ties) with about one NaN in ten."""
    scores = np.round(rng.random(n), 1)
    scores[rng.random(n) < 0.1] = np.nan
    return rng.integers(0, n_users, n).astype(str), rng.integers(0, 2, n), scores


def test_auc_equals_the_pairwise_definition_with_ties_and_nans():
    rng = np.random.default_rng(7)
    for _ in range(5):
        _, labels, scores = random_ctr_rows(rng, 300, 1)
        assert auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores), abs=1e-12)


def test_gauc_equals_the_size_weighted_mean_of_each_users_pairwise_auc():
    rng = np.random.default_rng(11)
    users, labels, scores = random_ctr_rows(rng, 400, 30)
    users[:3], labels[:3] = "one-class user", 1  # a user with positives only: skipped
    total = weight = 0.0
    for user in np.unique(users):
        mine = users == user
        if 0 < labels[mine].sum() < mine.sum():
            total += pairwise_auc(labels[mine], scores[mine]) * mine.sum()
            weight += mine.sum()
    assert weight < len(users)
    assert gauc(users, labels, scores) == pytest.approx(total / weight, abs=1e-12)


def test_log_loss_and_coverage_by_hand():
    assert log_loss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert coverage(RANKED, 10) == pytest.approx(8 / 10)


def test_hit_rate_and_mrr_by_hand():
    assert hit_rate_at_k(RANKED, TARGETS, 3) == pytest.approx(2 / 3)
    assert mrr_at_k(RANKED, TARGETS, 3) == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert mrr_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 3)


def test_gauc_weighs_each_users_auc_by_their_impressions():
    groups = np.array(["a", "a", "a", "b", "b", "c"])
    labels = np.array([1, 0, 0, 0, 1, 1])
    scores = np.array([0.9, 0.2, 0.95, 0.8, 0.3, 0.5])
    # a: positive 0.9 beats 0.2, loses to 0.95 -> 0.5 over 3 impressions; b: 0.0 over 2; c: one class, skipped
    assert gauc(groups, labels, scores) == pytest.approx((0.5 * 3 + 0.0 * 2) / 5)
    assert math.isnan(gauc(np.array(["c"]), np.array([1]), np.array([0.5])))


def test_novelty_by_hand():
    counts = np.array([5, 1, 1, 0])  # +1 smoothing: 6, 2, 2, 1 of 11
    ranked = np.array([[0, 1], [3, -1]])
    expected = -(math.log2(6 / 11) + math.log2(2 / 11) + math.log2(1 / 11)) / 3
    assert novelty(ranked, counts, 2) == pytest.approx(expected)
