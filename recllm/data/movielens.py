"""Loader that turns a MovieLens CSV directory (ratings, movies, tags) into raw landing frames.

The result is one `LandedDay`: `events_raw` with a `rating` event per
rating and a `tag` event per tag application, `items_raw` with one row per movie and
`users_raw` with one row per user, every field a string as upstream would land it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from recllm.data.frames import LandedDay, iso_utc, latest_ds, object_frame, prefixed, refuse_nul, users_without_profiles
from schemas import EVENTS_RAW, ITEMS_RAW

SCENARIO = "movielens"
TOP_TAGS = 3
NO_GENRES = "(no genres listed)"


def load_movielens(path: str | Path, ds: str | None = None) -> LandedDay:
    """Load a MovieLens directory as one landing; ds defaults to the date of the latest event."""
    root = Path(path)
    ratings = _read(root / "ratings.csv", {"userId": "int64", "movieId": "int64", "rating": str, "timestamp": "int64"})
    movies = _read(root / "movies.csv", {"movieId": "int64", "title": str, "genres": str})
    tags = _read_tags(root / "tags.csv")
    stamps = pd.concat([ratings["timestamp"], tags["timestamp"]], ignore_index=True)
    if stamps.empty:
        raise ValueError(f"{root}: no ratings or tags to load")
    ds = ds or latest_ds(stamps)
    return LandedDay(
        ds=ds,
        events_raw=_events(ratings, tags, ds),
        items_raw=_items(movies, ratings, tags, int(stamps.min()), ds),
        users_raw=users_without_profiles(_first_seen(ratings, tags, "userId"), ds),
    )


def _read(path: Path, dtypes: dict[str, object]) -> pd.DataFrame:
    """Read one quoted UTF-8 CSV with explicit dtypes, keeping strings like "NA" as text; a file that cannot be
    read whole and as written (a NUL in a field, a row with more or fewer fields than the header, which would
    shift or drop values, a non-integer id or time) is refused in one line naming the file, the line and the
    problem."""
    refuse_nul(path)
    ragged = []

    def refuse(row) -> str:
        ragged.append(row)
        return "error"

    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(use_threads=False),  # single-threaded: a bad row's line number is known
            parse_options=pa_csv.ParseOptions(invalid_row_handler=refuse),
            convert_options=pa_csv.ConvertOptions(column_types={c: pa.string() for c in dtypes},
                                                  strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except pa.ArrowInvalid as err:
        if ragged:
            row = ragged[0]
            raise ValueError(f"{path}, line {row.number}: {row.actual_columns} fields, the header has "
                             f"{row.expected_columns}") from None
        raise ValueError(f"{path}: {str(err).strip().splitlines()[0]}") from None
    missing = [c for c in dtypes if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}, line 1: missing column(s) {missing} (has {table.column_names})")
    frame = table.select(list(dtypes)).to_pandas()
    for column, dtype in dtypes.items():
        if dtype == "int64":
            numbers = pd.to_numeric(frame[column].where(frame[column].str.fullmatch(r"-?[0-9]{1,18}")), errors="coerce")
            if numbers.isna().any():
                row = int(numbers.isna().to_numpy().argmax())
                raise ValueError(f"{path}, line {row + 2}: {column} {frame[column].iloc[row]!r} is not an integer")
            frame[column] = numbers.astype("int64")
    return frame


def _read_tags(path: Path) -> pd.DataFrame:
    """tags.csv, or an empty frame when the directory has none."""
    dtypes = {"userId": "int64", "movieId": "int64", "tag": str, "timestamp": "int64"}
    if not path.exists():
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})
    return _read(path, dtypes)


def _events(ratings: pd.DataFrame, tags: pd.DataFrame, ds: str) -> pd.DataFrame:
    """One rating event per rating row and one tag event per tag row, in file order."""
    n_r, n_t = len(ratings), len(tags)
    return object_frame(
        EVENTS_RAW.column_names,
        {
            "event_id": prefixed(range(n_r), "ml-r") + prefixed(range(n_t), "ml-t"),
            "user_id": prefixed(ratings["userId"], "u") + prefixed(tags["userId"], "u"),
            "item_id": prefixed(ratings["movieId"], "m") + prefixed(tags["movieId"], "m"),
            "event_type": ["rating"] * n_r + ["tag"] * n_t,
            "scenario": [SCENARIO] * (n_r + n_t),
            "query": [None] * n_r + list(tags["tag"]),
            "value": list(ratings["rating"]) + [None] * n_t,
            "ts": iso_utc(ratings["timestamp"]) + iso_utc(tags["timestamp"]),
            "ds": [ds] * (n_r + n_t),
        },
    )


def _first_seen(ratings: pd.DataFrame, tags: pd.DataFrame, key: str) -> pd.Series:
    """Earliest rating or tag timestamp per userId or movieId."""
    both = pd.concat([ratings[[key, "timestamp"]], tags[[key, "timestamp"]]], ignore_index=True)
    return both.groupby(key)["timestamp"].min()


def _top_tags(tags: pd.DataFrame) -> dict[int, list[str]]:
    """Each movie's most applied tags, most frequent first, ties broken alphabetically."""
    counts = tags.groupby(["movieId", "tag"]).size().rename("n").reset_index()
    counts = counts.sort_values(["movieId", "n", "tag"], ascending=[True, False, True], kind="stable")
    top = counts.groupby("movieId").head(TOP_TAGS)
    return top.groupby("movieId")["tag"].agg(list).to_dict()


def _genres(genres: str) -> list[str]:
    """A movie's genres, empty when MovieLens lists none."""
    return [] if genres in ("", NO_GENRES) else genres.split("|")


def _description(genres: list[str], tags: list[str]) -> str | None:
    """A short text from the movie's genres and most common tags."""
    parts = []
    if genres:
        parts.append(f"Genres: {', '.join(genres)}.")
    if tags:
        parts.append(f"Tags: {', '.join(tags)}.")
    return " ".join(parts) or None


def _items(movies: pd.DataFrame, ratings: pd.DataFrame, tags: pd.DataFrame, earliest: int, ds: str) -> pd.DataFrame:
    """One items_raw row per movie; created_ts is the movie's first rating or tag."""
    genres = [_genres(g) for g in movies["genres"]]
    top = _top_tags(tags)
    first = movies["movieId"].map(_first_seen(ratings, tags, "movieId")).fillna(earliest).astype("int64")
    n = len(movies)
    return object_frame(
        ITEMS_RAW.column_names,
        {
            "item_id": prefixed(movies["movieId"], "m"),
            "title": list(movies["title"]),
            "description": [_description(g, top.get(m, [])) for g, m in zip(genres, movies["movieId"])],
            "category": [g[0] if g else None for g in genres],
            "brand": [None] * n,
            "price": [None] * n,
            "image_embedding": [None] * n,
            "created_ts": iso_utc(first),
            "ds": [ds] * n,
        },
    )
