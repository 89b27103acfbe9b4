"""Bring your own data: a folder of raw-table files (Parquet or CSV) lands as text, and ingest judges the rows."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recllm.config import IngestConfig
from recllm.data.formats import load_dataset
from recllm.data.landing import land_day
from recllm.data.tabular import column_texts, load_tabular
from recllm.pipeline.ingest import run_ingest
from schemas import EVENTS, EVENTS_RAW, ITEMS_RAW, USERS_RAW

UTC = dt.timezone.utc

EVENTS_CSV = """event_id,user_id,item_id,event_type,scenario,query,value,ts
e1,u1,i1,rating,home_feed,,4.5,2026-03-01T10:00:00Z
e2,u2,i2,search,search,"trail shoes, wet",,2026-02-28T08:30:00.250Z
e3,u1,i2,click,,,,last tuesday
"""
ITEMS_CSV = """item_id,title,description,category,brand,price,created_ts
i1,Trail Shoe,"Grippy, light",shoes,Acme,59.90,2026-01-01T00:00:00Z
i2,Heat Pad,,health,,12,2026-01-02T00:00:00Z
"""
USERS_CSV = """user_id,age,gender,country,profile_text,created_ts
u1,34,f,DE,,2026-01-01T00:00:00Z
u2,,,,,2026-01-05T12:00:00Z
"""


def _write(folder: Path, files: dict[str, str]) -> Path:
    """A dataset folder holding the given text files (names may hold a part folder: `events_raw/part-0.csv`)."""
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def csv_folder(tmp_path: Path) -> Path:
    """Three events (one with an unparseable ts), two items, two users, as CSV files."""
    return _write(tmp_path / "shop", {"events_raw.csv": EVENTS_CSV, "items_raw.csv": ITEMS_CSV,
                                      "users_raw.csv": USERS_CSV})


@pytest.fixture
def parquet_folder(tmp_path: Path) -> Path:
    """Typed Parquet: events as two part files (integer ids, float values and zoned timestamps in one, a
    string ts that does not parse in the other), items with a decimal price, dates and embeddings, users with
    an integer age and a naive timestamp."""
    root = tmp_path / "shop"
    (root / "events_raw").mkdir(parents=True)
    pq.write_table(pa.table({
        "event_id": pa.array([1, 2], pa.int64()),
        "user_id": ["u1", "u2"],
        "item_id": ["i1", "i2"],
        "event_type": ["rating", "purchase"],
        "scenario": ["home_feed", None],
        "query": pa.array([None, None], pa.string()),
        "value": pa.array([4.5, 0.1]),
        "ts": pa.array([dt.datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC), dt.datetime(2026, 2, 28, tzinfo=UTC)],
                       pa.timestamp("us", tz="Europe/Berlin")),
    }), root / "events_raw" / "part-00000.parquet")
    pq.write_table(pa.table({
        "event_id": ["3"], "user_id": ["u1"], "item_id": ["i2"], "event_type": ["click"], "scenario": ["search"],
        "query": ["heat pad"], "value": pa.array([None], pa.string()), "ts": ["not a time"],
    }), root / "events_raw" / "part-00001.parquet")
    pq.write_table(pa.table({
        "item_id": ["i1", "i2"],
        "title": ["Trail Shoe", "Heat Pad"],
        "description": ["Grippy, light", None],
        "category": ["shoes", "health"],
        "brand": pa.array(["Acme", "Acme"]).dictionary_encode(),
        "price": pa.array([Decimal("59.90"), Decimal("12.00")], pa.decimal128(8, 2)),
        "image_embedding": pa.array([[0.5, -1.25], None], pa.list_(pa.float32())),
        "created_ts": pa.array([dt.date(2026, 1, 1), dt.date(2026, 1, 2)], pa.date32()),
    }), root / "items_raw.parquet")
    pq.write_table(pa.table({
        "user_id": ["u1", "u2"],
        "age": pa.array([34, None], pa.int32()),
        "gender": ["f", None],
        "country": ["DE", None],
        "profile_text": pa.array([None, None], pa.string()),
        "created_ts": pa.array([dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 5, 12)], pa.timestamp("s")),
    }), root / "users_raw.parquet")
    return root


def test_typed_parquet_lands_every_value_as_text_without_losing_precision(parquet_folder):
    day = load_tabular(parquet_folder, "parquet")

    assert day.ds == "2026-03-01"  # the latest event that parses; "not a time" is left for ingest
    events = day.events_raw
    assert list(events.columns) == EVENTS_RAW.column_names and set(events["ds"]) == {"2026-03-01"}
    assert list(events["event_id"]) == ["1", "2", "3"]  # part files in name order
    assert list(events["value"]) == ["4.5", "0.1", None]
    assert list(events["ts"]) == ["2026-03-01T10:00:00.123456Z", "2026-02-28T00:00:00Z", "not a time"]
    assert list(events["scenario"]) == ["home_feed", None, "search"]
    items = day.items_raw.set_index("item_id")
    assert list(items["price"]) == ["59.90", "12.00"] and list(items["brand"]) == ["Acme", "Acme"]
    assert items.loc["i1", "image_embedding"] == [0.5, -1.25] and items.loc["i2", "image_embedding"] is None
    assert list(items["created_ts"]) == ["2026-01-01", "2026-01-02"]
    users = day.users_raw.set_index("user_id")
    assert list(users["age"]) == ["34", None] and list(users["created_ts"]) == ["2026-01-01T00:00:00Z",
                                                                               "2026-01-05T12:00:00Z"]
    assert all(isinstance(v, str) for frame in (events, day.users_raw) for v in frame.to_numpy().ravel() if v is not None)


def test_numbers_and_times_become_text_exactly():
    assert column_texts(pa.array([2**62, -3, None], pa.int64()), "event_id") == [str(2**62), "-3", None]
    assert column_texts(pa.array([0.1, 1e20, float("nan")]), "value") == ["0.1", "1e+20", "nan"]
    assert column_texts(pa.array([0.1], pa.float32()), "value") == ["0.1"]
    assert column_texts(pa.array([Decimal("1299.000")], pa.decimal128(9, 3)), "price") == ["1299.000"]
    assert column_texts(pa.array([True, False]), "value") == ["true", "false"]
    nanos = pa.array([1_767_261_600_123_456_789, -1], pa.timestamp("ns"))
    assert column_texts(nanos, "ts") == ["2026-01-01T10:00:00.123456789Z", "1969-12-31T23:59:59.999999999Z"]
    with pytest.raises(ValueError, match="column ts is struct"):
        column_texts(pa.array([{"a": 1}]), "ts")


def _ingested(lake, day):
    land_day(lake, day)
    return run_ingest(lake, day.ds, IngestConfig(), run_id="byod")


def test_a_parquet_folder_lands_and_ingest_accepts_the_good_rows_and_quarantines_the_bad_one(lake, parquet_folder):
    day, presplit = load_dataset(parquet_folder, "parquet")
    report = _ingested(lake, day)

    assert not presplit
    events = report.tables["events_raw"]
    assert (events.rows_in, events.accepted, events.reasons) == (3, 2, {"unparseable_ts": 1})
    assert all(t.rows_in == t.accepted + t.quarantined for t in report.tables.values())
    assert (report.tables["items_raw"].accepted, report.tables["users_raw"].accepted) == (2, 2)
    expected = lake.spark.createDataFrame([
        ("1", "u1", "i1", "rating", "home_feed", None, 4.5, dt.datetime(2026, 3, 1, 10, 0, 0, 123456), "2026-03-01"),
        ("2", "u2", "i2", "purchase", "unknown", None, 0.1, dt.datetime(2026, 2, 28), "2026-03-01"),
    ], EVENTS.spark)
    assert_df_equality(lake.read("events", ds="2026-03-01"), expected, ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)
    embedding = lake.read("items").where(F.col("item_id") == "i1").first().image_embedding
    assert embedding == [0.5, -1.25]
    bad = lake.read("quarantine", ds="2026-03-01").first()
    assert (bad.source_table, bad.reason, json.loads(bad.row_json)["ts"]) == ("events_raw", "unparseable_ts", "not a time")


def test_a_csv_folder_lands_and_ingest_accepts_the_good_rows_and_quarantines_the_bad_one(lake, csv_folder):
    day, _ = load_dataset(csv_folder, "csv", ds="2026-03-01")
    assert list(day.events_raw["query"]) == [None, "trail shoes, wet", None]  # an empty field lands as null
    report = _ingested(lake, day)

    events = report.tables["events_raw"]
    assert (events.rows_in, events.accepted, events.quarantined, events.reasons) == (3, 2, 1, {"unparseable_ts": 1})
    assert all(t.rows_in == t.accepted + t.quarantined and t.quarantined == 0
               for name, t in report.tables.items() if name != "events_raw")
    accepted = {r.event_id: r for r in lake.read("events", ds="2026-03-01").collect()}
    assert accepted["e1"].value == 4.5 and accepted["e2"].ts == dt.datetime(2026, 2, 28, 8, 30, 0, 250000)
    assert lake.read("items").where(F.col("item_id") == "i1").first().price == 59.9
    bad = lake.read("quarantine", ds="2026-03-01").first()
    assert (bad.reason, json.loads(bad.row_json)["event_id"]) == ("unparseable_ts", "e3")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_table_may_be_a_folder_of_part_files_read_in_name_order(tmp_path, fmt):
    rows = pd.read_csv(io.StringIO(EVENTS_CSV), dtype=str, keep_default_na=False)
    folder = tmp_path / "shop" / "events_raw"
    folder.mkdir(parents=True)
    for name, part in (("part-1", rows.iloc[2:]), ("part-0", rows.iloc[:2])):
        if fmt == "csv":
            part.to_csv(folder / f"{name}.csv", index=False)
        else:
            pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / f"{name}.parquet")
    (folder / "_SUCCESS").write_text("")

    day = load_tabular(tmp_path / "shop", fmt, ds="2026-03-01")

    assert list(day.events_raw["event_id"]) == ["e1", "e2", "e3"]
    assert day.items_raw.empty and list(day.items_raw.columns) == ITEMS_RAW.column_names
    assert day.users_raw.empty and list(day.users_raw.columns) == USERS_RAW.column_names


def test_a_missing_column_fails_naming_the_file_the_missing_columns_and_the_expected_ones(tmp_path):
    folder = _write(tmp_path / "shop", {"events_raw.csv": "event_id,user_id,item_id,event_type,value\ne1,u1,i1,click,\n"})

    with pytest.raises(ValueError) as err:
        load_tabular(folder, "csv")

    said = str(err.value)
    assert str(folder / "events_raw.csv") in said
    assert "missing column(s) ['scenario', 'query', 'ts']" in said
    assert "expects ['event_id', 'user_id', 'item_id', 'event_type', 'scenario', 'query', 'value', 'ts']" in said


def test_unknown_columns_are_logged_and_dropped(csv_folder, caplog):
    (csv_folder / "users_raw.csv").write_text("user_id,age,gender,country,profile_text,created_ts,ds,loyalty\n"
                                              "u1,34,f,DE,,2026-01-01T00:00:00Z,1999-01-01,gold\n")
    with caplog.at_level(logging.WARNING, logger="recllm.data.tabular"):
        day = load_tabular(csv_folder, "csv")

    assert day.ds == "2026-03-01" and list(day.users_raw["ds"]) == ["2026-03-01"]
    assert list(day.users_raw.columns) == USERS_RAW.column_names
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "users_raw.csv" in warnings[0] and "['ds', 'loyalty']" in warnings[0]


def test_csv_cannot_carry_image_embeddings_so_the_column_is_dropped(csv_folder, caplog):
    (csv_folder / "items_raw.csv").write_text("item_id,title,description,category,brand,price,created_ts,image_embedding\n"
                                              'i1,Trail Shoe,,shoes,Acme,59.90,2026-01-01T00:00:00Z,"[0.5, -1.25]"\n')
    with caplog.at_level(logging.WARNING, logger="recllm.data.tabular"):
        day = load_tabular(csv_folder, "csv")
    assert list(day.items_raw["image_embedding"]) == [None] and list(day.items_raw["price"]) == ["59.90"]
    assert "['image_embedding']" in caplog.text


def test_a_folder_without_events_fails_saying_what_it_looked_for(csv_folder):
    (csv_folder / "items_raw.csv").unlink()
    with pytest.raises(ValueError) as err:
        load_tabular(csv_folder, "parquet")
    said = str(err.value)
    assert f"looked for {csv_folder / 'events_raw.parquet'} or a folder {csv_folder / 'events_raw'}/" in said
    assert "found events_raw.csv: try --source csv" in said


def test_events_whose_times_never_parse_need_an_explicit_ds(tmp_path):
    folder = _write(tmp_path / "shop", {"events_raw.csv": EVENTS_CSV.splitlines()[0] + "\ne1,u1,i1,click,,,,soon\n"})
    with pytest.raises(ValueError, match="give the landing date with --ds"):
        load_tabular(folder, "csv")
    assert load_tabular(folder, "csv", ds="2026-03-01").events_raw["ts"].tolist() == ["soon"]


@pytest.mark.parametrize("row, says", [("e1,u1,i1,click,,,,2026-03-01T10:00:00Z,extra", "9 fields, the header has 8"),
                                       ("e1,u1,i1,click,,,", "7 fields, the header has 8")])
def test_a_csv_row_with_a_field_too_many_or_too_few_fails_naming_its_line(tmp_path, row, says):
    folder = _write(tmp_path / "shop", {"events_raw.csv": EVENTS_CSV + row + "\n"})
    with pytest.raises(ValueError, match=f"events_raw.csv, line 5: {says}"):
        load_tabular(folder, "csv")


def test_a_csv_holding_a_nul_fails_naming_its_line(tmp_path):
    folder = _write(tmp_path / "shop", {"events_raw.csv": EVENTS_CSV + "e4,u1,i1,click,,,,2026-03-01T1\x000:00Z\n"})
    with pytest.raises(ValueError, match="events_raw.csv, line 5: a NUL character"):
        load_tabular(folder, "csv")
