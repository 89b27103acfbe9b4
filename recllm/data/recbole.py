"""Loader that turns a RecBole atomic-file dataset directory into raw landing frames.

Interactions come from `NAME.inter` (user, item, optional rating and timestamp) or from the
pre-split sequential files `NAME.train.inter`, `NAME.valid.inter`, `NAME.test.inter` that
text-aware recommenders ship (one history and target per row, no times). Optional
`NAME.item`, `NAME.text` and `NAME.item2index` / `NAME.user2index` add item text and map
integer indices back to the original ids. Pre-split data gets each user's sequence rebuilt
with synthetic times one second apart, so a leave-last-out split reproduces the shipped one.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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

SCENARIO = "recbole"
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
SPLITS = ("train", "valid", "test")
SYNTHETIC_START_S = int(pd.Timestamp("2020-01-01", tz="UTC").timestamp())
"""Time of each user's first event when the files carry no timestamps; later events follow a second apart."""
TITLE_CHARS = 80
ITEM_FIELDS = {
    "title": ("title", "movie_title", "name"),
    "category": ("categories", "category", "class", "genre"),
    "brand": ("brand",),
    "price": ("price",),
    "description": ("description", "desc", "text"),
}
"""Item-file field names read into each items_raw column, the first present winning."""


@dataclass(frozen=True)
class RecBoleData:
    """A loaded RecBole dataset; `presplit` says it ships its own train/valid/test split."""

    day: LandedDay
    presplit: bool


def load_recbole(directory: str | Path, name: str | None = None, ds: str | None = None) -> RecBoleData:
    """Load dataset NAME as one landing; ds defaults to the latest event's date.

    NAME defaults to the directory's name, or else to the one NAME whose `NAME.inter` or
    `NAME.train.inter` the directory holds (UniSRec's folders are named apart from their files).
    """
    root = Path(directory)
    stem = root / (name or _dataset_name(root))
    user_ids = _index_map(_file(stem, "user2index"))
    item_ids = _index_map(_file(stem, "item2index"))
    plain = _file(stem, "inter")
    splits = [_file(stem, f"{split}.inter") for split in SPLITS]
    if plain.exists():
        (inter, event_type), presplit = _plain(plain), False
    elif all(path.exists() for path in splits):
        (inter, event_type), presplit = _presplit(splits), True
    else:
        looked_for = ", ".join(path.name for path in [plain, *splits])
        raise ValueError(f"{root}: no RecBole interactions; looked for {looked_for}")
    if inter.empty:
        raise ValueError(f"{root}: no interactions to load")
    inter["user"] = _translate(inter["user"], user_ids, f"{stem.name}.user2index")
    inter["item"] = _translate(inter["item"], item_ids, f"{stem.name}.item2index")
    ds = ds or latest_ds(inter["seconds"])
    day = LandedDay(
        ds=ds,
        events_raw=interaction_events(inter, ds, event_type, SCENARIO, f"rb-{event_type[0]}", "i"),
        items_raw=_items(stem, inter, item_ids, ds),
        users_raw=users_without_profiles(inter.groupby("user")["seconds"].min(), ds),
    )
    return RecBoleData(day=day, presplit=presplit)


def _dataset_name(root: Path) -> str:
    """The directory's name when its files carry it, else the single dataset name its files share."""
    own = root.absolute().name
    if not root.is_dir() or any(root.glob(f"{glob.escape(own)}.*inter")):
        return own
    names = sorted({path.name.split(".")[0] for path in root.glob("*.inter")})
    if len(names) > 1:
        raise ValueError(f"{root}: holds several RecBole datasets ({', '.join(names)}); name one")
    return names[0] if names else own


def _file(stem: Path, suffix: str) -> Path:
    """The dataset file `NAME.suffix` next to the stem `directory/NAME`."""
    return stem.with_name(f"{stem.name}.{suffix}")


def _read_atomic(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """A RecBole TSV as all-string columns named without their `:type` (indexed by line number), and each
    field's type.

    Every row must have exactly the header's fields: a repeated header field, or a row with a field too many or
    too few, would shift or drop columns, so the file is refused in one line naming the line. Fields are split
    on tabs as written (no quoting; a NUL stays in its field for ingest to judge).
    """
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = [line.removesuffix("\r") for line in f.read().split("\n")]  # not splitlines: U+2028 is text
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not lines:
        raise ValueError(f"{path}, line 1: no header")
    types = {}
    for field in lines[0].split("\t"):
        field_name, _, kind = field.partition(":")
        if kind not in FIELD_TYPES:
            raise ValueError(f"{path}, line 1: header field {field!r} lacks a :type ({', '.join(FIELD_TYPES)})")
        if field_name in types:
            raise ValueError(f"{path}, line 1: header field {field_name!r} appears twice")
        types[field_name] = kind
    rows, numbers = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        values = line.split("\t")
        if len(values) != len(types):
            raise ValueError(f"{path}, line {number}: {len(values)} fields, the header has {len(types)}")
        rows.append(values)
        numbers.append(number)
    return pd.DataFrame(rows, columns=list(types), index=numbers, dtype=object), types


def _require(frame: pd.DataFrame, path: Path, *fields: str) -> None:
    """Fail clearly when an atomic file lacks a field the loader needs."""
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing field {missing[0]!r} (has {', '.join(frame.columns)})")


def _index_map(path: Path) -> dict[str, str]:
    """index -> original id from a two-column `original index` file, with or without a header; {} when absent."""
    if not path.exists():
        return {}
    mapping: dict[str, str] = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            parts = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{path}, line {number}: expected an original id and an integer index")
            original, index = (p.strip() for p in parts)
            if not index.isdigit():
                if not mapping:
                    continue  # the header line
                raise ValueError(f"{path}, line {number}: index {index!r} is not an integer")
            mapping[index] = original
    return mapping


def _translate(ids: pd.Series, index_map: dict[str, str], map_name: str) -> pd.Series:
    """Original ids for a column of integer indices; a column that is not all integers already holds ids."""
    if not index_map or ids.empty or not ids.str.fullmatch(r"\d+").all():
        return ids
    unknown = ids[~ids.isin(list(index_map))]
    if not unknown.empty:
        raise ValueError(f"{map_name}: no original id for index {unknown.iloc[0]}")
    return ids.map(index_map)


def _synthetic_seconds(users: pd.Series) -> pd.Series:
    """Each user's events one second apart from SYNTHETIC_START_S, in the given order."""
    return SYNTHETIC_START_S + users.groupby(users, sort=False).cumcount().astype("int64")


def _plain(path: Path) -> tuple[pd.DataFrame, str]:
    """user, item, value and seconds per `.inter` row, in file order (rows without times are spaced per user),
    and the event type: rating when the file has ratings, else click."""
    frame, _ = _read_atomic(path)
    _require(frame, path, "user_id", "item_id")
    inter = pd.DataFrame({"user": frame["user_id"], "item": frame["item_id"]})
    inter["value"] = [clean_text(v) for v in frame["rating"]] if "rating" in frame else None
    if "timestamp" in frame:
        stamps = pd.to_numeric(frame["timestamp"], errors="coerce")
        bad = ~np.isfinite(stamps.to_numpy(dtype="float64")) | (stamps.abs() >= 2**62)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"{path}, line {frame.index[row]}: timestamp {frame['timestamp'].iloc[row]!r} "
                             "is not a finite number of seconds")
        inter["seconds"] = np.floor(stamps).astype("int64")
    else:
        inter["seconds"] = _synthetic_seconds(inter["user"])
    return inter, "rating" if "rating" in frame else "click"


def _presplit(paths: list[Path]) -> tuple[pd.DataFrame, str]:
    """user and item per event of each user's rebuilt sequence (users in order of first appearance),
    with synthetic seconds so that a user's last event is the test target and the one before it the valid target."""
    rows: dict[str, dict[str, list[tuple[list[str], str]]]] = {}
    for split, path in zip(SPLITS, paths):
        frame, _ = _read_atomic(path)
        _require(frame, path, "user_id", "item_id_list", "item_id")
        for user, history, target in zip(frame["user_id"], frame["item_id_list"], frame["item_id"]):
            rows.setdefault(user, {s: [] for s in SPLITS})[split].append((history.split(), target))
    users, items = [], []
    for user, by_split in rows.items():
        sequence = _rebuild(by_split["train"], by_split["valid"][:1], by_split["test"][:1])
        users += [user] * len(sequence)
        items += sequence
    inter = pd.DataFrame({"user": pd.Series(users, dtype=object), "item": pd.Series(items, dtype=object)})
    inter["value"] = None
    inter["seconds"] = _synthetic_seconds(inter["user"])
    return inter, "click"


def _rebuild(
    train: list[tuple[list[str], str]], valid: list[tuple[list[str], str]], test: list[tuple[list[str], str]]
) -> list[str]:
    """A user's full item sequence from their rows: the train rows chained by history length (histories may be
    cut to a maximum length, so chaining recovers the start), then the valid and test targets; the longest of
    that and what the valid or test row alone gives."""
    tail = [target for _, target in valid + test]
    chained = sorted(train, key=lambda row: len(row[0]))
    candidates = [(chained[0][0] + [target for _, target in chained] if chained else []) + tail]
    if valid:
        candidates.append(valid[0][0] + tail)
    if test:
        candidates.append(test[0][0] + [test[0][1]])
    return max(candidates, key=len)


def _category(value: str, kind: str) -> str | None:
    """The last category of a token_seq ("Books, Fiction" or "Animation Comedy"), or a token as is."""
    if kind != "token_seq":
        return clean_text(value)
    names = value.split(",") if "," in value else value.split()
    return next((n for n in (name.strip().strip("'\"").strip() for name in reversed(names)) if n), None)


def _item_texts(stem: Path, item_ids: dict[str, str]) -> dict[str, dict[str, str | None]]:
    """Per original item id, the title, category, brand, price and description found in NAME.item and NAME.text."""
    texts: dict[str, dict[str, str | None]] = {}
    item_path = _file(stem, "item")
    if item_path.exists():
        frame, types = _read_atomic(item_path)
        _require(frame, item_path, "item_id")
        ids = _translate(frame["item_id"], item_ids, f"{stem.name}.item2index")
        columns = {c: next((f for f in fields if f in frame), None) for c, fields in ITEM_FIELDS.items()}
        for row, item in zip(frame.to_dict("records"), ids):
            got = {c: row[f] for c, f in columns.items() if f is not None}
            texts.setdefault(item, {
                "title": clean_text(got.get("title")),
                "category": _category(got["category"], types[columns["category"]]) if "category" in got else None,
                "brand": clean_text(got.get("brand")),
                "price": price_text(got.get("price")),
                "description": clean_text(got.get("description")),
            })
    text_path = _file(stem, "text")
    if text_path.exists():
        frame, _ = _read_atomic(text_path)
        _require(frame, text_path, "item_id", "text")
        ids = _translate(frame["item_id"], item_ids, f"{stem.name}.item2index")
        for item, text in zip(ids, frame["text"]):
            fields = texts.setdefault(item, dict.fromkeys(ITEM_FIELDS))
            if clean_text(text):
                fields["description"] = clean_text(text)
                fields["title"] = fields["title"] or clean_text(text[:TITLE_CHARS])
    return texts


def _items(stem: Path, inter: pd.DataFrame, item_ids: dict[str, str], ds: str) -> pd.DataFrame:
    """One items_raw row per item of NAME.item, then NAME.text, then items only interacted with (titled by
    their id); created_ts is the item's first event, or the earliest event when it has none."""
    texts = _item_texts(stem, item_ids)
    for item in inter["item"].drop_duplicates():
        texts.setdefault(item, dict.fromkeys(ITEM_FIELDS))
    ids = list(texts)
    first = pd.Series(ids).map(inter.groupby("item")["seconds"].min()).fillna(inter["seconds"].min())
    n = len(ids)
    return object_frame(
        ITEMS_RAW.column_names,
        {
            "item_id": prefixed(ids, "i"),
            "title": [texts[i]["title"] or i for i in ids],
            "description": [texts[i]["description"] for i in ids],
            "category": [texts[i]["category"] for i in ids],
            "brand": [texts[i]["brand"] for i in ids],
            "price": [texts[i]["price"] for i in ids],
            "image_embedding": [None] * n,
            "created_ts": iso_utc(first.astype("int64")),
            "ds": [ds] * n,
        },
    )
