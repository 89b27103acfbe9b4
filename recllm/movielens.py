"""Loader that turns a MovieLens CSV directory (ratings, movies, tags) into raw landing frames.

The result has the same shape as one synthetic day: `events_raw` with a `rating` event per
rating and a `tag` event per tag application, `items_raw` with one row per movie and
`users_raw` with one row per user, every field a string as upstream would land it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recllm.synthetic import SyntheticDay
from schemas import EVENTS_RAW, ITEMS_RAW, USERS_RAW

SCENARIO = "movielens"
TOP_TAGS = 3
NO_GENRES = "(no genres listed)"


def load_movielens(path: str | Path, ds: str | None = None) -> SyntheticDay:
    """Load a MovieLens directory as one landing; ds defaults to the date of the latest event."""
    root = Path(path)
    ratings = _read(root / "ratings.csv", {"userId": "int64", "movieId": "int64", "rating": str, "timestamp": "int64"})
    movies = _read(root / "movies.csv", {"movieId": "int64", "title": str, "genres": str})
    tags = _read_tags(root / "tags.csv")
    stamps = pd.concat([ratings["timestamp"], tags["timestamp"]], ignore_index=True)
    if stamps.empty:
        raise ValueError(f"{root}: no ratings or tags to load")
    ds = ds or pd.Timestamp(int(stamps.max()), unit="s", tz="UTC").strftime("%Y-%m-%d")
    return SyntheticDay(
        ds=ds,
        events_raw=_events(ratings, tags, ds),
        items_raw=_items(movies, ratings, tags, int(stamps.min()), ds),
        users_raw=_users(ratings, tags, ds),
        expected_rejects={},
    )


def _read(path: Path, dtypes: dict[str, object]) -> pd.DataFrame:
    """Read one quoted UTF-8 CSV with explicit dtypes, keeping strings like "NA" as text."""
    return pd.read_csv(path, dtype=dtypes, usecols=list(dtypes), keep_default_na=False, encoding="utf-8")


def _read_tags(path: Path) -> pd.DataFrame:
    """tags.csv, or an empty frame when the directory has none."""
    dtypes = {"userId": "int64", "movieId": "int64", "tag": str, "timestamp": "int64"}
    if not path.exists():
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})
    return _read(path, dtypes)


def _iso(unix_seconds: pd.Series) -> list[str]:
    """ISO 8601 UTC strings for unix timestamps in seconds."""
    return list(pd.to_datetime(unix_seconds, unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _strings(values: pd.Series | list, prefix: str = "") -> list[str]:
    """Values as prefixed strings, e.g. user 7 -> "u7"."""
    return [f"{prefix}{v}" for v in values]


def _frame(columns: list[str], data: dict[str, list]) -> pd.DataFrame:
    """An all-object DataFrame with the given columns in order."""
    return pd.DataFrame({c: pd.Series(data[c], dtype=object) for c in columns}, columns=columns)


def _events(ratings: pd.DataFrame, tags: pd.DataFrame, ds: str) -> pd.DataFrame:
    """One rating event per rating row and one tag event per tag row, in file order."""
    n_r, n_t = len(ratings), len(tags)
    return _frame(
        EVENTS_RAW.column_names,
        {
            "event_id": _strings(range(n_r), "ml-r") + _strings(range(n_t), "ml-t"),
            "user_id": _strings(ratings["userId"], "u") + _strings(tags["userId"], "u"),
            "item_id": _strings(ratings["movieId"], "m") + _strings(tags["movieId"], "m"),
            "event_type": ["rating"] * n_r + ["tag"] * n_t,
            "scenario": [SCENARIO] * (n_r + n_t),
            "query": [None] * n_r + list(tags["tag"]),
            "value": list(ratings["rating"]) + [None] * n_t,
            "ts": _iso(ratings["timestamp"]) + _iso(tags["timestamp"]),
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
    return _frame(
        ITEMS_RAW.column_names,
        {
            "item_id": _strings(movies["movieId"], "m"),
            "title": list(movies["title"]),
            "description": [_description(g, top.get(m, [])) for g, m in zip(genres, movies["movieId"])],
            "category": [g[0] if g else None for g in genres],
            "brand": [None] * n,
            "price": [None] * n,
            "image_embedding": [None] * n,
            "created_ts": _iso(first),
            "ds": [ds] * n,
        },
    )


def _users(ratings: pd.DataFrame, tags: pd.DataFrame, ds: str) -> pd.DataFrame:
    """One users_raw row per user who rated or tagged; created_ts is their first event."""
    return users_without_profiles(_first_seen(ratings, tags, "userId"), ds)


def users_without_profiles(first_seen: pd.Series, ds: str) -> pd.DataFrame:
    """users_raw rows for datasets that know users only by id: the first-event time (unix
    seconds) indexed by user id; every profile field empty. Shared by the dataset loaders."""
    n = len(first_seen)
    empty = [None] * n
    return _frame(
        USERS_RAW.column_names,
        {
            "user_id": _strings(first_seen.index, "u"),
            "age": empty,
            "gender": empty,
            "country": empty,
            "profile_text": empty,
            "created_ts": _iso(first_seen.reset_index(drop=True)),
            "ds": [ds] * n,
        },
    )
