"""Loaders never guess: each row either lands as written for ingest to judge, or the file is refused in one
line naming the file, the line and the problem. Nothing is shifted, truncated or coerced silently."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from recllm.data.amazon import load_amazon
from recllm.data.frames import refuse_nul
from recllm.data.movielens import load_movielens
from recllm.data.recbole import load_recbole

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def recbole(tmp_path: Path, inter: str, item: str | None = None) -> Path:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "shop.inter").write_text(inter, encoding="utf-8")
    if item is not None:
        (folder / "shop.item").write_text(item, encoding="utf-8")
    return folder


def refused(load, *args) -> str:
    with pytest.raises(ValueError) as error:
        load(*args)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("block_bytes", [1, 5, 13, 1 << 24])
def test_a_nul_is_refused_on_its_own_line_wherever_the_scan_cuts_the_file(tmp_path, block_bytes):
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"userId,movieId\n1,1\n\n2,2\n3,\x003\n4,4\n")
    message = refused(refuse_nul, path, block_bytes)
    assert message == f"{path}, line 5: a NUL character (a CSV reader would cut the field there)"
    path.write_bytes(b"userId,movieId\n1,1\n")
    assert refuse_nul(path, block_bytes) is None


# -- RecBole -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("inter, line, problem", [
    ("user_id:token\titem_id:token\tuser_id:token\n1\t2\t3\n", 1, "header field 'user_id' appears twice"),
    (HEADER + "1\t10\t4\t881250949\textra\n2\t10\t3\t881250950\n", 2, "5 fields, the header has 4"),
    (HEADER + "1\t10\t4\t881250949\n2\t10\t3\n", 3, "3 fields, the header has 4"),
    (HEADER + "1\t10\t4\t881250949\n2\t10\t3\t881250950\t\n", 3, "5 fields, the header has 4"),
    (HEADER + "1\t10\t4\t881250949\n2\t10\t3\t\n", 3, "timestamp '' is not a finite number"),
    (HEADER + "1\t10\t4\tinf\n", 2, "timestamp 'inf' is not a finite number"),
    (HEADER + "1\t10\t4\tNaN\n", 2, "timestamp 'NaN' is not a finite number"),
])
def test_a_recbole_file_that_would_shift_columns_or_has_no_real_time_is_refused_naming_the_line(
        tmp_path, inter, line, problem):
    message = refused(load_recbole, recbole(tmp_path, inter))
    assert message.startswith(f"{tmp_path / 'shop' / 'shop.inter'}, line {line}: ") and problem in message


def test_a_recbole_empty_user_id_lands_blank_for_ingest_to_quarantine_not_as_a_user(tmp_path):
    day = load_recbole(recbole(tmp_path, HEADER + "\t10\t4\t881250949\n2\t10\t3\t881250950\n")).day
    assert list(day.events_raw["user_id"]) == [None, "u2"]
    assert list(day.users_raw["user_id"]) == [None, "u2"]  # ingest quarantines the blank one as null_id


def test_a_nul_inside_a_recbole_field_lands_whole(tmp_path):
    item = "item_id:token\ttitle:token_seq\n10\tPen\x00cil case\n"
    day = load_recbole(recbole(tmp_path, HEADER + "1\t10\t4\t881250949\n", item)).day
    assert list(day.items_raw["title"]) == ["Pen\x00cil case"]


# -- MovieLens -----------------------------------------------------------------------------------------------


def movielens(tmp_path: Path, ratings: str) -> Path:
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Comedy\n2,Heat (1995),Drama\n")
    (tmp_path / "ratings.csv").write_text(ratings, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("ratings, line, problem", [
    ("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,3\x005,964982704\n", 3, "a NUL character"),
    ("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,x2,3.5,964982704\n", 3, "movieId 'x2' is not an integer"),
    ("userId,movieId,rating,timestamp\n1,1,4.0,9.6e8\n", 2, "timestamp '9.6e8' is not an integer"),
    ("userId,movieId,rating,timestamp\n1,1,4.0,964982703,5\n", 2, "5 fields, the header has 4"),
    ("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,964982704\n", 3, "3 fields, the header has 4"),
])
def test_a_movielens_file_that_would_be_cut_or_coerced_is_refused_naming_the_line(tmp_path, ratings, line, problem):
    message = refused(load_movielens, movielens(tmp_path, ratings))
    assert message.startswith(f"{tmp_path / 'ratings.csv'}, line {line}: ") and problem in message


def test_a_movielens_time_past_the_year_2262_lands_as_written_for_ingest_to_judge(tmp_path):
    day = load_movielens(movielens(tmp_path, "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"
                                             "1,2,3.5,32503680000\n"))
    assert list(day.events_raw["ts"]) == ["2000-07-30T18:45:03Z", "3000-01-01T00:00:00Z"]
    assert day.ds == "2000-07-30"  # a time after now does not move the landing day


# -- Amazon --------------------------------------------------------------------------------------------------


def review(**fields) -> dict:
    return {"reviewerID": "A1", "asin": "B001", "overall": 5.0, "unixReviewTime": 1400000000, **fields}


def amazon(tmp_path: Path, lines: list, name: str = "reviews.json") -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    return path


@pytest.mark.parametrize("second, problem", [
    ('{"reviewerID": "A2", "asin": "B1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply"),
    (review(reviewerID={"id": "A2"}), 'user id {"id": "A2"} is not a string or an integer'),
    (review(asin=["B1"]), 'item id ["B1"] is not a string or an integer'),
    (review(asin=True), "item id true is not a string or an integer"),
    (review(unixReviewTime=True), "unixReviewTime true is not an integer"),
    (review(unixReviewTime=1e300), "unixReviewTime 1e+300 is not an integer"),
])
def test_an_amazon_record_that_would_crash_or_be_coerced_is_refused_naming_the_line(tmp_path, second, problem):
    path = amazon(tmp_path, [review(), second])
    message = refused(load_amazon, path)
    assert message.startswith(f"{path}, line 2: ") and problem in message


def test_a_truncated_gzip_is_refused_naming_where_it_broke(tmp_path):
    path = amazon(tmp_path, [review(reviewerID=f"A{i}") for i in range(2000)], "reviews.json.gz")
    path.write_bytes(path.read_bytes()[:-40])
    message = refused(load_amazon, path)
    assert re.match(rf"{re.escape(str(path))}, line \d+: unreadable \(EOFError", message), message


def test_an_amazon_rating_of_true_or_an_object_lands_as_written_for_ingest_to_quarantine(tmp_path):
    day = load_amazon(amazon(tmp_path, [review(), review(overall=True), review(overall={"stars": 5}),
                                        review(overall="five")]))
    assert list(day.events_raw["value"]) == ["5.0", "true", '{"stars": 5}', "five"]


def test_an_amazon_time_past_the_year_2262_lands_as_written(tmp_path):
    day = load_amazon(amazon(tmp_path, [review(), review(unixReviewTime=32503680000)]))
    assert list(day.events_raw["ts"]) == ["2014-05-13T16:53:20Z", "3000-01-01T00:00:00Z"]
