"""Prompt table: each user's behaviour history rendered into training, evaluation and inference examples.

A run for date `ds` rebuilds partition `ds` of `prompts` from every event with ds <= `ds`,
in Spark DataFrame operations only (windows over each user's events; nothing is collected).

* History at time t: the user's last `history_length` non-impression events (click,
  purchase, like, rating, search, tag) strictly before t, in time order, found among the
  `max_lookback_events` events (impressions included) that precede the example; an event
  landed in a later ds than the example's (a late arrival) is left out too. Each is an
  action phrase with ONE item slot, e.g. `rated 4 stars <|item|>`; `history_item_ids` and
  `history_actions` (event types) align 1:1 with the slots of `prompt_text`. A `search`
  record names the result the user clicked, so the events of that same search (same item
  and query) never see it in their history: it would give their target away.
* Training examples: one per positive event of each objective (`recllm.pipeline.objectives`):
  cutoff_ts = the event's ts, target_item_ids = [its item], label null.
* CTR examples (`prompts.ctr`, objective `ctr`): one per impression, target = the shown
  item; label 1.0 when the same user clicks the same item in the same scenario on the same
  ds at or after the impression and before that item's next impression there (a click
  credits the latest impression before it), else 0.0.
* Splits. `time`: examples whose event has ds among the last `test_days` days up to `ds`
  are test, the `valid_days` before them valid, earlier ones train. `leave_last_out`: per
  user and objective, the last example is test, the one before valid, the rest train.
* Inference (split `infer`): one example per objective (not ctr) for every user with any
  event up to `ds`; cutoff_ts = end of `ds` (next midnight UTC, exclusive), no target. The
  query-aware `search` objective uses the user's latest query and skips users without one.
  The scenario is the objective's own, else that of the example's event (for inference:
  the user's latest event; for search: the latest query's).
* Outside text (queries, profiles, scenarios) goes through `neutral`, and template
  literals are checked by `parse_template`, so only the renderer places control tokens.
  Queries and categories are cut to `max_text_chars` when read, so no row of the history
  window carries more, however large the upstream text.
* example_id: the first 32 hex digits of sha256("objective|user_id|cutoff micros|event_id"),
  with "infer" for the event of inference examples.
"""

from __future__ import annotations

import logging
import re
import string
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Mapping

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recllm.config import ConfigError, PromptsConfig, check_section
from recllm.lake import Lake
from recllm.model.tokens import BLANK_ENDS, CONTROL_PATTERN, ITEM_SLOT
from recllm.pipeline.objectives import CTR, LONG_TAIL_HEAD_FRACTION, Objective, example_template_version, objectives_from_config
from schemas import EVENTS, ITEMS, PROMPTS, USERS

log = logging.getLogger(__name__)

HISTORY_EVENT_TYPES = ("click", "purchase", "like", "rating", "search", "tag")
PLACEHOLDERS = ("instruction", "scenario", "profile", "query", "history")
TRAIN, VALID, TEST, INFER = "train", "valid", "test", "infer"
SPLITS = (TRAIN, VALID, TEST, INFER)
UNKNOWN = "unknown"
EMPTY_HISTORY = "none"
HISTORY_SEPARATOR = " "  # each phrase starts with its action word: a comma would cost a token per item
UNSAFE_LITERAL = re.compile(r"<\s*\||\|\s*>|^\s*\||\|\s*$")
"""Template text that could complete a control token with neighbouring text: `<|`, `|>`, or `|` at an edge."""


def neutral(text: Column, max_chars: int) -> Column:
    """Outside text made prompt-safe: bounded, control-token shapes defused, stray `|` made `/`.

    As `tokens.neutralize`, plus the `|` rewrite: with no `|` in outside text, no field can
    complete a control token with the template's or another field's characters.
    """
    defused = F.translate(F.regexp_replace(F.substring(text, 1, max_chars), CONTROL_PATTERN, "<$1>"), "|", "/")
    return F.regexp_replace(defused, BLANK_ENDS, "")


@dataclass(frozen=True)
class Template:
    """A parsed prompt template: its pieces in order, each (is_placeholder, literal text or placeholder name)."""

    pieces: tuple[tuple[bool, str], ...]

    def render(self, values: Mapping[str, Column]) -> Column:
        """The prompt as one Spark column: literals and placeholder columns concatenated."""
        return F.concat(*[values[v] if is_field else F.lit(v) for is_field, v in self.pieces])


def parse_template(template: str) -> Template:
    """Split a `{placeholder}` template into pieces; unknown or unsafe parts are refused."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"prompts.template is malformed ({e}): {template!r}") from None
    pieces: list[tuple[bool, str]] = []
    for literal, name, spec, conversion in parsed:
        if literal:
            if UNSAFE_LITERAL.search(literal) or re.search(CONTROL_PATTERN, literal):
                raise ConfigError(
                    f"prompts.template: text {literal!r} puts '|' next to '<', '>' or a placeholder, "
                    "which could form a control token like <|item|>"
                )
            pieces.append((False, literal))
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ConfigError(f"prompts.template: unknown placeholder {{{shown}}}; known: {list(PLACEHOLDERS)}")
        pieces.append((True, name))
    if [name for is_field, name in pieces if is_field].count("history") != 1:
        raise ConfigError("prompts.template must contain {history} exactly once (it holds the item slots)")
    return Template(tuple(pieces))


def build_prompts(lake: Lake, ds: str, config: PromptsConfig) -> DataFrame:
    """Every training, evaluation and inference example of run date `ds`, shaped as `prompts`."""
    check_section(config, "prompts")
    template = parse_template(config.template)
    objectives = objectives_from_config(config)
    events = context_events(lake, ds, config.max_text_chars, any(o.kind == CTR for o in objectives),
                            config.rating_ctr_threshold)
    anchors = with_history(events.unionByName(inference_anchors(events, ds), allowMissingColumns=True), config)
    anchors = anchors.withColumn("_objectives", objective_names(anchors, objectives))
    examples = (
        anchors.select("*", F.explode("_objectives").alias("objective"))
        .join(F.broadcast(objective_table(lake.spark, objectives, config.template_version)), "objective")
        .join(profiles(lake, config.max_text_chars), "user_id", "left")
    )
    examples = with_split(examples, ds, config)
    return examples.select(*output_columns(ds, template, config.max_text_chars))


def output_columns(ds: str, template: Template, max_chars: int) -> list[Column]:
    """The `prompts` columns of exploded, split examples, prompt text rendered."""
    query = F.when(
        F.col("_query_aware") & F.col("query").isNotNull(),
        F.concat(F.lit("Query: "), neutral(F.col("query"), max_chars), F.lit(". ")),
    ).otherwise(F.lit(""))
    scenario = F.coalesce(F.col("_fixed_scenario"), F.when(F.col("_query_aware"), F.col("_query_scenario")),
                          F.col("scenario"))
    scenario = F.coalesce(neutral(scenario, max_chars), F.lit(UNKNOWN))
    prompt = template.render(
        {
            "instruction": F.col("_instruction"),
            "scenario": scenario,
            "profile": F.coalesce(F.col("profile"), F.lit(UNKNOWN)),
            "query": query,
            "history": F.col("_history_text"),
        }
    )
    event_key = F.coalesce(F.col("event_id"), F.lit(INFER))
    example_id = F.substring(
        F.sha2(F.concat_ws("|", "objective", "user_id", F.unix_micros("ts").cast("string"), event_key), 256), 1, 32
    )
    return [
        F.lit(ds).alias("ds"),
        example_id.alias("example_id"),
        F.col("objective"),
        F.col("_template_version").alias("template_version"),
        F.col("user_id"),
        F.transform("_history", lambda h: h["item_id"]).alias("history_item_ids"),
        F.transform("_history", lambda h: h["event_type"]).alias("history_actions"),
        prompt.alias("prompt_text"),
        F.when(~F.col("_sentinel"), F.array("item_id")).alias("target_item_ids"),
        F.when(F.col("_kind") == CTR, F.col("_ctr_label")).cast("double").alias("label"),
        F.col("split"),
        F.col("ts").alias("cutoff_ts"),
    ]


def context_events(lake: Lake, ds: str, max_chars: int, ctr: bool, rating_threshold: float | None = None) -> DataFrame:
    """Events up to `ds` with the context rules and prompts need: category, head flag, CTR label, history phrase.

    Queries and categories are cut to `max_chars` as they are read: every history window
    row carries up to `max_lookback_events` of them, so an oversized one would be copied that often.
    """
    events = (lake.read(EVENTS.name).where(F.col("ds") <= ds).withColumnRenamed("ds", "_event_ds")
              .withColumn("query", F.substring("query", 1, max_chars)))
    categories = lake.read_or_empty(ITEMS.name).select(
        "item_id", F.substring("category", 1, max_chars).alias("item_category"))
    events = (
        events.join(categories, "item_id", "left")
        .join(head_items(events), "item_id", "left")
        .withColumn("item_is_head", F.coalesce(F.col("_head"), F.lit(False)))
        .drop("_head")
        .withColumn("_entry", history_phrase(max_chars))
        .withColumn("_sentinel", F.lit(False))
    )
    return with_ctr_labels(events, rating_threshold) if ctr else events.withColumn("_ctr_label", F.lit(None).cast("double"))


def head_items(events: DataFrame) -> DataFrame:
    """The popular head: items clicked more than the (1 - LONG_TAIL_HEAD_FRACTION) percentile of clicked items."""
    clicks = events.where(F.col("event_type") == "click").groupBy("item_id").agg(F.count("*").alias("_n"))
    cut = clicks.agg(F.percentile(F.col("_n"), 1 - LONG_TAIL_HEAD_FRACTION).alias("_cut"))
    return clicks.crossJoin(F.broadcast(cut)).where(F.col("_n") > F.col("_cut")).select(
        "item_id", F.lit(True).alias("_head")
    )


def with_ctr_labels(events: DataFrame, rating_threshold: float | None = None) -> DataFrame:
    """`_ctr_label` on impressions: 1.0 when a click credits them (same user, item, scenario, ds), else 0.0.

    With `rating_threshold`, ratings are labelled too (1.0 when at least the threshold): a
    like against a dislike stands in for a click where the data holds only ratings.
    """
    key = ("user_id", "item_id", "scenario", "_event_ds")
    is_impression = F.col("event_type") == "impression"
    in_time = Window.partitionBy(*key).orderBy("ts", F.when(is_impression, 0).otherwise(1), "event_id")
    events = events.withColumn("_impressions_so_far", F.sum(is_impression.cast("int")).over(in_time))
    clicked = F.max((F.col("event_type") == "click").cast("double")).over(
        Window.partitionBy(*key, "_impressions_so_far")
    )
    label = F.when(is_impression, clicked)
    if rating_threshold is not None:
        label = label.when(F.col("event_type") == "rating", (F.col("value") >= rating_threshold).cast("double"))
    return events.withColumn("_ctr_label", label).drop("_impressions_so_far")


def history_phrase(max_chars: int) -> Column:
    """How a non-impression event reads in a history: an action phrase with one item slot."""
    quoted = F.concat(F.lit('"'), neutral(F.col("query"), max_chars), F.lit('"'))
    stars = F.concat(F.regexp_replace(F.col("value").cast("string"), r"\.0$", ""), F.lit(" stars "))
    phrases = {
        "click": F.lit(f"clicked {ITEM_SLOT}"),
        "purchase": F.lit(f"bought {ITEM_SLOT}"),
        "like": F.lit(f"liked {ITEM_SLOT}"),
        "rating": F.concat(F.lit("rated "), F.coalesce(stars, F.lit("")), F.lit(ITEM_SLOT)),
        "search": F.concat(
            F.lit("searched "),
            F.coalesce(F.concat(F.lit("for "), quoted, F.lit(" ")), F.lit("")),
            F.lit(f"and clicked {ITEM_SLOT}"),
        ),
        "tag": F.concat(F.lit(f"tagged {ITEM_SLOT}"), F.coalesce(F.concat(F.lit(" as "), quoted), F.lit(""))),
    }
    return F.coalesce(*[F.when(F.col("event_type") == kind, text) for kind, text in phrases.items()])


def inference_anchors(events: DataFrame, ds: str) -> DataFrame:
    """One row per user at the end of `ds`: latest scenario, latest query and the scenario it came from."""
    latest = F.struct("ts", "event_id")
    has_query = F.col("event_type").isin("search", "click") & F.col("query").isNotNull()
    return events.groupBy("user_id").agg(
        F.max_by("scenario", latest).alias("scenario"),
        F.max_by("query", F.when(has_query, latest)).alias("query"),
        F.max_by("scenario", F.when(has_query, latest)).alias("_query_scenario"),
    ).select(
        "user_id",
        "scenario",
        "query",
        "_query_scenario",
        (F.to_timestamp(F.lit(ds)) + F.expr("INTERVAL 1 DAY")).alias("ts"),
        F.lit(ds).alias("_event_ds"),
        F.lit(True).alias("_sentinel"),
    )


def with_history(anchors: DataFrame, config: PromptsConfig) -> DataFrame:
    """`_history` (structs in time order), `_history_text` and `history_categories` of every row."""
    before = (
        Window.partitionBy("user_id")
        .orderBy("ts", "_sentinel", "event_id")
        .rowsBetween(-config.max_lookback_events, -1)
    )
    entry = F.struct(
        F.col("ts"), F.col("_event_ds").alias("ds"), F.col("item_id"), F.col("event_type"), F.col("query"),
        F.col("item_category").alias("category"), F.col("_entry").alias("text"),
    )
    recent = F.collect_list(F.when(F.col("event_type").isin(*HISTORY_EVENT_TYPES), entry)).over(before)
    anchors = anchors.withColumn("_recent", recent)
    kept = F.filter("_recent", lambda h: known_before(h) & ~F.coalesce(same_search(h), F.lit(False)))
    length = config.history_length
    history = F.slice(kept, F.greatest(F.size(kept) - length + 1, F.lit(1)), length)
    return (
        anchors.withColumn("_history", history)
        .drop("_recent")
        .withColumn(
            "_history_text",
            F.when(F.size("_history") == 0, F.lit(EMPTY_HISTORY)).otherwise(
                F.array_join(F.transform("_history", lambda h: h["text"]), HISTORY_SEPARATOR)
            ),
        )
        .withColumn("history_categories", F.filter(F.transform("_history", lambda h: h["category"]),
                                                   lambda c: c.isNotNull()))
    )


def known_before(entry: Column) -> Column:
    """The history entry happened strictly before the row and had landed by the row's own ds."""
    return (entry["ts"] < F.col("ts")) & (entry["ds"] <= F.col("_event_ds"))


def same_search(entry: Column) -> Column:
    """The history entry is the search record of the row's own search: same item and query."""
    return (entry["event_type"] == "search") & (entry["item_id"] == F.col("item_id")) & (
        entry["query"] == F.col("query")
    )


def objective_names(anchors: DataFrame, objectives: list[Objective]) -> Column:
    """Names of the objectives a row is an example of: positives for events, inference ones for users."""
    positive = F.array(*[F.when(o.positives(anchors), F.lit(o.name)) for o in objectives])
    inference = F.array(
        *[F.when(F.col("query").isNotNull(), F.lit(o.name)) if o.query_aware else F.lit(o.name)
          for o in objectives if o.kind != CTR]
        or [F.lit(None).cast("string")]
    )
    return F.filter(F.when(F.col("_sentinel"), inference).otherwise(positive), lambda n: n.isNotNull())


def objective_table(spark: SparkSession, objectives: list[Objective], template_version: str) -> DataFrame:
    """One row per objective with what rendering needs: instruction, version, query-awareness, scenario."""
    rows = [
        (o.name, o.instruction, example_template_version(template_version, o), o.query_aware, o.scenario, o.kind)
        for o in objectives
    ]
    return spark.createDataFrame(
        rows,
        "objective string, _instruction string, _template_version string, _query_aware boolean, "
        "_fixed_scenario string, _kind string",
    )


def profiles(lake: Lake, max_chars: int) -> DataFrame:
    """`profile` text per known user: its known fields of age, gender, country and profile text (no final period).

    Fields that are missing are left out rather than spelled "unknown", which would cost the
    model tokens in every prompt and tell it nothing; a user with no field at all has a null
    profile, rendered as "unknown" like a user without a row.
    """
    def field(label: str, value: Column) -> Column:
        return F.concat(F.lit(label + " "), F.nullif(neutral(value, max_chars), F.lit("")))

    about = F.nullif(F.regexp_replace(neutral(F.col("profile_text"), max_chars), r"[\s.]+$", ""), F.lit(""))
    known = F.concat_ws(
        ", ",
        field("age", F.col("age").cast("string")),
        field("gender", F.col("gender")),
        field("country", F.col("country")),
        about,
    )
    return lake.read_or_empty(USERS.name).select("user_id", F.nullif(known, F.lit("")).alias("profile"))


# -- rendering outside the prompt job (scoring's CTR and new-user prompts) ---------------------


def user_context(lake: Lake, ds: str, config: PromptsConfig) -> DataFrame:
    """Per user with any event up to `ds`: latest scenario, inference history text and item ids.

    Built by the prompt job's own functions, so the history reads
    exactly as in the user's inference prompts; only each user's last
    `max_lookback_events` events (the most a history looks at) go through the window.
    """
    events = context_events(lake, ds, config.max_text_chars, ctr=False)
    anchors = inference_anchors(events, ds)
    latest_first = Window.partitionBy("user_id").orderBy(F.desc("ts"), F.desc("event_id"))
    recent = (events.withColumn("_n", F.row_number().over(latest_first))
              .where(F.col("_n") <= config.max_lookback_events).drop("_n"))
    rows = with_history(recent.unionByName(anchors, allowMissingColumns=True), config)
    return rows.where(F.col("_sentinel")).select(
        "user_id",
        "scenario",
        F.col("_history_text").alias("history_text"),
        F.transform("_history", lambda h: h["item_id"]).alias("history_item_ids"),
    )


def render_prompts(rows: DataFrame, lake: Lake, config: PromptsConfig, objective: Objective,
                   scenario: Column, history_text: Column) -> DataFrame:
    """`rows` (with user_id) plus `prompt_text`: `objective`'s prompt, rendered as the prompt job does.

    `scenario` is the surface (the objective's own scenario wins); the profile comes from
    `users`; the query is empty (scoring never renders query-aware objectives).
    """
    template = parse_template(config.template)
    chars = config.max_text_chars
    surface = F.lit(objective.scenario) if objective.scenario else scenario
    rows = rows.join(profiles(lake, chars).withColumnRenamed("profile", "_profile"), "user_id", "left")
    text = template.render({
        "instruction": F.lit(objective.instruction),
        "scenario": F.coalesce(neutral(surface, chars), F.lit(UNKNOWN)),
        "profile": F.coalesce(F.col("_profile"), F.lit(UNKNOWN)),
        "query": F.lit(""),
        "history": history_text,
    })
    return rows.withColumn("prompt_text", text).drop("_profile")


def split_bounds(ds: str, config: PromptsConfig) -> tuple[str, str]:
    """First ds of the valid and of the test days under the time split."""
    end = date.fromisoformat(ds)
    test_start = end - timedelta(days=config.test_days - 1)
    valid_start = test_start - timedelta(days=config.valid_days)
    return valid_start.isoformat(), test_start.isoformat()


def with_split(examples: DataFrame, ds: str, config: PromptsConfig) -> DataFrame:
    """`split` of every example: infer for inference rows, else by time or leave-last-out."""
    if config.split == "time":
        valid_start, test_start = split_bounds(ds, config)
        day = F.col("_event_ds")
        split = F.when(day >= test_start, TEST).when(day >= valid_start, VALID).otherwise(TRAIN)
    else:
        latest_first = Window.partitionBy("user_id", "objective", "_sentinel").orderBy(
            F.desc("ts"), F.desc("event_id")
        )
        rank = F.row_number().over(latest_first)
        split = F.when(rank == 1, TEST).when(rank == 2, VALID).otherwise(TRAIN)
    return examples.withColumn("split", F.when(F.col("_sentinel"), F.lit(INFER)).otherwise(split))


def write_prompts(lake: Lake, df: DataFrame, ds: str) -> dict[tuple[str, str], int]:
    """Replace partition `ds` of `prompts` with `df`; returns and logs row counts per (split, objective)."""
    lake.overwrite_partition(PROMPTS.name, df, ds)
    rows = lake.read(PROMPTS.name, ds=ds).groupBy("split", "objective").count().collect()
    counts = {(r["split"], r["objective"]): r["count"] for r in rows}
    for (split, objective), n in sorted(counts.items()):
        log.info("prompts ds=%s split=%s objective=%s rows=%d", ds, split, objective, n)
    for split in SPLITS:
        log.info("prompts ds=%s split=%s rows=%d", ds, split, sum(n for (s, _), n in counts.items() if s == split))
    return counts


def run_prompts(lake: Lake, ds: str, config: PromptsConfig) -> dict[tuple[str, str], int]:
    """Build and write the prompts of `ds`; returns the row counts per (split, objective)."""
    return write_prompts(lake, build_prompts(lake, ds, config), ds)
