"""Loader that turns Amazon review dumps (JSON lines, 2014/2018 or 2023 field names) into raw landing frames.

The result is one `LandedDay`: `events_raw` with a `rating` event per
review, `items_raw` with one row per product in the metadata (plus products only reviewed)
and `users_raw` with one row per reviewer, every field a string as upstream would land it.
Files may be gzip-compressed (a `.gz` suffix); review text is not used.
"""

from __future__ import annotations

import ast
import gzip
import json
import zlib
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from recllm.data.frames import (
    LandedDay,
    clean_text,
    interaction_events,
    iso_utc,
    latest_ds,
    object_frame,
    prefixed,
    price_text,
    users_without_profiles,
)
from schemas import ITEMS_RAW

SCENARIO = "amazon"
DESCRIPTION_CHARS = 1000
SUFFIXES = (".json", ".jsonl", ".gz")
"""File endings `amazon_files` accepts for the reviews and metadata files of a folder."""


def load_amazon(reviews_path: str | Path, meta_path: str | Path | None = None, ds: str | None = None) -> LandedDay:
    """Load a reviews file and optional metadata file as one landing; ds defaults to the date of the latest review."""
    reviews_path = Path(reviews_path)
    reviews = _reviews(reviews_path)
    if reviews.empty:
        raise ValueError(f"{reviews_path}: no reviews to load")
    metadata = _metadata(Path(meta_path)) if meta_path is not None else []
    ds = ds or latest_ds(reviews["seconds"])
    return LandedDay(
        ds=ds,
        events_raw=interaction_events(reviews, ds, "rating", SCENARIO, "az-r", "a"),  # one per review
        items_raw=_items(metadata, reviews, ds),
        users_raw=users_without_profiles(reviews.groupby("user")["seconds"].min(), ds),
    )


def amazon_files(folder: str | Path) -> tuple[Path, Path | None]:
    """The reviews file of a folder (the first, by name, of the `SUFFIXES` files without "meta" in
    their name) and its metadata file (the first with "meta"), None when there is none."""
    root = Path(folder)
    reviews = sorted(p for p in root.glob("*") if "meta" not in p.name and p.suffix in SUFFIXES)
    meta = sorted(p for p in root.glob("*meta*") if p.suffix in SUFFIXES)
    if not reviews:
        raise ValueError(f"{folder}: no reviews JSON lines file (*.json, *.jsonl, *.gz without 'meta' in its name)")
    return reviews[0], meta[0] if meta else None


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON lines file, gunzipped when it ends in .gz;
    a file that ends early, is corrupt or is not UTF-8 is refused naming the line it broke at."""
    opener = gzip.open if path.suffix == ".gz" else open
    number = 0
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield number, _parse(line, path, number)
    except (EOFError, OSError, zlib.error, UnicodeDecodeError) as err:
        raise ValueError(f"{path}, line {number + 1}: unreadable ({type(err).__name__}: {err})") from None


def _parse(line: str, path: Path, number: int) -> dict[str, Any]:
    """One JSON object; the 2014 metadata's Python-literal lines (single quotes) are accepted too."""
    try:
        record = json.loads(line)
    except RecursionError:
        raise ValueError(f"{path}, line {number}: JSON nested too deeply") from None
    except json.JSONDecodeError as err:
        try:
            record = ast.literal_eval(line.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ValueError(f"{path}, line {number}: malformed JSON ({err.msg})") from err
    if not isinstance(record, dict):
        raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
    return record


def _first(record: dict[str, Any], *keys: str) -> Any:
    """The value of the first key present with a non-null, non-blank value."""
    for key in keys:
        value = record.get(key)
        if value is not None and value != "":
            return value
    return None


def _reviews(path: Path) -> pd.DataFrame:
    """user, item, value (rating text) and seconds of every review, in file order."""
    rows = []
    for number, record in _json_lines(path):
        user = _id(_first(record, "user_id", "reviewerID"), "user", path, number)
        item = _id(_first(record, "parent_asin", "asin"), "item", path, number)
        rating = _first(record, "rating", "overall")
        rows.append((user, item, None if rating is None else _number(rating), _seconds(record, path, number)))
    return pd.DataFrame(rows, columns=["user", "item", "value", "seconds"]).astype({"seconds": "int64"})


def _id(value: Any, what: str, path: Path, number: int) -> str:
    """An id as text: a JSON string or integer; anything else (an object, a list, true, 1.5) is refused."""
    if value is None:
        raise ValueError(f"{path}, line {number}: record has no {what} id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{path}, line {number}: {what} id {json.dumps(value)[:60]} is not a string or an integer")
    return str(value)


def _number(value: Any) -> str:
    """A rating as decimal text, 5 and 5.0 both giving "5.0"; anything else lands as written (true, "five",
    {"x": 1} as JSON text) for ingest to quarantine, never coerced."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(float(value))
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _seconds(record: dict[str, Any], path: Path, number: int) -> int:
    """Review time in unix seconds: 2023 `timestamp` is in milliseconds, 2014/2018 `unixReviewTime` in seconds."""
    if record.get("timestamp") is not None:
        key, per_second = "timestamp", 1000
    elif record.get("unixReviewTime") is not None:
        key, per_second = "unixReviewTime", 1
    else:
        raise ValueError(f"{path}, line {number}: review has no timestamp or unixReviewTime")
    value = record[key]
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        seconds = int(value) // per_second
        if abs(seconds) >= 2**62:
            raise OverflowError
        return seconds
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{path}, line {number}: {key} {json.dumps(value)[:60]} is not an integer") from None


def _metadata(path: Path) -> list[dict[str, Any]]:
    """Metadata records with an item id, the first record winning when an id repeats (2018 dumps repeat some)."""
    records: dict[str, dict[str, Any]] = {}
    for number, record in _json_lines(path):
        records.setdefault(_id(_first(record, "parent_asin", "asin"), "item", path, number), record)
    return [{"item": item, **record} for item, record in records.items()]


def _leaf(path: Any) -> str | None:
    """Last entry of a category path, ignoring the HTML fragments some 2018 paths end with."""
    if not isinstance(path, list):
        return clean_text(path)
    names = []
    for name in path:
        if not isinstance(name, str) or "<" in name:
            break
        names.append(name)
    return next((n for n in map(clean_text, reversed(names)) if n), None)


def _category(record: dict[str, Any]) -> str | None:
    """The most specific category given: leaf of `categories` (2014 list of paths, 2023 one path),
    else the 2023 `main_category`, else the leaf of the 2018 `category` path."""
    categories = record.get("categories")
    if isinstance(categories, list) and categories:
        leaf = _leaf(categories[0] if isinstance(categories[0], list) else categories)
        if leaf:
            return leaf
    return clean_text(record.get("main_category")) or _leaf(record.get("category"))


def _description(value: Any) -> str | None:
    """Description text (a string or a list of paragraphs joined by spaces), cut to DESCRIPTION_CHARS."""
    parts = value if isinstance(value, list) else [value]
    text = " ".join(t for t in map(clean_text, parts) if t)
    return text[:DESCRIPTION_CHARS] or None


def _items(metadata: list[dict[str, Any]], reviews: pd.DataFrame, ds: str) -> pd.DataFrame:
    """One items_raw row per metadata record, then one per item only reviewed (titled by its asin);
    created_ts is the item's first review, or the earliest review when it has none."""
    described = {record["item"] for record in metadata}
    reviewed_only = [{"item": item} for item in reviews["item"].drop_duplicates() if item not in described]
    records = metadata + reviewed_only
    ids = [record["item"] for record in records]
    first = pd.Series(ids).map(reviews.groupby("item")["seconds"].min()).fillna(reviews["seconds"].min())
    n = len(records)
    return object_frame(
        ITEMS_RAW.column_names,
        {
            "item_id": prefixed(ids, "a"),
            "title": [clean_text(r.get("title")) or r["item"] for r in records],
            "description": [_description(r.get("description")) for r in records],
            "category": [_category(r) for r in records],
            "brand": [clean_text(r.get("brand")) or clean_text(r.get("store")) for r in records],
            "price": [price_text(r.get("price")) for r in records],
            "image_embedding": [None] * n,
            "created_ts": iso_utc(first.astype("int64")),
            "ds": [ds] * n,
        },
    )
