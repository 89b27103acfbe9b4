"""Objectives: the default registry, config overrides with clear errors, and which events each rule picks."""

from __future__ import annotations

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recllm.config import ConfigError, PromptsConfig
from recllm.pipeline.objectives import DEFAULT_OBJECTIVES, example_template_version, objectives_from_config, scenario_objective

DEFAULT_NAMES = ["click", "purchase", "like", "long_tail", "serendipity", "search", "scenario:home_feed", "ctr"]


def names(config: PromptsConfig) -> list[str]:
    return [o.name for o in objectives_from_config(config)]


def test_defaults_are_enabled_in_order_with_readable_instructions():
    objectives = objectives_from_config(PromptsConfig())
    assert [o.name for o in objectives] == DEFAULT_NAMES
    assert all(o.instruction.endswith(".") and o.template_version == "v1" for o in objectives)
    assert [o.name for o in objectives if o.query_aware] == ["search"]
    assert objectives[0].instruction == "Recommend items this user will click next."


def test_overrides_change_instruction_version_and_the_enabled_set():
    config = PromptsConfig(
        ctr=False,
        objectives={
            "click": {"instruction": "Which items will they open?", "template_version": "c2"},
            "serendipity": {"enabled": False},
            "scenario:detail_page": {"enabled": True},
            "scenario:search": None,
            "ctr": {"instruction": "Will they click it?"},
        },
    )
    objectives = {o.name: o for o in objectives_from_config(config)}
    assert list(objectives) == ["click", "purchase", "like", "long_tail", "search", "scenario:home_feed",
                                "scenario:detail_page", "scenario:search"]
    assert objectives["click"].instruction == "Which items will they open?"
    assert example_template_version("v7", objectives["click"]) == "v7/c2"
    assert objectives["scenario:detail_page"].scenario == "detail_page"
    assert "detail page" in objectives["scenario:detail_page"].instruction


def test_ctr_follows_prompts_ctr():
    assert "ctr" in names(PromptsConfig(ctr=True)) and "ctr" not in names(PromptsConfig(ctr=False))
    with pytest.raises(ConfigError, match="prompts.ctr"):
        objectives_from_config(PromptsConfig(objectives={"ctr": {"enabled": False}}))


@pytest.mark.parametrize(
    "objectives, message",
    [
        ({"clik": {}, "purchse": {}}, r"objective\(s\) \['prompts.objectives.clik', 'prompts.objectives.purchse'\]"),
        ({"click": {"instructions": "x"}}, r"unknown key\(s\) \['prompts.objectives.click.instructions'\]"),
        ({"click": {"enabled": "yes"}}, "prompts.objectives.click.enabled: expected true or false"),
        ({"click": {"template_version": ""}}, "prompts.objectives.click.template_version: expected a non-empty"),
        ({"click": ["enabled"]}, "prompts.objectives.click: expected a mapping"),
        ({"click": {"instruction": "Pick <|item|> next"}}, "must not contain '\\|' or control tokens"),
        ({"scenario:home feed": {}}, "scenario names are"),
        ({n: {"enabled": False} for n in DEFAULT_NAMES[:-1]}, "every objective is disabled"),
    ],
)
def test_bad_overrides_are_refused_naming_them(objectives, message):
    with pytest.raises(ConfigError, match=message):
        objectives_from_config(PromptsConfig(objectives=objectives, ctr=False))


def test_each_rule_picks_its_positive_events(spark):
    rows = [  # id, event_type, value, query, scenario, item_category, item_is_head, history_categories, _ctr_label
        ("feed_click", "click", None, None, "home_feed", "shoes", True, ["shoes"], None),
        ("tail_click", "click", None, None, "detail_page", "shoes", False, ["shoes"], None),
        ("novel_click", "click", None, None, "detail_page", "books", True, ["shoes"], None),
        ("first_click", "click", None, None, "home_feed", "books", True, [], None),
        ("search_click", "click", None, "tents", "search", None, True, ["shoes"], None),
        ("purchase", "purchase", 20.0, None, "home_feed", "shoes", True, [], None),
        ("like", "like", None, None, "home_feed", "shoes", True, [], None),
        ("rating_4", "rating", 4.0, None, "home_feed", "shoes", True, [], None),
        ("rating_3", "rating", 3.5, None, "home_feed", "shoes", True, [], None),
        ("impression", "impression", None, None, "home_feed", "shoes", True, [], 0.0),
        ("rated_ctr", "rating", 2.0, None, "home_feed", "shoes", True, [], 0.0),  # prompts.rating_ctr_threshold set
    ]
    events = spark.createDataFrame(
        rows, "id string, event_type string, value double, query string, scenario string, item_category string, "
              "item_is_head boolean, history_categories array<string>, _ctr_label double"
    )
    registry = [*DEFAULT_OBJECTIVES, scenario_objective("detail_page")]
    picked = events.select("id", F.explode(F.array(*[F.when(o.positives(events), F.lit(o.name)) for o in registry]))
                           .alias("objective")).where(F.col("objective").isNotNull())
    expected = {
        "click": ["feed_click", "tail_click", "novel_click", "first_click", "search_click"],
        "purchase": ["purchase"],
        "like": ["like", "rating_4"],
        "long_tail": ["tail_click"],
        "serendipity": ["novel_click"],
        "search": ["search_click"],
        "scenario:home_feed": ["feed_click", "first_click"],
        "scenario:detail_page": ["tail_click", "novel_click"],
        "ctr": ["impression", "rated_ctr"],
    }
    want = spark.createDataFrame([(i, o) for o, ids in expected.items() for i in ids], "id string, objective string")
    assert_df_equality(picked, want, ignore_row_order=True, ignore_nullable=True)
