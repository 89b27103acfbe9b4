"""The synthetic generator: deterministic, schema-shaped, with known truth and known bad rows."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from recllm.data.frames import LandedDay
from recllm.data.synthetic import (
    CATEGORIES,
    CLICK_A,
    CLICK_B,
    EVENT_REASONS,
    ITEM_REASONS,
    USER_REASONS,
    SyntheticConfig,
    generate,
)
from schemas import EVENT_TYPES, EVENTS_RAW, ITEMS_RAW, USERS_RAW

TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
CONFIG = SyntheticConfig()


@pytest.fixture(scope="module")
def world():
    """The default synthetic world, generated once for the module."""
    return generate(CONFIG)


@pytest.fixture(scope="module")
def judged(world):
    """Every day's rows judged by the reference rules below."""
    days, _ = world
    return _judge_days(days)


def _parse_ts(text: str | None) -> datetime | None:
    """The timestamp, or None when it is not ISO 8601 UTC."""
    try:
        return datetime.strptime(text, TS_FORMAT)
    except (TypeError, ValueError):
        return None


def _number(text: str | None) -> float | None:
    """The number, or None when the text is not one."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _end_of_day(ds: str) -> datetime:
    """The first instant after the ds day."""
    return datetime.combine(date.fromisoformat(ds) + timedelta(days=1), datetime.min.time())


def _judge(rows: pd.DataFrame, key: str, rules) -> list[str | None]:
    """Reason each row breaks (None when good): null id, duplicate id, then the table's rules."""
    seen: set = set()
    reasons = []
    for row in rows.to_dict("records"):
        if row[key] is None or any(row[c] is None for c in ("user_id", "item_id") if c in row):
            reasons.append("null_id")
        elif row[key] in seen:
            reasons.append("duplicate_id")
        else:
            seen.add(row[key])
            reasons.append(rules(row))
    return reasons


def _user_rule(ds: str):
    """users_raw rules: parseable created_ts not after the day, integer age in 13..90."""

    def rule(row: dict) -> str | None:
        created = _parse_ts(row["created_ts"])
        if created is None:
            return "unparseable_ts"
        if created >= _end_of_day(ds):
            return "future_ts"
        if not str(row["age"]).isdigit():
            return "bad_type"
        return None if 13 <= int(row["age"]) <= 90 else "out_of_range"

    return rule


def _item_rule(ds: str):
    """items_raw rules: title present, parseable created_ts, numeric non-negative price."""

    def rule(row: dict) -> str | None:
        if row["title"] is None:
            return "missing_field"
        created = _parse_ts(row["created_ts"])
        if created is None:
            return "unparseable_ts"
        if created >= _end_of_day(ds):
            return "future_ts"
        price = _number(row["price"])
        if price is None:
            return "bad_type"
        return None if price > 0 else "out_of_range"

    return rule


def _event_rule(ds: str, users: set[str], items: set[str]):
    """events_raw rules: known type, ids and time; numeric in-range values only where expected."""

    def rule(row: dict) -> str | None:
        ts = _parse_ts(row["ts"])
        if row["event_type"] not in EVENT_TYPES:
            return "unknown_event_type"
        if ts is None:
            return "unparseable_ts"
        if ts >= _end_of_day(ds):
            return "future_ts"
        if row["user_id"] not in users:
            return "unknown_user"
        if row["item_id"] not in items:
            return "unknown_item"
        if row["event_type"] not in ("purchase", "rating"):
            return None if row["value"] is None else "bad_type"
        value = _number(row["value"])
        if value is None:
            return "bad_type"
        low, high = (0.5, 5.0) if row["event_type"] == "rating" else (0.0, float("inf"))
        return None if low <= value <= high else "out_of_range"

    return rule


def _judge_days(days: list[LandedDay]) -> list[dict[str, pd.DataFrame]]:
    """Per day and table, the raw rows with a `reason` column (None = accepted)."""
    users: set[str] = set()
    items: set[str] = set()
    judged = []
    for day in days:
        u = day.users_raw.assign(reason=_judge(day.users_raw, "user_id", _user_rule(day.ds)))
        i = day.items_raw.assign(reason=_judge(day.items_raw, "item_id", _item_rule(day.ds)))
        users |= set(u.loc[u.reason.isna(), "user_id"])
        items |= set(i.loc[i.reason.isna(), "item_id"])
        e = day.events_raw.assign(reason=_judge(day.events_raw, "event_id", _event_rule(day.ds, users, items)))
        judged.append({"users_raw": u, "items_raw": i, "events_raw": e})
    return judged


def _good(frame: pd.DataFrame) -> pd.DataFrame:
    """Accepted rows of a judged frame."""
    return frame[frame.reason.isna()].drop(columns="reason")


def _all_good_events(judged) -> pd.DataFrame:
    """Accepted events of every day."""
    return pd.concat([_good(day["events_raw"]) for day in judged], ignore_index=True)


def test_same_seed_gives_identical_frames(world):
    days, truth = world
    again, truth_again = generate(CONFIG)
    for a, b in zip(days, again):
        for table in ("events_raw", "items_raw", "users_raw"):
            pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table))
        assert a.expected_rejects == b.expected_rejects
    np.testing.assert_array_equal(truth.user_taste, truth_again.user_taste)
    np.testing.assert_array_equal(truth.item_quality, truth_again.item_quality)


def test_different_seed_gives_different_frames(world):
    days, _ = world
    other, _ = generate(replace(CONFIG, seed=CONFIG.seed + 1))
    assert not days[0].events_raw.equals(other[0].events_raw)
    assert not days[0].items_raw.equals(other[0].items_raw)


def test_frames_have_the_raw_schemas_columns_and_string_values(world):
    days, _ = world
    assert [d.ds for d in days] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    for day in days:
        for frame, schema in ((day.events_raw, EVENTS_RAW), (day.items_raw, ITEMS_RAW), (day.users_raw, USERS_RAW)):
            assert list(frame.columns) == schema.column_names
            assert (frame["ds"] == day.ds).all()
            for column in frame.columns:
                assert frame[column].dtype == object
                expected = list if column == "image_embedding" else str
                assert all(v is None or isinstance(v, expected) for v in frame[column]), (schema.name, column)


def test_every_reject_reason_is_injected_every_day(world):
    days, _ = world
    listed = {("events_raw", r) for r in EVENT_REASONS} | {("items_raw", r) for r in ITEM_REASONS}
    listed |= {("users_raw", r) for r in USER_REASONS}
    for day in days:
        assert set(day.expected_rejects) == listed
        assert all(n >= 1 for n in day.expected_rejects.values())


def test_expected_rejects_match_what_the_rules_reject(judged, world):
    days, _ = world
    for day, tables in zip(days, judged):
        found = Counter((table, r) for table, frame in tables.items() for r in frame.reason if r is not None)
        assert dict(found) == day.expected_rejects


def test_bad_rows_are_about_the_configured_fraction(world):
    days, _ = world
    events = pd.concat([d.events_raw for d in days])
    n_bad = sum(n for d in days for (table, _), n in d.expected_rejects.items() if table == "events_raw")
    assert 0.01 <= n_bad / len(events) <= 0.04


def test_no_bad_rows_when_the_fraction_is_zero():
    days, _ = generate(replace(CONFIG, bad_row_fraction=0.0, n_users=30, n_items=40))
    assert all(day.expected_rejects == {} for day in days)
    for tables in _judge_days(days):
        assert all(frame.reason.isna().all() for frame in tables.values())


def test_good_events_only_use_good_users_and_items(judged, world):
    _, truth = world
    good = _all_good_events(judged)
    assert set(good.user_id) <= set(truth.user_ids)
    assert set(good.item_id) <= set(truth.item_ids)
    good_users = pd.concat([_good(t["users_raw"]) for t in judged]).user_id
    good_items = pd.concat([_good(t["items_raw"]) for t in judged]).item_id
    assert sorted(set(good_users)) == sorted(truth.user_ids)
    assert sorted(set(good_items)) == sorted(truth.item_ids)


def test_good_events_are_ordered_per_user_with_unique_ids(judged):
    for tables in judged:
        good = _good(tables["events_raw"])
        assert good.event_id.is_unique
        for _, ts in good.groupby("user_id").ts:
            assert ts.is_monotonic_increasing and ts.is_unique
        assert set(good.scenario) == set(CONFIG.scenarios)
        values = good.event_type.isin(["purchase", "rating"])
        assert good.loc[values, "value"].notna().all() and good.loc[~values, "value"].isna().all()


def _labelled_impressions(judged) -> pd.DataFrame:
    """Feed impressions with a `clicked` flag from the matching click event."""
    good = _all_good_events(judged)
    keys = ["ds", "user_id", "item_id", "scenario"]
    clicks = good.loc[good.event_type == "click", keys].drop_duplicates().assign(clicked=True)
    impressions = good.loc[good.event_type == "impression", keys]
    merged = impressions.merge(clicks, on=keys, how="left")
    return merged.assign(clicked=merged.clicked.eq(True))


def test_clicks_follow_the_ground_truth_click_model(judged, world):
    _, truth = world
    shown = _labelled_impressions(judged)
    p = truth.click_probabilities(list(shown.user_id), list(shown.item_id))
    clicked = shown.clicked.to_numpy(dtype=bool)
    assert 0.10 <= clicked.mean() <= 0.30
    assert p[clicked].mean() > p[~clicked].mean() + 0.1
    assert abs(p.mean() - clicked.mean()) < 0.03


def test_impressions_are_not_chosen_by_taste(judged, world):
    _, truth = world
    shown = _labelled_impressions(judged)
    users = [truth.user_ids.index(u) for u in shown.user_id]
    items = [truth.item_ids.index(i) for i in shown.item_id]
    shown_taste = truth.user_taste[users, truth.item_category[items]]
    assert abs(shown_taste.mean() - 1 / CONFIG.n_categories) < 0.03


def test_click_probability_is_the_documented_formula(world):
    _, truth = world
    u, i = truth.user_ids[3], truth.item_ids[5]
    taste = truth.user_taste[3, truth.item_category[5]]
    logit = CLICK_A * taste * CONFIG.n_categories + truth.item_quality[5] + CLICK_B
    assert truth.click_probability(u, i) == pytest.approx(1 / (1 + np.exp(-logit)))


def test_user_tastes_are_distributions_concentrated_on_few_categories(world):
    _, truth = world
    np.testing.assert_allclose(truth.user_taste.sum(axis=1), 1.0)
    top_two = np.sort(truth.user_taste, axis=1)[:, -2:].sum(axis=1)
    assert np.median(top_two) > 0.8
    assert truth.user_taste.shape == (len(truth.user_ids), CONFIG.n_categories)
    assert truth.category_names == [c.name for c in CATEGORIES[: CONFIG.n_categories]]


def test_new_items_and_users_arrive_on_later_days_and_are_used_that_day(judged, world):
    _, truth = world
    seen_items = set(_good(judged[0]["items_raw"]).item_id)
    seen_users = set(_good(judged[0]["users_raw"]).user_id)
    assert len(seen_items) == CONFIG.n_items and len(seen_users) == CONFIG.n_users
    for tables in judged[1:]:
        new_items = set(_good(tables["items_raw"]).item_id) - seen_items
        new_users = set(_good(tables["users_raw"]).user_id) - seen_users
        assert len(new_items) == round(CONFIG.n_items * CONFIG.new_item_fraction_per_day)
        assert len(new_users) == round(CONFIG.n_users * CONFIG.new_user_fraction_per_day)
        events = _good(tables["events_raw"])
        assert new_items <= set(events.loc[events.event_type == "impression", "item_id"])
        assert new_users <= set(events.user_id)
        seen_items |= new_items
        seen_users |= new_users
    first_ds = dict(zip(truth.item_ids, truth.item_first_ds))
    assert {first_ds[i] for i in seen_items} == {"2026-01-01", "2026-01-02", "2026-01-03"}


def test_search_events_have_queries_in_the_words_of_the_clicked_items_category(judged, world):
    _, truth = world
    category_of = dict(zip(truth.item_ids, truth.item_category))
    good = _all_good_events(judged).sort_values(["user_id", "ts"], ignore_index=True)
    following = good.groupby("user_id")[["event_type", "item_id", "query"]].shift(-1)
    is_search = good.event_type == "search"
    searches = good[is_search]
    assert len(searches) > 0 and searches["query"].notna().all()
    assert (searches.scenario == "search").all()
    next_event = following[is_search]
    assert (next_event.event_type == "click").all()
    assert (next_event.item_id == searches.item_id).all() and (next_event["query"] == searches["query"]).all()
    for query, item in zip(searches["query"], searches.item_id):
        c = CATEGORIES[category_of[item]]
        vocabulary = " ".join([c.name, *c.adjectives, *c.nouns, *c.uses, "for"]).lower().split()
        assert set(query.split()) <= set(vocabulary), query


def test_items_have_readable_text_positive_prices_and_category_images(judged, world):
    _, truth = world
    items = pd.concat([_good(t["items_raw"]) for t in judged], ignore_index=True)
    assert items.title.str.match(r"^[A-Z][\w' -]+ \d$").all()
    assert all(cat in desc for cat, desc in zip(items.category, items.description))
    assert all(title.startswith(brand) for title, brand in zip(items.title, items.brand))
    assert (items.price.astype(float) > 0).all()
    has_image = items.image_embedding.notna()
    assert 0.03 < 1 - has_image.mean() < 0.2
    vectors = np.array(list(items.image_embedding[has_image]))
    assert vectors.shape[1] == CONFIG.image_dim
    categories = items.category[has_image].to_numpy()
    centroids = {c: vectors[categories == c].mean(axis=0) for c in set(categories)}
    nearest = [min(centroids, key=lambda c: np.linalg.norm(v - centroids[c])) for v in vectors]
    assert (np.array(nearest) == categories).mean() > 0.95


def test_the_size_knobs_scale_the_world():
    days, truth = generate(replace(CONFIG, n_users=20, n_items=40, n_days=2, n_categories=4))
    assert len(days) == 2
    assert len(truth.user_ids) == 21 and len(truth.item_ids) == 42
    assert truth.user_taste.shape == (21, 4)
    assert {r for (_, r) in days[1].expected_rejects} == set(EVENT_REASONS) | set(ITEM_REASONS)


def test_default_generation_is_fast():
    start = time.perf_counter()
    generate(CONFIG)
    assert time.perf_counter() - start < 2.0
