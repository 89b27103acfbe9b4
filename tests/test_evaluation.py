"""History masking (RecBole's full-sort protocol): rankings drop each row's history items, never its target;
the SASRec expert trains on the prompts table and is ranked beside the model as `sasrec`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import torch

from recllm.config import load_config
from recllm.data.synthetic import SyntheticConfig, generate
from recllm.evaluation.baselines import drop_excluded, popularity_ranking
from recllm.evaluation.evaluate import (EXPERT_NAME, evaluate, expert_top_k, history_exclusions, interactions_before_test,
                                        top_k_kept, train_expert)
from recllm.evaluation.metrics import ndcg_at_k, recall_at_k
from recllm.evaluation.sasrec import SASRec, SASRecConfig
from recllm.lake import Lake
from recllm.nightly import land_and_prepare
from recllm.training.driver import prepare_training
from recllm.training.loop import train_fn
from tests.helpers import hashed_text_embedding

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


def test_baselines_learn_only_from_retrieval_targets_before_the_test_period():
    prompts = pd.DataFrame({
        "user_id": ["u1", "u1", "u2", "u2", "u1"],
        "split": ["train", "valid", "train", "test", "train"],
        "target_item_ids": [["i1"], ["i2"], ["i1"], ["i9"], ["i5"]],
        "label": [None, None, None, None, 1.0],  # the last: a clicked impression (CTR row), not a retrieval target
    })
    before = interactions_before_test(prompts)
    assert before.values.tolist() == [["u1", "i1"], ["u1", "i2"], ["u2", "i1"]]  # no test-period i9


def test_the_expert_ranks_catalogue_indices_by_item_id_without_excluded_items():
    torch.manual_seed(0)
    expert = SASRec(SASRecConfig(n_items=3)).eval()  # its items a, b, c; the catalogue since gained x
    catalogue = ["c", "x", "a", "b"]
    ranked = expert_top_k(expert, ["a", "b", "c"], catalogue, [["a"], ["b", "c"]], 3, [[2], []])
    assert 1 not in ranked  # x: unknown to the expert
    assert ranked[0].tolist()[:2] in ([0, 3], [3, 0]) and ranked[0, 2] == -1  # a excluded: only b and c left
    assert sorted(ranked[1].tolist()) == [0, 2, 3]
    own = expert.top_k([[1, 2]], 3)[0]  # the expert's own indices for history [b, c]
    assert ranked[1].tolist() == [catalogue.index("abc"[i]) for i in own]


@pytest.mark.slow  # lands a synthetic shop and trains a tiny URM for evaluate to rank beside (minutes)
def test_the_sasrec_expert_trains_on_the_prompts_and_is_evaluated_as_sasrec(spark, tmp_path):
    lake = Lake(spark, root=str(tmp_path / "lake"), backend="deltars")
    config = load_config(overrides={
        "train": {"model_root": str(tmp_path / "models"), "epochs": 1, "max_train_examples": 200, "batch_size": 64},
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 500},
        "evaluate": {"expert_epochs": 3},
    })
    days, _ = generate(SyntheticConfig(seed=3, n_users=30, n_items=40, n_days=3))
    ds = land_and_prepare(lake, days, config, hashed_text_embedding)
    plan = prepare_training(lake, ds, config)
    train_fn(plan)

    expert = train_expert(lake, ds, config)
    assert {"path", "examples_per_s", "peak_memory_bytes"} <= set(expert)
    assert 1 <= expert["epochs"] <= 3 and expert["examples"] > 0 and expert["examples_per_s"] > 0
    assert SASRec.load(expert["path"]).config.n_items == lake.read("item_features").count()
    frame = evaluate(lake, ds, f"{plan.work_dir}/best", plan.model_version, expert_dir=expert["path"],
                     mask_history=True)
    rows = frame[frame["model"] == EXPERT_NAME]
    ranking = rows[rows["metric"].isin(["recall", "ndcg"])]
    assert set(ranking["k"]) == {10, 50} and ranking["value"].between(0, 1).all()
    assert set(rows["task"]) == set(frame.loc[frame["model"] == plan.model_version, "task"]) - {"ctr"}
