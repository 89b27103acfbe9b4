"""The RecBole loader: atomic files (plain or pre-split) in, raw landing frames out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recllm.data.formats import load_dataset
from recllm.data.recbole import RecBoleData, load_recbole
from schemas import EVENTS_RAW, ITEMS_RAW, USERS_RAW

INTER = """user_id:token\titem_id:token\trating:float\ttimestamp:float
1\t10\t4\t881250949
2\t10\t3.5\t881250950.7
1\t20\t5\t881250000
"""
ITEM = """item_id:token\ttitle:token_seq\tcategories:token_seq\tbrand:token\tprice:float
10\tTrail Shoe\tSports Running\tAcme\t59.9
20\tHeat Pad\tHealth\t\t
30\tUnseen Book\tBooks, Fiction\tPub\t12
"""

# UniSRec-style pre-split data over integer indices, histories cut to at most two items.
# User AX's sequence is B0A B0B B0C B0D B0B; user AY's (too short for a train row) is B0C B0A B0D.
SPLIT_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
TRAIN = SPLIT_HEADER + "1\t1\t2\n1\t1 2\t3\n"
VALID = SPLIT_HEADER + "2\t3\t1\n1\t2 3\t4\n"
TEST = SPLIT_HEADER + "1\t3 4\t2\n2\t3 1\t4\n"
ITEM2INDEX = "B0A\t1\nB0B\t2\nB0C\t3\nB0D\t4\n"
USER2INDEX = "user_id:token\tuser_idx:token\nAX\t1\nAY\t2\n"
LONG_TEXT = "Trail Shoe Acme Running shoes for long runs on rocky ground and wet grass with extra grip"
TEXT = f"item_id:token\ttext:token_seq\nB0A\t{LONG_TEXT}\nB0B\tHeat Pad\nB0E\tNever Bought\n"


def _frame(schema, rows: list[tuple]) -> pd.DataFrame:
    """An all-object frame with the schema's columns."""
    return pd.DataFrame(rows, columns=schema.column_names, dtype=object)


def _directory(path: Path, files: dict[str, str]) -> Path:
    """A dataset directory holding the given files."""
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def plain(tmp_path: Path) -> RecBoleData:
    """ml-100k-like `.inter` with ratings and float timestamps, and an `.item` with one item never rated."""
    return load_recbole(_directory(tmp_path / "tiny", {"tiny.inter": INTER, "tiny.item": ITEM}))


@pytest.fixture
def presplit(tmp_path: Path) -> RecBoleData:
    """Pre-split `Office` files with a `.text` and both index maps (item2index without header, user2index with)."""
    files = {
        "Office.train.inter": TRAIN, "Office.valid.inter": VALID, "Office.test.inter": TEST,
        "Office.item2index": ITEM2INDEX, "Office.user2index": USER2INDEX, "Office.text": TEXT,
    }
    return load_recbole(_directory(tmp_path / "Office", files))


def test_inter_rows_become_rating_events_at_their_timestamps(plain):
    ds = "1997-12-04"
    expected = _frame(
        EVENTS_RAW,
        [
            ("rb-r0", "u1", "i10", "rating", "recbole", None, "4", "1997-12-04T15:55:49Z", ds),
            ("rb-r1", "u2", "i10", "rating", "recbole", None, "3.5", "1997-12-04T15:55:50Z", ds),
            ("rb-r2", "u1", "i20", "rating", "recbole", None, "5", "1997-12-04T15:40:00Z", ds),
        ],
    )
    pd.testing.assert_frame_equal(plain.day.events_raw, expected)
    assert not plain.presplit and plain.day.ds == ds and plain.day.expected_rejects == {}


def test_item_file_rows_become_items_with_the_last_category(plain):
    ds = "1997-12-04"
    expected = _frame(
        ITEMS_RAW,
        [
            ("i10", "Trail Shoe", None, "Running", "Acme", "59.9", None, "1997-12-04T15:55:49Z", ds),
            ("i20", "Heat Pad", None, "Health", None, None, None, "1997-12-04T15:40:00Z", ds),
            # never rated: created at the earliest event
            ("i30", "Unseen Book", None, "Fiction", "Pub", "12", None, "1997-12-04T15:40:00Z", ds),
        ],
    )
    pd.testing.assert_frame_equal(plain.day.items_raw, expected)
    expected_users = _frame(
        USERS_RAW,
        [
            ("u1", None, None, None, None, "1997-12-04T15:40:00Z", ds),
            ("u2", None, None, None, None, "1997-12-04T15:55:50Z", ds),
        ],
    )
    pd.testing.assert_frame_equal(plain.day.users_raw, expected_users)


def test_inter_without_rating_or_timestamp_gives_clicks_a_second_apart_per_user(tmp_path):
    inter = "user_id:token\titem_id:token\n1\t10\n2\t30\n1\t20\n"
    day = load_recbole(_directory(tmp_path / "bare", {"bare.inter": inter})).day
    assert list(day.events_raw.event_id) == ["rb-c0", "rb-c1", "rb-c2"]
    assert list(day.events_raw.event_type) == ["click"] * 3
    assert list(day.events_raw.value) == [None] * 3
    assert list(day.events_raw.ts) == ["2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z", "2020-01-01T00:00:01Z"]
    assert list(day.items_raw.title) == ["10", "30", "20"]


def test_presplit_sequences_are_rebuilt_with_original_ids_and_synthetic_times(presplit):
    ds = "2020-01-01"
    t = [f"2020-01-01T00:00:0{k}Z" for k in range(5)]
    expected = _frame(
        EVENTS_RAW,
        [
            ("rb-c0", "uAX", "iB0A", "click", "recbole", None, None, t[0], ds),
            ("rb-c1", "uAX", "iB0B", "click", "recbole", None, None, t[1], ds),
            ("rb-c2", "uAX", "iB0C", "click", "recbole", None, None, t[2], ds),
            ("rb-c3", "uAX", "iB0D", "click", "recbole", None, None, t[3], ds),
            ("rb-c4", "uAX", "iB0B", "click", "recbole", None, None, t[4], ds),
            ("rb-c5", "uAY", "iB0C", "click", "recbole", None, None, t[0], ds),
            ("rb-c6", "uAY", "iB0A", "click", "recbole", None, None, t[1], ds),
            ("rb-c7", "uAY", "iB0D", "click", "recbole", None, None, t[2], ds),
        ],
    )
    pd.testing.assert_frame_equal(presplit.day.events_raw, expected)
    assert presplit.presplit and presplit.day.ds == ds


def test_leave_last_out_on_the_rebuilt_events_reproduces_the_shipped_split(presplit):
    sequences = presplit.day.events_raw.sort_values("ts", kind="stable").groupby("user_id")["item_id"].agg(list)
    assert sequences.to_dict() == {
        "uAX": ["iB0A", "iB0B", "iB0C", "iB0D", "iB0B"],
        "uAY": ["iB0C", "iB0A", "iB0D"],
    }
    # valid target, test target per user, from Office.valid.inter and Office.test.inter via the index maps
    shipped = {"uAX": ["iB0D", "iB0B"], "uAY": ["iB0A", "iB0D"]}
    assert {user: items[-2:] for user, items in sequences.items()} == shipped
    # and each shipped valid/test row is exactly the (cut) history just before its target
    users, items = {"1": "uAX", "2": "uAY"}, {"1": "iB0A", "2": "iB0B", "3": "iB0C", "4": "iB0D"}
    for text, end in ((VALID, -1), (TEST, None)):
        for line in text.splitlines()[1:]:
            user, history, target = line.split("\t")
            window = [items[i] for i in history.split()] + [items[target]]
            assert sequences[users[user]][:end][-len(window):] == window


def test_text_file_describes_items_and_titles_those_without_one(presplit):
    ds = "2020-01-01"
    start = "2020-01-01T00:00:00Z"
    expected = _frame(
        ITEMS_RAW,
        [
            ("iB0A", LONG_TEXT[:80], LONG_TEXT, None, None, None, None, start, ds),
            ("iB0B", "Heat Pad", "Heat Pad", None, None, None, None, "2020-01-01T00:00:01Z", ds),
            ("iB0E", "Never Bought", "Never Bought", None, None, None, None, start, ds),
            ("iB0C", "B0C", None, None, None, None, None, start, ds),
            ("iB0D", "B0D", None, None, None, None, None, "2020-01-01T00:00:02Z", ds),
        ],
    )
    assert LONG_TEXT[:80] == "Trail Shoe Acme Running shoes for long runs on rocky ground and wet grass with e"
    pd.testing.assert_frame_equal(presplit.day.items_raw, expected)
    expected_users = _frame(
        USERS_RAW, [("uAX", None, None, None, None, start, ds), ("uAY", None, None, None, None, start, ds)]
    )
    pd.testing.assert_frame_equal(presplit.day.users_raw, expected_users)


def test_an_explicit_name_picks_the_files(tmp_path):
    data = load_recbole(_directory(tmp_path / "dir", {"ml.inter": INTER}), name="ml", ds="2020-02-02")
    assert len(data.day.events_raw) == 3
    for frame in (data.day.events_raw, data.day.items_raw, data.day.users_raw):
        assert (frame["ds"] == "2020-02-02").all()


def test_a_folder_named_apart_from_its_files_loads_the_one_dataset_it_holds(tmp_path):
    files = {f"Office.{s}.inter": text for s, text in (("train", TRAIN), ("valid", VALID), ("test", TEST))}
    data = load_recbole(_directory(tmp_path / "amazon-office-unisrec", files), ds="2020-02-02")
    assert data.presplit and len(data.day.events_raw) == 8


def test_a_folder_holding_several_datasets_asks_for_a_name(tmp_path):
    root = _directory(tmp_path / "many", {"a.inter": INTER, "b.inter": INTER})
    with pytest.raises(ValueError, match=r"several RecBole datasets \(a, b\); name one"):
        load_recbole(root)


def test_a_directory_without_interactions_names_the_files_looked_for(tmp_path):
    root = _directory(tmp_path / "Empty", {"Empty.train.inter": TRAIN, "Empty.item": ITEM})
    with pytest.raises(ValueError) as raised:
        load_recbole(root)
    message = str(raised.value)
    assert str(root) in message
    for name in ("Empty.inter", "Empty.train.inter", "Empty.valid.inter", "Empty.test.inter"):
        assert name in message


def test_a_header_field_without_type_is_an_error(tmp_path):
    root = _directory(tmp_path / "bad", {"bad.inter": "user_id\titem_id:token\n1\t10\n"})
    with pytest.raises(ValueError, match=r"bad\.inter, line 1: header field 'user_id' lacks a :type"):
        load_recbole(root)


def test_the_format_registry_loads_a_folder_and_says_whether_it_ships_its_split(tmp_path, presplit):
    day, shipped = load_dataset(_directory(tmp_path / "tiny", {"tiny.inter": INTER}), "recbole", ds="2020-02-02")
    assert not shipped and day.ds == "2020-02-02" and len(day.events_raw) == 3
    files = {f"Office.{s}.inter": text for s, text in (("train", TRAIN), ("valid", VALID), ("test", TEST))}
    (tmp_path / "again").mkdir()
    day, shipped = load_dataset(_directory(tmp_path / "again" / "Office", files), "recbole", ds=presplit.day.ds)
    assert shipped and len(day.events_raw) == len(presplit.day.events_raw)


def test_an_unknown_format_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown format 'xlsx'; expected one of movielens, amazon, recbole, parquet, csv"):
        load_dataset("anywhere", "xlsx")
