"""Prompt sensitivity: the same users under alternative instructions; deltas, overlap and category shift."""

from __future__ import annotations

import numpy as np
import pytest

from recllm.config import load_config
from recllm.data.synthetic import SyntheticConfig, generate
from recllm.evaluation.sensitivity import category_shift, mean_jaccard, prompt_sensitivity, swap_instruction
from recllm.lake import Lake
from recllm.nightly import land_and_prepare
from recllm.training.driver import prepare_training
from recllm.training.loop import train_fn
from tests.helpers import hashed_text_embedding


def test_overlap_and_category_shift_by_hand():
    a = np.array([[0, 1, 2], [3, 4, -1]])
    b = np.array([[0, 1, 5], [3, 4, -1]])
    assert mean_jaccard(a, b) == pytest.approx((2 / 4 + 1.0) / 2)
    categories = np.array(["x", "x", "y", "y", "z", "z"], dtype=object)
    # a: x x y y z -> x .4 y .4 z .2; b: x x z y z -> x .4 y .2 z .4; TV = (0 + .2 + .2) / 2
    assert category_shift(a, b, categories) == pytest.approx(0.2)
    assert category_shift(a, a, categories) == 0.0


def test_swapping_an_instruction_keeps_the_rest_and_refuses_a_foreign_prompt():
    prompts = ["Recommend items. Scenario: feed. History: clicked <|item|>"]
    assert swap_instruction(prompts, "Recommend items.", "Pick things.") == [
        "Pick things. Scenario: feed. History: clicked <|item|>"]
    assert swap_instruction(prompts, "Recommend items.", "Pick <|item|> things.") == [
        "Pick <item> things. Scenario: feed. History: clicked <|item|>"]  # no smuggled slot
    with pytest.raises(ValueError, match="does not start with"):
        swap_instruction(prompts, "Suggest items.", "x")


def test_alternative_instructions_are_scored_for_the_same_users(spark, tmp_path):
    lake = Lake(spark, root=str(tmp_path / "lake"), backend="deltars")
    config = load_config(overrides={
        "train": {"model_root": str(tmp_path / "models"), "epochs": 1, "max_train_examples": 200, "batch_size": 64},
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 500},
    })
    days, _ = generate(SyntheticConfig(seed=3, n_users=30, n_items=40, n_days=3))
    ds = land_and_prepare(lake, days, config, hashed_text_embedding)
    plan = prepare_training(lake, ds, config)
    train_fn(plan)
    model_dir = f"{plan.work_dir}/best"

    frame = prompt_sensitivity(lake, ds, model_dir, "click", ["Suggest what this shopper opens next.",
                                                             "Recommend items this user will click next."],
                               config.prompts, k=5)
    assert frame["variant"].tolist() == ["configured", "variant 1", "variant 2"]
    assert frame.loc[0, "overlap@5"] == 1.0 and frame.loc[0, "category_shift"] == 0.0
    assert frame.loc[2, "overlap@5"] == 1.0 and frame.loc[2, "delta_recall@5"] == 0.0  # the configured text again
    assert 0.0 <= frame.loc[1, "overlap@5"] <= 1.0 and 0.0 <= frame.loc[1, "category_shift"] <= 1.0
    assert {"recall@5", "ndcg@5", "delta_recall@5", "delta_ndcg@5"} <= set(frame.columns)
    assert (frame["users"] == frame.loc[0, "users"]).all() and frame.loc[0, "users"] > 0
    with pytest.raises(ValueError, match="not enabled"):
        prompt_sensitivity(lake, ds, model_dir, "nope", ["x"], config.prompts)
