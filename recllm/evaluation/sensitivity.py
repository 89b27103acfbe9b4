"""Prompt sensitivity: score the same users with alternative instructions of one objective.

Every prompt starts with its objective's instruction (the template's `{instruction}`), so
a variant swaps that prefix and keeps the rest (scenario, profile, query, history with
its item slots) unchanged. For each variant against the configured instruction it reports
the metric deltas (Recall@K, NDCG@K, where the split has targets), the overlap of the
top-K candidate sets (mean Jaccard) and the shift of their category distribution (total
variation distance, 0 = same mix, 1 = disjoint categories).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from recllm.evaluation.metrics import ndcg_at_k, recall_at_k
from recllm.lake import Lake
from recllm.model.inference import Scorer
from recllm.model.tokens import neutralize
from recllm.model.urm import ItemCatalog
from recllm.pipeline.objectives import objectives_from_config
from schemas import ITEM_FEATURES, ITEMS, PROMPTS

log = logging.getLogger(__name__)

BASE = "configured"


def swap_instruction(prompts: list[str], old: str, new: str) -> list[str]:
    """The prompts with their leading instruction `old` replaced by `new` (neutralised)."""
    new = neutralize(new)
    out = []
    for p in prompts:
        if not p.startswith(old):
            raise ValueError(f"a prompt does not start with the objective's instruction {old!r}: {p[:80]!r}")
        out.append(new + p[len(old):])
    return out


def mean_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of |A ∩ B| / |A ∪ B| of two [rows, K] item index arrays (-1 = empty)."""
    values = []
    for x, y in zip(a, b):
        x, y = set(x[x >= 0].tolist()), set(y[y >= 0].tolist())
        values.append(len(x & y) / len(x | y) if x | y else 1.0)
    return float(np.mean(values)) if values else float("nan")


def category_shift(a: np.ndarray, b: np.ndarray, categories: np.ndarray) -> float:
    """Total variation distance between the category mixes of two sets of rankings."""
    def mix(ranked):
        cats = pd.Series(categories[ranked[ranked >= 0]]).fillna("(none)")
        return cats.value_counts(normalize=True)

    pa, pb = mix(a), mix(b)
    return float(0.5 * pa.sub(pb, fill_value=0.0).abs().sum())


def prompt_sensitivity(lake: Lake, ds: str, model_dir: str, objective: str, instructions: list[str],
                       prompts_config, k: int = 10, split: str = "test", max_users: int = 2000) -> pd.DataFrame:
    """One row per instruction variant (the configured one first): metrics, deltas, overlap, category shift."""
    from pyspark.sql import functions as F

    known = {o.name: o for o in objectives_from_config(prompts_config)}
    if objective not in known:
        raise ValueError(f"objective {objective!r} is not enabled; enabled: {sorted(known)}")
    if not instructions:
        raise ValueError("give at least one alternative instruction")
    base = known[objective].instruction
    rows = (lake.read(PROMPTS.name, ds=ds).where((F.col("objective") == objective) & (F.col("split") == split))
            .orderBy("example_id").limit(max_users).select("prompt_text", "history_item_ids", "target_item_ids")
            .toPandas())
    if rows.empty:
        raise ValueError(f"prompts ds={ds} has no {split!r} rows for objective {objective!r}")
    features = lake.read(ITEM_FEATURES.name).toPandas()
    scorer = Scorer.load(model_dir, catalog=ItemCatalog.from_features(features))
    categories = (features.merge(lake.read(ITEMS.name).select("item_id", "category").toPandas(), on="item_id", how="left")
                  .sort_values("item_index")["category"].to_numpy(dtype=object))
    histories = [list(h) for h in rows["history_item_ids"]]
    targets = rows["target_item_ids"].map(lambda t: scorer.index.get(t[0], -1) if t is not None and len(t) else -1)
    has_targets = bool((targets >= 0).all())

    def rank(prompts):
        ranked, _ = scorer.top_k(scorer.user_vectors(prompts, histories), k)
        return ranked

    base_ranked = rank(rows["prompt_text"].tolist())
    out = []
    for name, instruction in [(BASE, base)] + [(f"variant {n + 1}", text) for n, text in enumerate(instructions)]:
        ranked = base_ranked if name == BASE else rank(swap_instruction(rows["prompt_text"].tolist(), base, instruction))
        row = {"variant": name, "instruction": instruction, "users": len(rows),
               f"overlap@{k}": mean_jaccard(base_ranked, ranked),
               "category_shift": category_shift(base_ranked, ranked, categories)}
        if has_targets:
            t = targets.to_numpy()
            row[f"recall@{k}"] = recall_at_k(ranked, t, k)
            row[f"ndcg@{k}"] = ndcg_at_k(ranked, t, k)
        out.append(row)
    frame = pd.DataFrame(out)
    if has_targets:
        for metric in (f"recall@{k}", f"ndcg@{k}"):
            frame[f"delta_{metric}"] = frame[metric] - frame[metric].iloc[0]
    log.info("prompt sensitivity ds=%s objective=%s: %d users, %d variants", ds, objective, len(rows), len(instructions))
    return frame
