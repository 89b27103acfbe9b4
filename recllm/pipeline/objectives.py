"""Objectives: each is an instruction placed in the prompt plus a rule naming its positive events.

One model learns every objective at once (SPEC section 1, "Objectives are text"); an
objective is only the text that asks for it and the rule that picks its positives from
the event log. A rule is a function of the events-with-context frame that returns a
boolean Column; the frame has the `events` columns plus `CONTEXT_COLUMNS`.

Versioning: an example's `template_version` is `"{prompts.template_version}/{objective
template_version}"`, e.g. `v1/v1`; bump the global part when the template changes and the
objective's part when its instruction changes, so metrics can be compared per version.

Config (`prompts.objectives`) overrides any objective by name with `instruction`,
`template_version` and/or `enabled`. Naming any `scenario:<name>` objective (clicks on
that surface) enables it; `scenario:home_feed` is on by default. `ctr` follows
`prompts.ctr` rather than `enabled`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recllm.config import ConfigError, PromptsConfig
from recllm.model.tokens import CONTROL_PATTERN
from schemas import LIKED_MIN_RATING

PositiveRule = Callable[[DataFrame], Column]

CONTEXT_COLUMNS = {
    "item_category": "category of the event's item (null when the catalogue has none)",
    "item_is_head": "the item is in the popular head of clicks up to ds (see LONG_TAIL_HEAD_FRACTION)",
    "history_categories": "categories of the items in the event's history (the prompt's history)",
}
"""Columns a positives rule may use besides the `events` columns."""

LONG_TAIL_HEAD_FRACTION = 0.2
"""Roughly this share of clicked items is the popular head: those whose click count up to the
run date exceeds the exact (interpolated) 80th percentile of clicked items' counts; ties at
the cut count as tail."""

SCENARIO_PREFIX = "scenario:"
OVERRIDE_KEYS = ("instruction", "template_version", "enabled")
RETRIEVAL, CTR = "retrieval", "ctr"


@dataclass(frozen=True)
class Objective:
    """One task: its name, prompt instruction, version, positives rule and how prompts use it."""

    name: str
    instruction: str
    template_version: str
    positives: PositiveRule
    query_aware: bool = False
    scenario: str | None = None
    kind: str = RETRIEVAL
    enabled: bool = True


def _is(event_type: str) -> PositiveRule:
    return lambda df: df["event_type"] == event_type


def _labelled(df: DataFrame) -> Column:
    """CTR examples: every event the prompts job gave a click label (impressions; ratings when configured)."""
    return df["_ctr_label"].isNotNull()


def _click(df: DataFrame) -> Column:
    return df["event_type"] == "click"


def _like(df: DataFrame) -> Column:
    """A like, or a rating of at least `LIKED_MIN_RATING`."""
    return (df["event_type"] == "like") | ((df["event_type"] == "rating") & (df["value"] >= LIKED_MIN_RATING))


def _long_tail(df: DataFrame) -> Column:
    return _click(df) & ~df["item_is_head"]


def _serendipity(df: DataFrame) -> Column:
    """A click on an item whose category is absent from a non-empty history."""
    novel = ~F.array_contains(df["history_categories"], df["item_category"])
    return _click(df) & df["item_category"].isNotNull() & (F.size(df["history_categories"]) > 0) & novel


def _search(df: DataFrame) -> Column:
    return _click(df) & df["query"].isNotNull()


def scenario_objective(scenario: str, enabled: bool = False) -> Objective:
    """The `scenario:<name>` objective: clicks on that surface."""
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", scenario):
        raise ConfigError(f"objective {SCENARIO_PREFIX}{scenario!r}: scenario names are letters, digits, _ and -")
    return Objective(
        name=SCENARIO_PREFIX + scenario,
        instruction=f"Recommend items this user will click next in the {scenario.replace('_', ' ')} scenario.",
        template_version="v1",
        positives=lambda df: _click(df) & (df["scenario"] == scenario),
        scenario=scenario,
        enabled=enabled,
    )


DEFAULT_OBJECTIVES: tuple[Objective, ...] = (
    Objective("click", "Recommend items this user will click next.", "v1", _click),
    Objective("purchase", "Recommend items this user will buy next.", "v1", _is("purchase")),
    Objective("like", "Recommend items this user will like or rate highly.", "v1", _like),
    Objective("long_tail", "Recommend less popular items this user will click next.", "v1", _long_tail),
    Objective(
        "serendipity",
        "Recommend items from categories new to this user that they will click.",
        "v1",
        _serendipity,
    ),
    Objective(
        "search", "Recommend items this user will click for their search query.", "v1", _search, query_aware=True
    ),
    scenario_objective("home_feed", enabled=True),
    Objective(
        "ctr", "Predict whether this user will click the item shown.", "v1", _labelled, kind=CTR
    ),
)
"""The built-in objectives, in output order."""


def objectives_from_config(config: PromptsConfig) -> list[Objective]:
    """The enabled objectives after `prompts.objectives` overrides; unknown names or keys are refused."""
    overrides = config.objectives or {}
    registry = {o.name: o for o in DEFAULT_OBJECTIVES}
    unknown = sorted(n for n in overrides if n not in registry and not str(n).startswith(SCENARIO_PREFIX))
    if unknown:
        raise ConfigError(
            f"unknown objective(s) {[f'prompts.objectives.{n}' for n in unknown]}; "
            f"known: {sorted(registry)} and {SCENARIO_PREFIX}<name>"
        )
    extra = sorted(n for n in overrides if n not in registry)
    objectives = list(registry.values()) + [scenario_objective(n[len(SCENARIO_PREFIX):], enabled=True) for n in extra]
    chosen = [_override(o, overrides.get(o.name), config.ctr) for o in objectives]
    chosen = [o for o in chosen if o.enabled]
    if not chosen:
        raise ConfigError("prompts.objectives: every objective is disabled; enable at least one")
    return chosen


def _override(objective: Objective, values: dict | None, ctr: bool) -> Objective:
    """`objective` with one config entry applied, each value checked."""
    where = f"prompts.objectives.{objective.name}"
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of {list(OVERRIDE_KEYS)}, got {values!r}")
    unknown = sorted(set(values) - set(OVERRIDE_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {[f'{where}.{k}' for k in unknown]}; known: {list(OVERRIDE_KEYS)}")
    for key in ("instruction", "template_version"):
        if key in values and (not isinstance(values[key], str) or not values[key].strip()):
            raise ConfigError(f"{where}.{key}: expected a non-empty string, got {values[key]!r}")
    if "enabled" in values and not isinstance(values["enabled"], bool):
        raise ConfigError(f"{where}.enabled: expected true or false, got {values['enabled']!r}")
    if objective.kind == CTR and "enabled" in values:
        raise ConfigError(f"{where}.enabled: CTR examples are switched by prompts.ctr")
    if re.search(CONTROL_PATTERN, values.get("instruction", "")) or "|" in values.get("instruction", ""):
        raise ConfigError(f"{where}.instruction: must not contain '|' or control tokens like <|item|>")
    changed = replace(objective, **values)
    return replace(changed, enabled=ctr) if objective.kind == CTR else changed


def example_template_version(template_version: str, objective: Objective) -> str:
    """The version recorded on an example: global template version / objective version."""
    return f"{template_version}/{objective.template_version}"
