"""Prompts: exact examples on a hand-made log; safety, overrides, reruns, and a synthetic world."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime

import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from jobs import prompts as prompts_job
from recllm.config import ConfigError, PromptsConfig
from recllm.data.synthetic import SyntheticConfig, generate
from recllm.lake import Lake
from recllm.model.tokens import BLANK_ENDS as BLANK_ENDS_PATTERN
from recllm.model.tokens import CONTROL_PATTERN, ITEM_SLOT
from recllm.pipeline.prompts import SPLITS, build_prompts, parse_template, profiles, write_prompts
from schemas import EVENTS, EVENTS_RAW, ITEMS, ITEMS_RAW, PROMPTS, USERS, USERS_RAW

DS = "2026-01-03"
QUERY = "sci-fi <|um|> novels <|eos|>"
PROFILE = "runner <|item|> and < | lm | > fan <|eos|> |x. "
END_OF_DS = datetime(2026, 1, 4)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def event(event_id, user, item, kind, when, scenario="home_feed", query=None, value=None, landed=None):
    return (event_id, user, item, kind, scenario, query, value, ts(when), landed or when[:10])


EVENT_ROWS = [
    event("e01", "u1", "i1", "impression", "2026-01-01 10:00:00"),
    event("e02", "u1", "i1", "click", "2026-01-01 10:01:00"),
    event("e03", "u1", "i1", "purchase", "2026-01-01 10:02:00", value=50.0),
    event("e04", "u1", "i3", "impression", "2026-01-01 10:05:00"),
    event("e05", "u1", "i3", "search", "2026-01-02 09:00:00", "search", QUERY),
    event("e06", "u1", "i3", "click", "2026-01-02 09:01:00", "search", QUERY),
    event("e07", "u1", "i3", "rating", "2026-01-02 09:02:00", "search", QUERY, 4.0),
    event("e08", "u1", "i2", "impression", "2026-01-02 11:00:00", "detail_page"),
    event("e09", "u1", "i2", "click", "2026-01-02 11:05:00", "detail_page"),
    event("e10", "u1", "i5", "like", "2026-01-03 08:00:00"),
    event("e11", "u1", "i4", "impression", "2026-01-03 08:30:00"),
    event("e12", "u1", "i4", "impression", "2026-01-03 08:40:00"),
    event("e13", "u1", "i4", "click", "2026-01-03 08:45:00"),
    event("e20", "u2", "i6", "click", "2026-01-03 10:00:00"),
    event("e21", "u2", "i1", "impression", "2026-01-03 10:10:00"),
    event("e22", "u2", "i1", "click", "2026-01-03 10:20:00", "detail_page"),
    event("e30", "u1", "i6", "like", "2026-01-01 09:00:00", landed=DS),  # a late arrival
]
CATEGORIES = {"i1": "shoes", "i2": "shoes", "i3": "books", "i4": "books", "i5": "lamps", "i6": "lamps"}

U1_DAY1 = [("i1", "click"), ("i1", "purchase")]
U1_DAY2 = [*U1_DAY1, ("i3", "search"), ("i3", "click"), ("i3", "rating"), ("i2", "click")]
LATE = [("i6", "like")]
U1_ALL = [*LATE, *U1_DAY2, ("i5", "like"), ("i4", "click")]
HISTORY_BEFORE = {
    "e01": [], "e02": [], "e03": U1_DAY1[:1], "e04": U1_DAY1,
    "e06": U1_DAY1,  # the search record e05 is this click's own search: left out
    "e07": [*U1_DAY1, ("i3", "click")],
    "e08": U1_DAY2[:5], "e09": U1_DAY2[:5], "e10": LATE + U1_DAY2,
    "e11": U1_ALL[:-1], "e12": U1_ALL[:-1], "e13": U1_ALL[:-1], "e30": [],
    "e20": [], "e21": [("i6", "click")], "e22": [("i6", "click")],
}
TRAINING = [  # objective, event, split, label
    *[("click", e, s, None) for e, s in [("e02", "train"), ("e06", "valid"), ("e09", "valid"), ("e13", "test"),
                                         ("e20", "test"), ("e22", "test")]],
    ("purchase", "e03", "train", None),
    ("like", "e07", "valid", None), ("like", "e10", "test", None), ("like", "e30", "test", None),
    *[("long_tail", e, s, None) for e, s in [("e06", "valid"), ("e09", "valid"), ("e13", "test"), ("e20", "test")]],
    ("serendipity", "e06", "valid", None), ("serendipity", "e22", "test", None),
    ("search", "e06", "valid", None),
    *[("scenario:home_feed", e, s, None) for e, s in [("e02", "train"), ("e13", "test"), ("e20", "test")]],
    *[("ctr", e, s, y) for e, s, y in [("e01", "train", 1.0), ("e04", "train", 0.0), ("e08", "valid", 1.0),
                                       ("e11", "test", 0.0), ("e12", "test", 1.0), ("e21", "test", 0.0)]],
]
INFERENCE_OBJECTIVES = ["click", "purchase", "like", "long_tail", "serendipity", "search", "scenario:home_feed"]
COMPARED = ["objective", "user_id", "split", "cutoff_ts", "target_item_ids", "label", "history_item_ids",
            "history_actions"]


def write_log(lake: Lake) -> None:
    """The hand-made log straight into the typed tables."""
    spark = lake.spark
    lake.append(EVENTS.name, spark.createDataFrame(EVENT_ROWS, EVENTS.spark))
    created = ts("2025-12-01 00:00:00")
    items = [(i, f"<|item|> {i}", None, c, None, None, None, created, "2026-01-01") for i, c in CATEGORIES.items()]
    lake.append(ITEMS.name, spark.createDataFrame(items, ITEMS.spark))
    lake.append(USERS.name, spark.createDataFrame([("u1", 30, "female", "DE", PROFILE, created, "2026-01-01")],
                                                  USERS.spark))


def expected_frame(spark):
    """The expected examples of the default config, as a frame of COMPARED columns."""
    by_id = {r[0]: r for r in EVENT_ROWS}

    def row(objective, user, split, cutoff, target, label, history):
        return (objective, user, split, cutoff, target, label, [i for i, _ in history], [a for _, a in history])

    rows = [row(o, by_id[e][1], s, by_id[e][7], [by_id[e][2]], y, HISTORY_BEFORE[e]) for o, e, s, y in TRAINING]
    rows += [row(o, "u1", "infer", END_OF_DS, None, None, U1_ALL) for o in INFERENCE_OBJECTIVES]
    rows += [row(o, "u2", "infer", END_OF_DS, None, None, [("i6", "click"), ("i1", "click")])
             for o in INFERENCE_OBJECTIVES if o != "search"]
    return spark.createDataFrame(rows, StructType([PROMPTS.spark[c] for c in COMPARED]))


@pytest.fixture(scope="module")
def log_lake(spark, tmp_path_factory) -> Lake:
    lake = Lake(spark, root=str(tmp_path_factory.mktemp("prompts") / "lake"), backend="deltars")
    write_log(lake)
    return lake


@pytest.fixture(scope="module")
def written(log_lake):
    """Counts of the default run, written once; the partition is read back by the tests."""
    return write_prompts(log_lake, build_prompts(log_lake, DS, PromptsConfig()), DS)


@pytest.fixture(scope="module")
def rows(log_lake, written) -> pd.DataFrame:
    return log_lake.read(PROMPTS.name, ds=DS).toPandas()


def by_key(rows: pd.DataFrame, objective: str, user: str, cutoff: str | datetime) -> pd.Series:
    match = rows[(rows.objective == objective) & (rows.user_id == user) & (rows.cutoff_ts == pd.Timestamp(cutoff))]
    assert len(match) == 1
    return match.iloc[0]


def test_examples_histories_targets_labels_and_splits_are_exact(log_lake, written, spark):
    actual = log_lake.read(PROMPTS.name, ds=DS).select(*COMPARED)
    assert_df_equality(actual, expected_frame(spark), ignore_row_order=True, ignore_nullable=True)


def test_counts_are_reported_per_split_and_objective(written):
    assert written[("valid", "click")] == 2 and written[("test", "ctr")] == 3
    assert written[("infer", "search")] == 1 and written[("infer", "click")] == 2
    assert sum(written.values()) == len(TRAINING) + 13


def test_rendered_prompt_of_a_search_example(rows):
    search = by_key(rows, "search", "u1", "2026-01-02 09:01:00")
    assert search.prompt_text == (
        "Recommend items this user will click for their search query. Scenario: search. "
        "User: age 30, gender female, country DE, runner <item> and <lm> fan <eos> /x. "
        "Query: sci-fi <um> novels <eos>. History: clicked <|item|> bought <|item|>"
    )
    assert search.template_version == "v1/v1"


def test_history_phrases_and_a_user_without_profile(rows):
    u1 = by_key(rows, "click", "u1", END_OF_DS)
    assert u1.prompt_text.endswith(
        'History: liked <|item|> clicked <|item|> bought <|item|> '
        'searched for "sci-fi <um> novels <eos>" and clicked <|item|> '
        "clicked <|item|> rated 4 stars <|item|> clicked <|item|> liked <|item|> clicked <|item|>"
    )
    assert "Scenario: home_feed." in u1.prompt_text and "Query:" not in u1.prompt_text
    u2 = by_key(rows, "click", "u2", END_OF_DS)
    assert "Scenario: detail_page. User: unknown. History:" in u2.prompt_text
    first = by_key(rows, "click", "u1", "2026-01-01 10:01:00")
    assert first.prompt_text.endswith("History: none")


def test_a_profile_names_only_the_fields_a_user_has(spark, tmp_path):
    lake = Lake(spark, root=str(tmp_path / "lake"), backend="deltars")
    created = ts("2025-12-01 00:00:00")
    users = [("full", 30, "female", "DE", "runner.", created, "2026-01-01"),
             ("country only", None, " ", "FR", None, created, "2026-01-01"),
             ("nothing", None, None, None, "  ", created, "2026-01-01"),
             ("blank in other ways", None, "\u00a0", "\t", "\u200b\u3000", created, "2026-01-01")]
    lake.append(USERS.name, spark.createDataFrame(users, USERS.spark))
    got = {r.user_id: r.profile for r in profiles(lake, 200).collect()}
    assert got == {"full": "age 30, gender female, country DE, runner", "country only": "country FR", "nothing": None,
                   "blank in other ways": None}


def test_spark_and_python_agree_on_blank_for_every_character(spark):
    """One notion of blank: ingest's and the prompts' Spark regex and `tokens.is_blank` judge alike."""
    import sys

    from recllm.model.tokens import BLANK_CHARACTER, is_blank, strip_blank

    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    frame = spark.createDataFrame([(c, f"{c}x{c}") for c in chars], "c string, padded string")
    got = frame.select("c", F.col("c").rlike(rf"\A{BLANK_CHARACTER}*\z").alias("blank"),
                       F.regexp_replace("padded", BLANK_ENDS_PATTERN, "").alias("stripped")).collect()
    spark_blank = {r.c for r in got if r.blank}
    python_blank = {c for c in chars if is_blank(c)}
    # Java 17's tables are Unicode 13: the two format characters Unicode 14 added are unknown to it
    assert spark_blank ^ python_blank <= {"\u0890", "\u0891"}
    assert {"\t", "\u00a0", "\u200b", "\u3000", "\ufeff", "\x00"} <= python_blank and "x" not in python_blank
    differ = [(r.c, r.stripped) for r in got if r.stripped != strip_blank(f"{r.c}x{r.c}")]
    assert {c for c, _ in differ} <= {"\u0890", "\u0891"}, differ[:5]


def test_inference_search_uses_the_latest_query_and_its_scenario(rows):
    search = by_key(rows, "search", "u1", END_OF_DS)
    assert "Scenario: search." in search.prompt_text and "Query: sci-fi <um> novels <eos>. " in search.prompt_text


def test_slots_align_with_history_and_outside_text_forges_no_control_token(rows):
    for r in rows.itertuples():
        assert r.prompt_text.count(ITEM_SLOT) == len(r.history_item_ids) == len(r.history_actions)
        assert re.findall(CONTROL_PATTERN, r.prompt_text) == ["item"] * len(r.history_item_ids)


def test_no_history_holds_its_example_or_anything_later(rows):
    events = pd.DataFrame(EVENT_ROWS, columns=EVENTS.column_names)
    for r in rows.itertuples():
        seen = events[(events.user_id == r.user_id) & (events.ts < r.cutoff_ts) & (events.event_type != "impression")]
        assert set(r.history_item_ids) <= set(seen.item_id)
    assert "i3" not in list(by_key(rows, "click", "u1", "2026-01-02 09:01:00").history_item_ids)


def test_example_ids_are_unique_and_rerunning_the_job_replaces_the_partition(log_lake, written, tmp_path):
    snapshot = log_lake.read(PROMPTS.name, ds=DS).toPandas()
    assert snapshot.example_id.is_unique and snapshot.example_id.str.fullmatch("[0-9a-f]{32}").all()
    config = tmp_path / "recllm.yaml"
    config.write_text(f"lake:\n  root: {log_lake.root}\n  backend: deltars\n")
    prompts_job.cli(["--ds", DS, "--config", str(config)])
    after = log_lake.read(PROMPTS.name, ds=DS)
    assert_df_equality(after, log_lake.spark.createDataFrame(snapshot, PROMPTS.spark), ignore_row_order=True,
                       ignore_nullable=True, ignore_metadata=True)


def test_leave_last_out_split_with_a_short_bounded_history(log_lake):
    config = PromptsConfig(split="leave_last_out", history_length=2, max_lookback_events=3, ctr=False)
    rows = build_prompts(log_lake, DS, config).toPandas()
    clicks = rows[rows.objective == "click"].sort_values(["user_id", "cutoff_ts"])
    assert list(clicks.split) == ["train", "train", "valid", "test", "infer", "valid", "test", "infer"]
    e06 = by_key(rows, "click", "u1", "2026-01-02 09:01:00")
    assert list(e06.history_item_ids) == ["i1"] and list(e06.history_actions) == ["purchase"]  # e02 is 4 rows back
    e09 = by_key(rows, "click", "u1", "2026-01-02 11:05:00")
    assert list(e09.history_item_ids) == ["i3", "i3"] and list(e09.history_actions) == ["click", "rating"]
    assert list(by_key(rows, "click", "u1", END_OF_DS).history_item_ids) == ["i4"]  # lookback: e11, e12, e13
    assert "ctr" not in set(rows.objective)


def test_template_and_objective_overrides_change_text_versions_and_the_set(log_lake):
    config = PromptsConfig(
        template="[{scenario}] {instruction} {query}-- {profile} -- {history}",
        template_version="v2",
        max_text_chars=6,
        objectives={
            "click": {"instruction": "What will they open?", "template_version": "c3"},
            "purchase": {"enabled": False},
            "scenario:detail_page": {},
        },
    )
    rows = build_prompts(log_lake, DS, config).toPandas()
    assert "purchase" not in set(rows.objective)
    detail = rows[rows.objective == "scenario:detail_page"]
    assert sorted(detail.split) == ["infer", "infer", "test", "valid"]
    click = by_key(rows, "click", "u1", "2026-01-02 09:01:00")
    assert click.template_version == "v2/c3"
    assert click.prompt_text == "[search] What will they open? -- age 30, gender female, country DE, runner -- " \
                                "clicked <|item|> bought <|item|>"
    search = by_key(rows, "search", "u1", "2026-01-02 09:01:00")
    assert "Query: sci-fi. --" in search.prompt_text and search.template_version == "v2/v1"


@pytest.mark.parametrize(
    "template, message",
    [
        ("{instruction} {histroy}", r"unknown placeholder \{histroy\}"),
        ("{instruction} {history:>10}", r"unknown placeholder \{history:>10\}"),
        ("{instruction}", r"\{history\} exactly once"),
        ("{history} {history}", r"\{history\} exactly once"),
        ("{instruction} <|{scenario}|> {history}", "could form a control token"),
        ("{scenario}|item|{profile} {history}", "could form a control token"),
        ("{history} <|um|>", "could form a control token"),
        ("{history", "malformed"),
    ],
)
def test_bad_templates_are_refused_with_a_clear_error(template, message):
    with pytest.raises(ConfigError, match=message):
        parse_template(template)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"template": "{who} {history}"}, r"unknown placeholder \{who\}"),
        ({"objectives": {"clik": {}}}, "prompts.objectives.clik"),
        ({"split": "random"}, "prompts.split"),
        ({"history_length": 0}, "prompts.history_length"),
    ],
)
def test_bad_config_fails_before_any_table_is_read(spark, tmp_path, change, message):
    empty = Lake(spark, root=str(tmp_path / "empty"), backend="deltars")
    with pytest.raises(ConfigError, match=message):
        build_prompts(empty, DS, replace(PromptsConfig(), **change))


def synthetic_lake(spark, root: str) -> tuple[Lake, list[str]]:
    """A lake holding a small clean synthetic world, written straight into the typed tables."""
    days, _ = generate(SyntheticConfig(n_users=30, n_items=40, n_days=3, bad_row_fraction=0.0))
    lake = Lake(spark, root=root, backend="deltars")

    def raw(contract, frame_of):
        return spark.createDataFrame(pd.concat([frame_of(d) for d in days])[contract.column_names], contract.spark)

    events = raw(EVENTS_RAW, lambda d: d.events_raw).select(
        *[F.col(c) for c in ("event_id", "user_id", "item_id", "event_type", "scenario", "query")],
        F.col("value").cast("double"), F.col("ts").cast("timestamp"), "ds",
    )
    items = raw(ITEMS_RAW, lambda d: d.items_raw).withColumn("price", F.col("price").cast("double"))
    users = raw(USERS_RAW, lambda d: d.users_raw).withColumn("age", F.col("age").cast("int"))
    lake.append(EVENTS.name, events)
    lake.append(ITEMS.name, items.withColumn("created_ts", F.col("created_ts").cast("timestamp")))
    lake.append(USERS.name, users.withColumn("created_ts", F.col("created_ts").cast("timestamp")))
    return lake, [d.ds for d in days]


def expected_history(events: pd.DataFrame, user: str, cutoff, item: str, query, length: int) -> list[str]:
    """Independent oracle: the last `length` non-impression items before `cutoff`, minus the own search record."""
    mine = events[(events.user_id == user) & (events.ts < cutoff) & (events.event_type != "impression")]
    own_search = (mine.event_type == "search") & (mine.item_id == item) & (mine["query"] == query)
    return list(mine[~own_search].sort_values(["ts", "event_id"]).item_id)[-length:]


def test_synthetic_world_gives_plausible_examples_in_every_split(spark, tmp_path):
    lake, days = synthetic_lake(spark, str(tmp_path / "lake"))
    counts = write_prompts(lake, build_prompts(lake, days[-1], PromptsConfig(history_length=5)), days[-1])
    per_split = {s: sum(n for (split, _), n in counts.items() if split == s) for s in SPLITS}
    assert all(n > 0 for n in per_split.values()), per_split
    events = lake.read(EVENTS.name).toPandas()
    kinds = events.event_type.value_counts()
    total = lambda objective: sum(n for (s, o), n in counts.items() if o == objective and s != "infer")  # noqa: E731
    assert total("click") == kinds["click"] and total("ctr") == kinds["impression"]
    assert total("purchase") == kinds["purchase"]
    assert total("search") == ((events.event_type == "click") & events["query"].notna()).sum()
    assert 0 < total("long_tail") < total("click") and 0 < total("serendipity") < total("click")
    n_users = events.user_id.nunique()
    assert counts[("infer", "click")] == n_users and 0 < counts[("infer", "search")] <= n_users

    rows = lake.read(PROMPTS.name, ds=days[-1]).toPandas()
    ctr = rows[rows.objective == "ctr"]
    assert 0.05 < ctr.label.mean() < 0.5
    clicks = events[events.event_type == "click"].set_index(["user_id", "ts"])
    for r in rows[(rows.objective == "click") & (rows.split != "infer")].itertuples():
        anchor = clicks.loc[(r.user_id, r.cutoff_ts)]
        want = expected_history(events, r.user_id, r.cutoff_ts, anchor.item_id, anchor["query"], 5)
        assert list(r.history_item_ids) == want
        assert list(r.target_item_ids) == [anchor.item_id]
