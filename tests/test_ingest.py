"""Ingest: every kind of bad row is quarantined with its reason, counts reconcile, reruns change nothing."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recllm.config import IngestConfig
from recllm.data.landing import land_frame
from recllm.pipeline.ingest import REASONS, run_ingest
from schemas import EVENTS_RAW, ITEMS_RAW, USERS_RAW

DS = "2026-01-02"
OK_TS = "2026-01-02T10:00:00Z"


def item(item_id, title="Trail shoe", price="10.5", created=OK_TS):
    return dict(item_id=item_id, title=title, description="d", category="shoes", brand="Acme", price=price,
                image_embedding=[0.1, 0.2], created_ts=created, ds=DS)


def user(user_id, age="30", created=OK_TS):
    return dict(user_id=user_id, age=age, gender=None, country="DE", profile_text=None, created_ts=created, ds=DS)


def event(event_id, user_id="u1", item_id="i1", event_type="click", value=None, ts=OK_TS, query=None):
    return dict(event_id=event_id, user_id=user_id, item_id=item_id, event_type=event_type, scenario="home_feed",
                query=query, value=value, ts=ts, ds=DS)


ITEM_ROWS = {
    None: [item("i1"), item("i2", price=None)],
    "null_id": [item(None), item("\u00a0")],
    "missing_field": [item("i3", title=" "), item("i8", title="\t"), item("i9", title="\u200b\u3000")],
    "unparseable_ts": [item("i4", created="last tuesday")],
    "future_ts": [item("i5", created="2026-01-03T00:00:00Z")],
    "implausible_ts": [item("i10", created="0001-01-01T00:00:00Z")],
    "bad_type": [item("i6", price="cheap")],
    "out_of_range": [item("i7", price="-5")],
    "duplicate_id": [item("i1")],
}
USER_ROWS = {
    None: [user("u1"), user("u2", age=None)],
    "null_id": [user("")],
    "unparseable_ts": [user("u3", created="2026-13-45")],
    "future_ts": [user("u4", created="2027-01-01T00:00:00Z")],
    "implausible_ts": [user("u7", created="1970-01-01T00:00:00Z")],
    "bad_type": [user("u5", age="old")],
    "out_of_range": [user("u6", age="250")],
    "duplicate_id": [user("u1")],
}
EVENT_ROWS = {
    None: [
        event("e1"),
        event("e2", event_type="rating", value="4.5"),
        event("e3", event_type="purchase", value="10.5", item_id="i2", user_id="u2"),
        event("e4", event_type="search", query="trail shoes", ts="2026-01-02T23:59:59Z"),
        event("e5", user_id="u0", item_id="i0"),  # known from an earlier day
    ],
    "null_id": [event(None), event("e6", user_id=None), event("e7", item_id=""), event("e16", user_id="\t"),
                event("\ufeff")],
    "unknown_event_type": [event("e8", event_type="teleport")],
    "unparseable_ts": [event("e9", ts="yesterday")],
    "future_ts": [event("e10", ts="2026-01-03T00:00:00Z")],
    "implausible_ts": [event("e17", ts="1970-01-01T00:00:00Z"), event("e18", ts="0001-01-01T00:00:00Z")],
    "bad_type": [event("e11", event_type="purchase", value="abc")],
    "out_of_range": [event("e12", event_type="rating", value="7"), event("e13", event_type="purchase", value="-1")],
    "unknown_user": [event("e14", user_id="u404")],
    "unknown_item": [event("e15", item_id="i3")],  # its catalogue row was itself rejected
    "duplicate_id": [event("e1"), event("e0")],  # e0 was accepted on an earlier day
}


def land(lake, contract, rows_by_reason, ds=DS):
    rows = [dict(r, ds=ds) for rs in rows_by_reason.values() for r in rs]
    land_frame(lake, contract, pd.DataFrame(rows, columns=contract.column_names), ds)


@pytest.fixture
def landed(lake):
    """Day 1 lands one good user, item and event; day 2 lands every kind of row above."""
    day1 = "2026-01-01"
    land(lake, ITEMS_RAW, {None: [item("i0", created="2026-01-01T00:00:00Z")]}, day1)
    land(lake, USERS_RAW, {None: [user("u0", created="2026-01-01T00:00:00Z")]}, day1)
    land(lake, EVENTS_RAW, {None: [event("e0", "u0", "i0", ts="2026-01-01T08:00:00Z")]}, day1)
    run_ingest(lake, day1, IngestConfig(), run_id="day1")
    land(lake, ITEMS_RAW, ITEM_ROWS)
    land(lake, USERS_RAW, USER_ROWS)
    land(lake, EVENTS_RAW, EVENT_ROWS)
    return lake


def expected_reasons(rows_by_reason) -> dict[str, int]:
    return {r: len(rows) for r, rows in rows_by_reason.items() if r is not None}


def test_every_kind_of_bad_row_lands_in_quarantine_with_its_reason(landed):
    report = run_ingest(landed, DS, IngestConfig(), run_id="run-1")

    for source, rows in (("events_raw", EVENT_ROWS), ("items_raw", ITEM_ROWS), ("users_raw", USER_ROWS)):
        counts = report.tables[source]
        assert counts.reasons == expected_reasons(rows), source
        assert counts.accepted == len(rows[None]), source
        assert counts.rows_in == counts.accepted + counts.quarantined == sum(map(len, rows.values())), source

    q = landed.read("quarantine", ds=DS)
    got = {(r.source_table, r.reason): r.n for r in q.groupBy("source_table", "reason").agg(F.count("*").alias("n")).collect()}
    want = {(s, reason): n for s, rows in (("events_raw", EVENT_ROWS), ("items_raw", ITEM_ROWS), ("users_raw", USER_ROWS))
            for reason, n in expected_reasons(rows).items()}
    assert got == want
    assert {r for _, r in got} == set(REASONS)
    assert q.where(F.col("run_id") != "run-1").count() == 0

    teleport = q.where(F.col("reason") == "unknown_event_type").first()
    assert json.loads(teleport.row_json) == dict(event("e8", event_type="teleport"))


def test_accepted_rows_are_typed_and_complete(landed):
    run_ingest(landed, DS, IngestConfig())
    events = landed.read("events", ds=DS)
    assert sorted(r.event_id for r in events.collect()) == ["e1", "e2", "e3", "e4", "e5"]
    rating = events.where("event_id = 'e2'").first()
    assert rating.value == 4.5 and rating.ts.isoformat().startswith("2026-01-02T10:00")
    assert events.where("event_id = 'e4'").first().query == "trail shoes"
    assert sorted(r.item_id for r in landed.read("items").collect()) == ["i0", "i1", "i2"]
    assert sorted(r.user_id for r in landed.read("users").collect()) == ["u0", "u1", "u2"]
    assert landed.read("users").where("user_id = 'u2'").first().age is None


def test_a_rerun_for_the_same_day_changes_nothing(landed):
    run_ingest(landed, DS, IngestConfig())
    before = {t: landed.read(t) .localCheckpoint() for t in ("events", "items", "users", "quarantine")}
    run_ingest(landed, DS, IngestConfig())
    for table, df in before.items():
        run_columns = ["run_id", "quarantined_at"] if table == "quarantine" else []
        assert_df_equality(landed.read(table).drop(*run_columns), df.drop(*run_columns), ignore_row_order=True,
                           ignore_nullable=True, ignore_metadata=True)


def test_a_day_with_nothing_landed_writes_empty_partitions(lake):
    report = run_ingest(lake, "2026-02-01", IngestConfig())
    assert report.tables["events_raw"].rows_in == 0
    assert lake.read("events", ds="2026-02-01").count() == 0
    assert lake.read("quarantine", ds="2026-02-01").count() == 0


def test_ingest_catches_exactly_the_generators_bad_rows_day_after_day(lake):
    from recllm.data.landing import land_day
    from recllm.data.synthetic import SyntheticConfig, generate

    days, _ = generate(SyntheticConfig(seed=3, n_users=60, n_items=80, n_days=2, impressions_per_user_day=6))
    for day in days:
        land_day(lake, day)
        report = run_ingest(lake, day.ds, IngestConfig())
        got = {(table, reason): n for table, c in report.tables.items() for reason, n in c.reasons.items()}
        assert got == day.expected_rejects, day.ds
        for table, frame in (("events_raw", day.events_raw), ("items_raw", day.items_raw), ("users_raw", day.users_raw)):
            c = report.tables[table]
            assert c.rows_in == len(frame) == c.accepted + c.quarantined
        assert lake.read("events", ds=day.ds).count() == report.tables["events_raw"].accepted
        assert lake.read("quarantine", ds=day.ds).count() == sum(day.expected_rejects.values())


def test_the_earliest_plausible_timestamp_is_a_setting(lake):
    land(lake, ITEMS_RAW, {None: [item("i1", created="1995-06-01T00:00:00Z")]})
    assert run_ingest(lake, DS, IngestConfig()).tables["items_raw"].accepted == 1
    report = run_ingest(lake, DS, IngestConfig(earliest_ts="2000-01-01"))
    assert report.tables["items_raw"].reasons == {"implausible_ts": 1}


def test_an_event_id_accepted_on_two_earlier_days_is_counted_and_quarantined_once(spark, lake):
    from schemas import EVENTS

    for day in ("2025-12-30", "2025-12-31"):  # e0 got into events twice (out-of-order days, or an older version)
        row = ("e0", "u0", "i0", "click", "home_feed", None, None, dt.datetime.fromisoformat(f"{day}T08:00:00+00:00"), day)
        lake.overwrite_partition(EVENTS.name, spark.createDataFrame([row], EVENTS.spark), day)
    land(lake, ITEMS_RAW, {None: [item("i0")]})
    land(lake, EVENTS_RAW, {None: [event("e0", "u0", "i0")]})
    report = run_ingest(lake, DS, IngestConfig())
    counts = report.tables["events_raw"]
    assert (counts.rows_in, counts.accepted, counts.quarantined, counts.reasons) == (1, 0, 1, {"duplicate_id": 1})
    assert lake.read("quarantine", ds=DS).where(F.col("source_table") == "events_raw").count() == 1


def test_counts_that_do_not_reconcile_fail_the_job_before_any_write():
    from recllm.pipeline.ingest import IngestReport, ReconciliationError, TableCounts, reconcile

    report = IngestReport(DS, "r", {"events_raw": TableCounts(2, 1, 1, {"duplicate_id": 1}),
                                    "items_raw": TableCounts(3, 3, 0)})
    reconcile({"events_raw": 2, "items_raw": 3}, report)
    with pytest.raises(ReconciliationError, match="events_raw: 1 raw rows landed, 1 accepted \\+ 1 quarantined"):
        reconcile({"events_raw": 1, "items_raw": 3}, report)


def test_rerunning_an_older_day_never_reverts_a_newer_upsert(lake):
    days = ("2026-01-02", "2026-01-03")
    for day in days:
        land(lake, ITEMS_RAW, {None: [item("i1", title=f"title of {day}", created="2026-01-01T00:00:00Z")]}, day)
        land(lake, USERS_RAW, {None: [user("u1", age="30" if day == days[0] else "31",
                                           created="2026-01-01T00:00:00Z")]}, day)
    for day in (*days, days[0]):
        run_ingest(lake, day, IngestConfig())
    item_row, user_row = lake.read("items").collect(), lake.read("users").collect()
    assert [(r.title, r.ds) for r in item_row] == [("title of 2026-01-03", "2026-01-03")]
    assert [(r.age, r.ds) for r in user_row] == [(31, "2026-01-03")]
