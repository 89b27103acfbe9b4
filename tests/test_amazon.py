"""The Amazon reviews loader: JSON lines (2014/2018 or 2023 fields, optionally gzipped) in, raw landing frames out."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from recllm.data.amazon import load_amazon
from recllm.data.formats import load_dataset
from schemas import EVENTS_RAW, ITEMS_RAW, USERS_RAW

REVIEWS_2014 = [
    {"reviewerID": "A1", "asin": "B001", "overall": 5.0, "unixReviewTime": 1400000000,
     "reviewTime": "05 13, 2014", "summary": "Great", "reviewText": "Loved it"},
    {"reviewerID": "A2", "asin": "B001", "overall": 3.0, "unixReviewTime": 1400086400,
     "summary": "Fine", "reviewText": "Okay"},
    {"reviewerID": "A1", "asin": "B003", "overall": 4, "unixReviewTime": 1399913600,
     "summary": "Good", "reviewText": "Not in the metadata"},
]
META_2014 = [
    json.dumps({"asin": "B001", "title": "Trail Shoe", "description": "Grippy.",
                "categories": [["Sports", "Running", "Shoes"], ["Gifts"]], "brand": "Acme",
                "price": "$1,299.00", "imUrl": "http://example.com/b001.jpg"}),
    # 2014 metadata lines are Python literals rather than JSON; this item has no title and no reviews.
    "{'asin': 'B002', 'categories': [['Books']], 'price': 12.5}",
]
REVIEWS_2023 = [
    {"rating": 4.0, "title": "Nice", "text": "Works", "asin": "B0C1", "parent_asin": "P1",
     "user_id": "AG1", "timestamp": 1600000000123, "helpful_vote": 0, "verified_purchase": True},
    {"rating": 2.0, "title": "Meh", "text": "Dry", "asin": "B0C2", "parent_asin": "P1",
     "user_id": "AG2", "timestamp": 1600000060999, "helpful_vote": 1, "verified_purchase": False},
    {"rating": 5.0, "title": "Great", "text": "Strong", "asin": "X9", "parent_asin": "P2",
     "user_id": "AG1", "timestamp": 1600086400000, "helpful_vote": 0, "verified_purchase": True},
]
META_2023 = [
    {"main_category": "All Beauty", "title": "Lip Balm", "description": ["Soft.", "", "Smells nice."],
     "categories": [], "store": "Glow", "price": 7.99, "parent_asin": "P1"},
    {"main_category": "Tools", "title": "Drill", "description": [],
     "categories": ["Tools & Home Improvement", "Power Tools", "Drills"], "store": None, "price": None,
     "parent_asin": "P2"},
]


def _frame(schema, rows: list[tuple]) -> pd.DataFrame:
    """An all-object frame with the schema's columns."""
    return pd.DataFrame(rows, columns=schema.column_names, dtype=object)


def _write(path: Path, lines: list) -> Path:
    """A JSON lines file of the given dicts (dumped) or strings (as is), gzipped when the name ends in .gz."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def day_2014(tmp_path: Path):
    """Plain-text 2014 files: a reviewed item with metadata, one only in metadata, one only in reviews."""
    return load_amazon(_write(tmp_path / "reviews.json", REVIEWS_2014), _write(tmp_path / "meta.json", META_2014))


@pytest.fixture
def day_2023(tmp_path: Path):
    """Gzipped 2023 files: reviews of two variants of P1 and of P2, times in milliseconds."""
    reviews = _write(tmp_path / "reviews.jsonl.gz", REVIEWS_2023)
    return load_amazon(reviews, _write(tmp_path / "meta.jsonl.gz", META_2023))


def test_2014_reviews_become_rating_events_with_second_timestamps(day_2014):
    ds = "2014-05-14"
    expected = _frame(
        EVENTS_RAW,
        [
            ("az-r0", "uA1", "aB001", "rating", "amazon", None, "5.0", "2014-05-13T16:53:20Z", ds),
            ("az-r1", "uA2", "aB001", "rating", "amazon", None, "3.0", "2014-05-14T16:53:20Z", ds),
            ("az-r2", "uA1", "aB003", "rating", "amazon", None, "4.0", "2014-05-12T16:53:20Z", ds),
        ],
    )
    pd.testing.assert_frame_equal(day_2014.events_raw, expected)
    assert day_2014.ds == ds and day_2014.expected_rejects == {}


def test_2014_metadata_and_reviewed_only_items_become_items(day_2014):
    ds = "2014-05-14"
    expected = _frame(
        ITEMS_RAW,
        [
            ("aB001", "Trail Shoe", "Grippy.", "Shoes", "Acme", "1299.00", None, "2014-05-13T16:53:20Z", ds),
            # no reviews: created at the earliest review of the file; no title: titled by its asin
            ("aB002", "B002", None, "Books", None, "12.5", None, "2014-05-12T16:53:20Z", ds),
            # only reviewed: no metadata at all
            ("aB003", "B003", None, None, None, None, None, "2014-05-12T16:53:20Z", ds),
        ],
    )
    pd.testing.assert_frame_equal(day_2014.items_raw, expected)


def test_reviewers_are_created_at_their_first_review(day_2014):
    ds = "2014-05-14"
    expected = _frame(
        USERS_RAW,
        [
            ("uA1", None, None, None, None, "2014-05-12T16:53:20Z", ds),
            ("uA2", None, None, None, None, "2014-05-14T16:53:20Z", ds),
        ],
    )
    pd.testing.assert_frame_equal(day_2014.users_raw, expected)


def test_2023_gzipped_reviews_use_parent_asin_and_millisecond_timestamps(day_2023):
    ds = "2020-09-14"
    expected = _frame(
        EVENTS_RAW,
        [
            ("az-r0", "uAG1", "aP1", "rating", "amazon", None, "4.0", "2020-09-13T12:26:40Z", ds),
            ("az-r1", "uAG2", "aP1", "rating", "amazon", None, "2.0", "2020-09-13T12:27:40Z", ds),
            ("az-r2", "uAG1", "aP2", "rating", "amazon", None, "5.0", "2020-09-14T12:26:40Z", ds),
        ],
    )
    pd.testing.assert_frame_equal(day_2023.events_raw, expected)


def test_2023_metadata_gives_store_as_brand_and_joined_description(day_2023):
    ds = "2020-09-14"
    expected = _frame(
        ITEMS_RAW,
        [
            ("aP1", "Lip Balm", "Soft. Smells nice.", "All Beauty", "Glow", "7.99", None, "2020-09-13T12:26:40Z", ds),
            ("aP2", "Drill", None, "Drills", None, None, None, "2020-09-14T12:26:40Z", ds),
        ],
    )
    pd.testing.assert_frame_equal(day_2023.items_raw, expected)
    assert list(day_2023.users_raw.user_id) == ["uAG1", "uAG2"]
    assert list(day_2023.users_raw.created_ts) == ["2020-09-13T12:26:40Z", "2020-09-13T12:27:40Z"]


def _item(tmp_path: Path, meta: dict) -> pd.Series:
    """The items_raw row of one metadata record reviewed once."""
    reviews = _write(tmp_path / "r.json", [{"reviewerID": "A", "asin": "X", "overall": 1.0, "unixReviewTime": 0}])
    return load_amazon(reviews, _write(tmp_path / "m.json", [{"asin": "X", **meta}])).items_raw.iloc[0]


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        ("$12.99", "12.99"),
        ("$1,299.00", "1299.00"),
        (" 7 ", "7"),
        (12.99, "12.99"),
        (12, "12"),
        ("$10.99 - $15.99", None),
        ("12,99", None),
        ("None", None),
        ("", None),
        (None, None),
    ],
)
def test_prices_become_plain_decimal_text_or_none(tmp_path, price, expected):
    assert _item(tmp_path, {"price": price})["price"] == expected


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"categories": [["Sports", "Running", "Shoes"], ["Gifts"]]}, "Shoes"),
        ({"categories": ["Tools", "Power Tools", "Drills"], "main_category": "Tools"}, "Drills"),
        ({"categories": [], "main_category": "All Beauty"}, "All Beauty"),
        ({"category": ["Electronics", "Computers", "Cables", "</span></span></span>"]}, "Cables"),
        ({"title": "No category"}, None),
    ],
)
def test_the_most_specific_category_is_chosen(tmp_path, meta, expected):
    assert _item(tmp_path, meta)["category"] == expected


def test_long_descriptions_are_joined_and_cut_to_1000_characters(tmp_path):
    item = _item(tmp_path, {"description": ["x" * 600, "y" * 600]})
    assert item["description"] == "x" * 600 + " " + "y" * 399


def test_a_malformed_line_is_reported_with_file_and_line_number(tmp_path):
    path = _write(tmp_path / "reviews.json.gz", [REVIEWS_2014[0], "", '{"reviewerID": "A2", "asin": '])
    with pytest.raises(ValueError, match=r"reviews\.json\.gz, line 3: malformed JSON"):
        load_amazon(path)


def test_a_file_without_reviews_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no reviews"):
        load_amazon(_write(tmp_path / "reviews.json", []))


def test_an_explicit_ds_labels_every_row(tmp_path):
    day = load_amazon(_write(tmp_path / "reviews.json", REVIEWS_2014), ds="2020-02-02")
    assert day.ds == "2020-02-02"
    for frame in (day.events_raw, day.items_raw, day.users_raw):
        assert (frame["ds"] == "2020-02-02").all()


def test_a_dataset_folder_loads_its_reviews_and_its_meta_file(tmp_path, day_2014):
    folder = tmp_path / "Shoes"
    folder.mkdir()
    _write(folder / "Shoes.json", REVIEWS_2014)
    _write(folder / "meta_Shoes.json", META_2014)
    (folder / "README.txt").write_text("not a data file")
    day, presplit = load_dataset(folder, "amazon")
    assert not presplit
    for name in ("events_raw", "items_raw", "users_raw"):
        pd.testing.assert_frame_equal(getattr(day, name), getattr(day_2014, name))


def test_a_dataset_folder_without_reviews_is_an_error(tmp_path):
    _write(tmp_path / "meta_Shoes.json", META_2014)
    with pytest.raises(ValueError, match="no reviews JSON lines file"):
        load_dataset(tmp_path, "amazon")
