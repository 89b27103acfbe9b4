"""Expert baselines trained on the same split as the URM model, for `recllm.evaluation.evaluate`.

* `popularity_ranking`: each objective's most frequent training targets, for every user.
* `als_rankings`: Spark MLlib ALS on implicit feedback (every retrieval target before the
  test period, counted per user and item), top-K for the test users; users ALS never saw
  get the popularity ranking.
* `drop_excluded`: rankings without each row's excluded items (history masking): rank
  K + the longest exclusion list deep, then cut each row to K.
* `ctr_expert`: a Spark ML gradient-boosted classifier on hand-made user/item features
  (item popularity, the user's share of history in the item's category, history length,
  whether the user has seen the item before), fitted on training impressions.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

ALS_NAME = "als"
CTR_EXPERT_NAME = "gbt_ctr"


def popularity_ranking(targets: list[str], index: dict[str, int], k: int) -> np.ndarray:
    """The k most frequent items of `targets` (ties by first appearance) as indices, -1 padded."""
    popular = [index[i] for i, _ in Counter(targets).most_common() if i in index][:k]
    ranking = np.full(k, -1, dtype=np.int64)
    ranking[:len(popular)] = popular
    return ranking


def drop_excluded(ranked: np.ndarray, exclude: list[list[int]], k: int) -> np.ndarray:
    """[len(ranked), k]: each row of `ranked` without the items of its `exclude` list, order kept, -1 padded."""
    out = np.full((len(ranked), k), -1, dtype=np.int64)
    for row, (items, banned) in enumerate(zip(np.asarray(ranked), exclude)):
        banned = set(banned)
        kept = [i for i in items.tolist() if i >= 0 and i not in banned][:k]
        out[row, :len(kept)] = kept
    return out


def als_rankings(spark: SparkSession, interactions: pd.DataFrame, users: list[str], index: dict[str, int], k: int,
                 fallback: np.ndarray, rank: int = 32, max_iter: int = 10, reg_param: float = 0.05,
                 alpha: float = 10.0, seed: int = 0) -> np.ndarray:
    """[len(users), k] item indices from implicit ALS over (user_id, item_id) interaction rows."""
    from pyspark.ml.recommendation import ALS

    pairs = interactions[interactions["item_id"].isin(index.keys())]
    counts = pairs.groupby(["user_id", "item_id"]).size().rename("rating").reset_index()
    if counts.empty:
        return np.tile(fallback, (len(users), 1))
    user_codes = {u: n for n, u in enumerate(sorted(counts["user_id"].unique()))}
    frame = pd.DataFrame({"user": counts["user_id"].map(user_codes).astype("int32"),
                          "item": counts["item_id"].map(index).astype("int32"),
                          "rating": counts["rating"].astype("float32")})
    if spark.sparkContext.getCheckpointDir() is None:
        # ALS's lineage grows with every iteration; without checkpoints the task overflows the JVM stack.
        import tempfile

        spark.sparkContext.setCheckpointDir(tempfile.mkdtemp(prefix="recllm-checkpoints-"))
    als = ALS(rank=rank, maxIter=max_iter, regParam=reg_param, alpha=alpha, implicitPrefs=True, seed=seed,
              userCol="user", itemCol="item", ratingCol="rating", coldStartStrategy="drop", checkpointInterval=3)
    model = als.fit(spark.createDataFrame(frame))
    known = sorted({user_codes[u] for u in users if u in user_codes})
    out = np.tile(fallback, (len(users), 1))
    if known:
        wanted = spark.createDataFrame(pd.DataFrame({"user": np.array(known, dtype="int32")}))
        recs = {r.user: [x.item for x in r.recommendations] for r in model.recommendForUserSubset(wanted, k).collect()}
        for row, user in enumerate(users):
            items = recs.get(user_codes.get(user, -1))
            if items:
                out[row] = -1
                out[row, :len(items)] = items
    log.info("ALS: %d interactions, %d users, %d/%d test users known", len(counts), len(user_codes),
             sum(u in user_codes for u in users), len(users))
    return out


CTR_FEATURES = ("log_popularity", "category_share", "log_history", "seen_before")


def ctr_features(rows: pd.DataFrame, item_category: dict[str, str], item_positives: dict[str, int]) -> pd.DataFrame:
    """One feature row per (history, impressed item) example of `rows` (prompts columns)."""
    out = []
    for history, target in zip(rows["history_item_ids"], rows["target_item_ids"]):
        item = target[0]
        cats = Counter(item_category.get(h) for h in history)
        out.append((
            float(np.log1p(item_positives.get(item, 0))),
            cats[item_category.get(item)] / len(history) if len(history) else 0.0,
            float(np.log1p(len(history))),
            float(item in set(history)),
        ))
    return pd.DataFrame(out, columns=list(CTR_FEATURES))


def ctr_expert(spark: SparkSession, train: pd.DataFrame, test: pd.DataFrame, item_category: dict[str, str],
               item_positives: dict[str, int], seed: int = 0) -> np.ndarray:
    """P(click) for each `test` row from a GBT classifier fitted on `train` rows (label 0/1)."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import GBTClassifier
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.functions import vector_to_array

    train_x = ctr_features(train, item_category, item_positives).assign(label=train["label"].to_numpy())
    test_x = ctr_features(test, item_category, item_positives).assign(row=np.arange(len(test)))
    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=list(CTR_FEATURES), outputCol="features"),
        GBTClassifier(maxIter=30, maxDepth=4, seed=seed, featuresCol="features", labelCol="label"),
    ])
    model = pipeline.fit(spark.createDataFrame(train_x))
    scored = (model.transform(spark.createDataFrame(test_x))
              .select("row", vector_to_array("probability")[1].alias("p")).toPandas().sort_values("row"))
    log.info("CTR expert: fitted on %d impressions, scored %d", len(train_x), len(test_x))
    return scored["p"].to_numpy()
