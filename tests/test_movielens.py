"""The MovieLens loader: CSV directory in, raw landing frames out."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from recllm.data.movielens import load_movielens
from schemas import EVENTS_RAW, ITEMS_RAW, USERS_RAW

ML_SMALL = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ml-latest-small"

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children
2,"American President, The (1995)",Comedy|Drama|Romance
3,"Sorcerer's ""Stone"" (2001)",(no genres listed)
4,Unrated Movie (1999),Drama
"""
RATINGS = """userId,movieId,rating,timestamp
1,1,4.0,964982703
1,2,3.5,964981247
2,1,5.0,1445714994
"""
TAGS = """userId,movieId,tag,timestamp
2,1,pixar,1445714995
2,1,"funny, clever",1445714996
3,1,pixar,1500000000
3,3,NA,1445715000
"""


def _frame(schema, rows: list[tuple]) -> pd.DataFrame:
    """An all-object frame with the schema's columns."""
    return pd.DataFrame(rows, columns=schema.column_names, dtype=object)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A four-movie MovieLens directory with a comma and quotes in titles and an "NA" tag."""
    for name, text in (("movies.csv", MOVIES), ("ratings.csv", RATINGS), ("tags.csv", TAGS)):
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_ratings_and_tags_become_events(tiny):
    day = load_movielens(tiny)
    ds = "2017-07-14"
    expected = _frame(
        EVENTS_RAW,
        [
            ("ml-r0", "u1", "m1", "rating", "movielens", None, "4.0", "2000-07-30T18:45:03Z", ds),
            ("ml-r1", "u1", "m2", "rating", "movielens", None, "3.5", "2000-07-30T18:20:47Z", ds),
            ("ml-r2", "u2", "m1", "rating", "movielens", None, "5.0", "2015-10-24T19:29:54Z", ds),
            ("ml-t0", "u2", "m1", "tag", "movielens", "pixar", None, "2015-10-24T19:29:55Z", ds),
            ("ml-t1", "u2", "m1", "tag", "movielens", "funny, clever", None, "2015-10-24T19:29:56Z", ds),
            ("ml-t2", "u3", "m1", "tag", "movielens", "pixar", None, "2017-07-14T02:40:00Z", ds),
            ("ml-t3", "u3", "m3", "tag", "movielens", "NA", None, "2015-10-24T19:30:00Z", ds),
        ],
    )
    pd.testing.assert_frame_equal(day.events_raw, expected)
    assert day.ds == ds and day.expected_rejects == {}


def test_movies_become_items_described_by_genres_and_top_tags(tiny):
    day = load_movielens(tiny)
    ds = "2017-07-14"
    expected = _frame(
        ITEMS_RAW,
        [
            ("m1", "Toy Story (1995)", "Genres: Adventure, Animation, Children. Tags: pixar, funny, clever.",
             "Adventure", None, None, None, "2000-07-30T18:45:03Z", ds),
            ("m2", "American President, The (1995)", "Genres: Comedy, Drama, Romance.",
             "Comedy", None, None, None, "2000-07-30T18:20:47Z", ds),
            ("m3", 'Sorcerer\'s "Stone" (2001)', "Tags: NA.", None, None, None, None, "2015-10-24T19:30:00Z", ds),
            ("m4", "Unrated Movie (1999)", "Genres: Drama.", "Drama", None, None, None, "2000-07-30T18:20:47Z", ds),
        ],
    )
    pd.testing.assert_frame_equal(day.items_raw, expected)


def test_users_are_created_at_their_first_event(tiny):
    day = load_movielens(tiny)
    ds = "2017-07-14"
    expected = _frame(
        USERS_RAW,
        [
            ("u1", None, None, None, None, "2000-07-30T18:20:47Z", ds),
            ("u2", None, None, None, None, "2015-10-24T19:29:54Z", ds),
            ("u3", None, None, None, None, "2015-10-24T19:30:00Z", ds),
        ],
    )
    pd.testing.assert_frame_equal(day.users_raw, expected)


def test_an_explicit_ds_labels_every_row(tiny):
    day = load_movielens(tiny, ds="2020-02-02")
    assert day.ds == "2020-02-02"
    for frame in (day.events_raw, day.items_raw, day.users_raw):
        assert (frame["ds"] == "2020-02-02").all()


def test_a_directory_without_tags_loads_ratings_only(tiny):
    (tiny / "tags.csv").unlink()
    day = load_movielens(tiny)
    assert list(day.events_raw.event_type) == ["rating"] * 3
    assert day.ds == "2015-10-24"
    assert list(day.users_raw.user_id) == ["u1", "u2"]


@pytest.mark.skipif(not ML_SMALL.exists(), reason=f"{ML_SMALL} is not present")
def test_loads_ml_latest_small_quickly_and_completely():
    start = time.perf_counter()
    day = load_movielens(ML_SMALL)
    assert time.perf_counter() - start < 10
    events = day.events_raw
    assert (events.event_type == "rating").sum() == 100836
    assert (events.event_type == "tag").sum() == 3683
    assert len(day.items_raw) == 9742 and day.items_raw.item_id.is_unique
    assert len(day.users_raw) == 610
    assert events.event_id.is_unique
    assert set(events.item_id) <= set(day.items_raw.item_id)
    assert events.ts.max() <= f"{day.ds}T23:59:59Z"
    assert day.ds == "2018-09-24"
