"""Expert baselines: popularity, Spark MLlib ALS and the Spark ML CTR expert learn what the data holds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recllm.evaluation.baselines import als_rankings, ctr_expert, ctr_features, popularity_ranking
from recllm.evaluation.metrics import auc

ITEMS = [f"i{k}" for k in range(10)]
INDEX = {item: k for k, item in enumerate(ITEMS)}


def test_popularity_ranks_by_count_and_pads_with_minus_one():
    ranking = popularity_ranking(["i3", "i1", "i3", "i9", "i1", "i3", "unknown"], INDEX, 5)
    assert ranking.tolist() == [3, 1, 9, -1, -1]


def test_als_recommends_items_of_the_users_own_group_and_falls_back_for_strangers(spark):
    rng = np.random.default_rng(0)
    rows = []
    for u in range(20):
        group = range(0, 5) if u < 10 else range(5, 10)
        for item in rng.choice(list(group), size=3, replace=False):
            rows.append((f"u{u}", f"i{item}"))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id"])
    fallback = np.array([9, 8, 7])
    ranked = als_rankings(spark, interactions, ["u0", "u15", "stranger"], INDEX, 3, fallback, rank=4, max_iter=15)
    assert set(ranked[0]) <= set(range(0, 5))
    assert set(ranked[1]) <= set(range(5, 10))
    assert ranked[2].tolist() == [9, 8, 7]


def test_the_ctr_expert_learns_that_users_click_their_own_category(spark):
    rng = np.random.default_rng(1)
    category = {item: ("shoes" if k < 5 else "books") for k, item in enumerate(ITEMS)}

    def examples(n):
        rows = []
        for _ in range(n):
            likes = rng.choice(["shoes", "books"])
            own = [i for i in ITEMS if category[i] == likes]
            history = list(rng.choice(own, size=3))
            item = str(rng.choice(ITEMS))
            p = 0.8 if category[item] == likes else 0.1
            rows.append({"user_id": f"u{len(rows) % 7}", "history_item_ids": history, "target_item_ids": [item],
                         "label": float(rng.random() < p)})
        return pd.DataFrame(rows)

    train, test = examples(400), examples(200)
    features = ctr_features(test.head(1), category, {})
    assert features.columns.tolist() == ["log_popularity", "category_share", "log_history", "seen_before"]
    p = ctr_expert(spark, train, test, category, {item: 1 for item in ITEMS})
    assert p.shape == (200,) and ((p >= 0) & (p <= 1)).all()
    assert auc(test["label"].to_numpy(), p) > 0.8
