"""Ingest's invariants over thousands of generated raw rows, hostile strings and timestamps included:
every raw row is accepted or quarantined exactly once, accepted rows read back as they were landed, and a
rerun changes nothing. A seeded generator (no extra dependency): each seed is a different, repeatable shop."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from collections import Counter

import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recllm.config import IngestConfig
from recllm.data.landing import land_frame
from recllm.model.tokens import CONTROL_PATTERN
from recllm.pipeline.ingest import run_ingest
from schemas import EVENTS_RAW, ITEMS_RAW, USERS_RAW

pytestmark = pytest.mark.slow

DS = "2026-01-02"
N_EVENTS, N_ITEMS, N_USERS = 3000, 300, 200
HOSTILE_TEXT = ["", " ", "\t", "\u00a0", "\u200b", "\ufeff", "\u3000", "a\x00b", "\x00", "👟🏃", "\u202eevil",
                "'; DROP TABLE items;--", "../../etc/passwd", "C:\\x\\y", "x" * 300, "NULL", "null", "None",
                "１２", "<|item|>", "< | um | >", "{history}", "%s%n", "\\N", "a\nb", "\r\n"]
HOSTILE_TS = ["1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-02-30T00:00:00Z",
              "2026-01-03T00:00:00Z", "yesterday", "", " ", "NaN", "2026-01-02T10:00:00Z\n", "３０００-01-01",
              "2026-01-02T10:00:00+14:00", "2026-01-02 10:00:00", "1767348000", "2026-13-01T00:00:00Z", None]
VALUES = [None, "4.5", "3", "5", "0", "NaN", "Infinity", "-Infinity", "-1", "0x10", "1,5", "", "1e308", "1e309",
          " 2 ", "true", "７", "4.5\x00"]
EVENT_TYPES = ["click"] * 12 + ["rating", "purchase", "search", "impression", "teleport", "", None, "CLICK", " click"]


class Shop:
    """One day of raw rows drawn from `seed`: mostly plausible, often hostile; `truth` keeps each good time."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.truth: dict[str, dt.datetime] = {}
        self.items = [self._item(k) for k in range(N_ITEMS)]
        self.users = [self._user(k) for k in range(N_USERS)]
        self.events = [self._event(k) for k in range(N_EVENTS)]

    def _text(self, plain: str, p_hostile: float) -> str | None:
        return self.rng.choice(HOSTILE_TEXT + [None]) if self.rng.random() < p_hostile else plain

    def _id(self, prefix: str, n: int, p_hostile: float = 0.05) -> str | None:
        return self._text(f"{prefix}{self.rng.randrange(n)}", p_hostile)

    def _ts(self, key: str, p_hostile: float = 0.1) -> str | None:
        if self.rng.random() < p_hostile:
            return self.rng.choice(HOSTILE_TS)
        when = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=self.rng.randrange(86400))
        self.truth[key] = when
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _item(self, k: int) -> dict:
        item_id = self._id("i", N_ITEMS)
        return dict(item_id=item_id, title=self._text(f"Item {k} <|item|> title", 0.15),
                    description=self._text("desc", 0.3), category=self._text("cat", 0.2), brand=self._text("b", 0.3),
                    price=self._value(), image_embedding=self.rng.choice([None, [0.25, -1.5]]),
                    created_ts=self._ts(f"item-{k}"), ds=DS)

    def _user(self, k: int) -> dict:
        age = self.rng.choice([None, "30", "0", "-1", "250", "old", "1e3"]) if self.rng.random() < 0.2 else "30"
        return dict(user_id=self._id("u", N_USERS), age=age,
                    gender=self._text("f", 0.5), country=self._text("DE", 0.5), profile_text=self._text("p", 0.5),
                    created_ts=self._ts(f"user-{k}"), ds=DS)

    def _event(self, k: int) -> dict:
        return dict(event_id=self._id("e", N_EVENTS * 2, 0.03), user_id=self._id("u", N_USERS),
                    item_id=self._id("i", N_ITEMS), event_type=self.rng.choice(EVENT_TYPES),
                    scenario=self._text("home_feed", 0.2), query=self._text("trail shoes", 0.5),
                    value=self._value(), ts=self._ts(f"event-{k}"), ds=DS)

    def _value(self) -> str | None:
        return self.rng.choice(VALUES) if self.rng.random() < 0.3 else None


def landed_rows(rows: list[dict], contract) -> Counter:
    return Counter(json.dumps([r[c] for c in contract.column_names]) for r in rows)


def quarantined_rows(lake, contract) -> Counter:
    q = lake.read("quarantine", ds=DS).where(F.col("source_table") == contract.name).collect()
    return Counter(json.dumps([json.loads(r.row_json)[c] for c in contract.column_names]) for r in q)


@pytest.mark.parametrize("seed", [0, 1])
def test_every_generated_row_is_accepted_or_quarantined_once_as_landed_and_a_rerun_changes_nothing(lake, seed):
    shop = Shop(seed)
    for contract, rows in ((ITEMS_RAW, shop.items), (USERS_RAW, shop.users), (EVENTS_RAW, shop.events)):
        land_frame(lake, contract, pd.DataFrame(rows, columns=contract.column_names, dtype=object), DS)
    report = run_ingest(lake, DS, IngestConfig(), run_id="first")

    accepted = {"events_raw": lake.read("events", ds=DS), "items_raw": lake.read("items"),
                "users_raw": lake.read("users")}
    key = {"events_raw": "event_id", "items_raw": "item_id", "users_raw": "user_id"}
    for contract, rows in ((EVENTS_RAW, shop.events), (ITEMS_RAW, shop.items), (USERS_RAW, shop.users)):
        name, counts = contract.name, report.tables[contract.name]
        kept = accepted[name].toPandas()
        left = landed_rows(rows, contract) - quarantined_rows(lake, contract)  # what quarantine does not hold
        assert sum(quarantined_rows(lake, contract).values()) == counts.quarantined, name
        assert counts.rows_in == len(rows) == counts.accepted + counts.quarantined, name
        assert len(kept) == counts.accepted == sum(left.values()), name
        assert kept[key[name]].is_unique, name
        # the accepted rows are exactly the raw rows quarantine does not hold, key for key
        position = contract.column_names.index(key[name])
        assert sorted(kept[key[name]]) == sorted(json.loads(r)[position] for r in left.elements()), name
        assert 0 < counts.accepted < len(rows), f"{name}: seed {seed} should produce both outcomes"

    raw_events = {}
    for k, row in enumerate(shop.events):
        raw_events.setdefault(row["event_id"], []).append((k, row))
    for event in accepted["events_raw"].collect():
        (k, raw), = [(k, r) for k, r in raw_events[event.event_id] if (r["user_id"], r["item_id"]) ==
                     (event.user_id, event.item_id)][:1]
        assert (event.user_id, event.item_id, event.event_type) == (raw["user_id"], raw["item_id"], raw["event_type"])
        assert event.value == (None if raw["value"] is None else float(raw["value"]))
        truth = shop.truth.get(f"event-{k}")
        if truth is not None and raw["ts"] == truth.strftime("%Y-%m-%dT%H:%M:%SZ"):
            assert event.ts == truth.replace(tzinfo=None)  # the session's time zone is UTC
        assert dt.datetime(1990, 1, 1) <= event.ts < dt.datetime(2026, 1, 3)
    for item in accepted["items_raw"].collect():
        raw = [r for r in shop.items if r["item_id"] == item.item_id and r["title"] is not None
               and re.sub(CONTROL_PATTERN, r"<\1>", r["title"]) == item.title]
        assert raw, f"item {item.item_id!r}: title {item.title!r} was not landed"

    before = {t: lake.read(t).localCheckpoint() for t in ("events", "items", "users", "quarantine")}
    run_ingest(lake, DS, IngestConfig(), run_id="rerun")
    for table, df in before.items():
        drop = ["run_id", "quarantined_at"] if table == "quarantine" else []
        assert_df_equality(lake.read(table).drop(*drop), df.drop(*drop), ignore_row_order=True, ignore_nullable=True,
                           ignore_metadata=True)
