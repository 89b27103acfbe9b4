"""Loader for raw tables brought as files: a folder of Parquet or CSV files named after the raw tables.

The folder holds `events_raw` (required), `items_raw` and `users_raw` (optional), each as one file
(`events_raw.parquet`, `events_raw.csv`) or a folder of part files (`events_raw/*.parquet`, read in
name order). Their columns are the raw contracts' columns without `ds` (`image_embedding` is optional,
and read from Parquet only); a missing column fails naming the file, unknown columns are logged and
dropped. Every value lands as text, as the contracts say (`column_texts`), bad values included: ingest,
not the loader, judges rows and quarantines the bad ones. Without `items_raw`, events of items not yet in
the catalogue are quarantined as unknown_item, so the first day of a shop needs its items.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recllm.data.frames import LandedDay, latest_ds, object_frame, refuse_nul
from schemas import EVENTS_RAW, ITEMS_RAW, USERS_RAW, TableSchema

log = logging.getLogger(__name__)

RAW_TABLES = (EVENTS_RAW, ITEMS_RAW, USERS_RAW)
SUFFIXES = {"parquet": ".parquet", "csv": ".csv"}
"""Each tabular format's file ending."""
EMBEDDING = "image_embedding"
"""The one raw column that is not text: a list of floats, optional, read from Parquet only."""
UNITS_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
CSV_FIELD_LIMIT = 2**31 - 1
"""The longest CSV field read (Python's csv module stops at 128 KiB by default; a description may be longer)."""


def load_tabular(path: str | Path, fmt: str, ds: str | None = None) -> LandedDay:
    """Load a folder of raw-table files in `fmt` ("parquet" or "csv") as one landing; ds defaults to the date
    of the latest event (an event whose `ts` does not parse is left for ingest and does not count)."""
    if fmt not in SUFFIXES:
        raise ValueError(f"unknown tabular format {fmt!r}; expected one of {', '.join(SUFFIXES)}")
    root = Path(path)
    events = _read_table(root, EVENTS_RAW, fmt)
    if events is None:
        raise ValueError(f"{root}: no {EVENTS_RAW.name} to land; looked for {_looked_for(root, EVENTS_RAW.name, fmt)}")
    if events.empty:
        raise ValueError(f"{root}: {EVENTS_RAW.name} holds no rows")
    frames = {EVENTS_RAW.name: events, **{c.name: _read_table(root, c, fmt) for c in (ITEMS_RAW, USERS_RAW)}}
    ds = ds or _latest_event_ds(events["ts"])
    landed = {contract.name: _landed(contract, frames[contract.name], ds) for contract in RAW_TABLES}
    return LandedDay(ds=ds, events_raw=landed[EVENTS_RAW.name], items_raw=landed[ITEMS_RAW.name],
                     users_raw=landed[USERS_RAW.name])


def table_files(root: Path, table: str, fmt: str) -> list[Path]:
    """The files holding `table` in `root`: `<table>.<suffix>`, or the `*.<suffix>` part files of folder
    `<table>/` in name order (hidden and `_` files skipped); [] when there is neither."""
    suffix = SUFFIXES[fmt]
    single, parts = root / f"{table}{suffix}", root / table
    if single.is_file() and parts.is_dir():
        raise ValueError(f"{root}: holds both {single.name} and a {table}/ folder; keep one")
    if single.is_file():
        return [single]
    if parts.is_dir():
        files = sorted(p for p in parts.glob(f"*{suffix}") if p.is_file() and not p.name.startswith((".", "_")))
        if not files:
            raise ValueError(f"{parts}: a {table} folder without *{suffix} part files")
        return files
    return []


def expected_columns(contract: TableSchema, fmt: str) -> list[str]:
    """The columns a `fmt` file of the contract's table holds: the contract's without `ds` (and, for CSV,
    without `image_embedding`, which only Parquet can carry)."""
    return [c for c in contract.column_names if c != "ds" and (c != EMBEDDING or fmt == "parquet")]


def column_texts(column: pa.ChunkedArray | pa.Array, name: str) -> list[str | None]:
    """A Parquet column's values as the raw tables' text, nulls as None: strings as written, integers and
    decimals exactly, floats as their shortest round-trip text ("4.5", "1e+20", "nan"), booleans as
    "true"/"false", dates as YYYY-MM-DD and timestamps as ISO 8601 in UTC with every fractional digit they
    carry ("2026-01-02T10:00:00.123Z"; a time without a zone is taken as UTC). Any other type fails."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    values = column.to_pylist()
    if pa.types.is_null(kind):
        return [None] * len(values)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return values
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return [None if v is None else _utf8(v, name) for v in values]
    if pa.types.is_integer(kind):
        return [None if v is None else str(v) for v in values]
    if pa.types.is_float64(kind):
        return [None if v is None else repr(v) for v in values]
    if pa.types.is_floating(kind):  # float32, float16: the shortest text that reads back as the same narrow float
        narrow = np.float32 if pa.types.is_float32(kind) else np.float16
        return [None if v is None else str(narrow(v)) for v in values]
    if pa.types.is_decimal(kind):
        return [None if v is None else format(v, "f") for v in values]
    if pa.types.is_boolean(kind):
        return [None if v is None else "true" if v else "false" for v in values]
    if pa.types.is_date(kind):
        return [None if v is None else v.isoformat() for v in values]
    if pa.types.is_timestamp(kind):
        ticks = column.cast(pa.int64()).to_pylist()  # UTC, whatever zone the column names
        return [None if v is None else iso_text(v, kind.unit) for v in ticks]
    raise ValueError(f"column {name} is {kind}; a raw text column takes strings, numbers, booleans, dates or "
                     "timestamps")


def iso_text(ticks: int, unit: str) -> str:
    """An ISO 8601 UTC text for `ticks` units ("s", "ms", "us", "ns") since the epoch, with the fractional
    digits needed to write it exactly (none for a whole second); years past 9999 are written as numpy does."""
    per_second = UNITS_PER_SECOND[unit]
    seconds, fraction = divmod(ticks, per_second)
    text = np.datetime_as_string(np.datetime64(seconds, "s"), unit="s")
    if fraction:
        text += "." + f"{fraction:0{len(str(per_second)) - 1}d}".rstrip("0")
    return text + "Z"


def embedding_values(column: pa.ChunkedArray | pa.Array) -> list[list[float] | None]:
    """A Parquet `image_embedding` column as lists of floats (None for a null list); a column that is not a
    list of numbers, or a vector holding a null (which the contract's vectors cannot), fails naming the row."""
    kind = column.type
    is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    if not is_list or not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
        raise ValueError(f"column {EMBEDDING} is {kind}; expected a list of floats")
    vectors = column.to_pylist()
    for row, vector in enumerate(vectors):
        if vector is not None and any(v is None for v in vector):
            raise ValueError(f"row {row}: {EMBEDDING} holds a null element")
    return [None if vector is None else [float(v) for v in vector] for vector in vectors]


def _utf8(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"column {name} is binary and not UTF-8 text ({err.reason} at byte {err.start})") from None


def _read_table(root: Path, contract: TableSchema, fmt: str) -> pd.DataFrame | None:
    """One raw table's files as one frame of its expected columns (values as text); None without files.
    Unknown columns are logged once per table and dropped."""
    files = table_files(root, contract.name, fmt)
    if not files:
        log.info("%s: no %s files", root, contract.name)
        return None
    read = _read_parquet if fmt == "parquet" else _read_csv
    frames, unknown = [], set()
    for path in files:
        frame, extra = read(path, contract)
        frames.append(frame)
        unknown.update(extra)
    where = files[0] if len(files) == 1 else files[0].parent
    if unknown:
        log.warning("%s: dropping column(s) %s that %s does not have (expected %s)", where, sorted(unknown),
                    contract.name, expected_columns(contract, fmt))
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    log.info("read %d %s rows from %s", len(frame), contract.name, where)
    return frame


def _split_columns(path: Path, contract: TableSchema, fmt: str, has: list[str]) -> tuple[list[str], list[str]]:
    """The expected columns the file holds, and its unknown ones; a missing column fails naming the file, the
    missing columns and the expected ones (`image_embedding` may be absent)."""
    expected = expected_columns(contract, fmt)
    missing = [c for c in expected if c not in has and c != EMBEDDING]
    if missing:
        optional = f", {EMBEDDING} optional" if EMBEDDING in expected else ""
        raise ValueError(f"{path}: missing column(s) {missing}; {contract.name} expects {expected}{optional} "
                         f"(the file has {has})")
    return [c for c in expected if c in has], [c for c in has if c not in expected]


def _read_parquet(path: Path, contract: TableSchema) -> tuple[pd.DataFrame, list[str]]:
    """A Parquet file's expected columns as text (`column_texts`, `embedding_values`; None for an absent
    `image_embedding`), and its unknown columns."""
    try:
        has = pq.read_schema(path).names
        keep, unknown = _split_columns(path, contract, "parquet", has)
        table = pq.read_table(path, columns=keep)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path}: not a readable Parquet file ({str(err).strip().splitlines()[0]})") from None
    data = {name: [None] * table.num_rows for name in expected_columns(contract, "parquet")}
    for name in keep:
        column = table.column(name)
        try:
            data[name] = embedding_values(column) if name == EMBEDDING else column_texts(column, name)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return object_frame(list(data), data), unknown


def _read_csv(path: Path, contract: TableSchema) -> tuple[pd.DataFrame, list[str]]:
    """A UTF-8 CSV file's expected columns as written (an empty field is None), and its unknown columns. A file
    that cannot be read whole and as written fails naming the file: a NUL, a header naming a column twice, a
    row with more or fewer fields than the header (it would shift or drop values), text that is not UTF-8."""
    refuse_nul(path)
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise ValueError(f"{path}: empty, not even a header line")
            rows = []
            for record in reader:
                if record and len(record) != len(header):
                    raise ValueError(f"{path}, line {reader.line_num}: {len(record)} fields, the header has {len(header)}")
                if record:
                    rows.append(record)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise ValueError(f"{path}, line {reader.line_num}: {err}") from None
    if twice := sorted({c for c in header if header.count(c) > 1}):
        raise ValueError(f"{path}: the header names column(s) {twice} more than once")
    keep, unknown = _split_columns(path, contract, "csv", header)
    data = {c: [row[i] or None for row in rows] for i, c in enumerate(header) if c in keep}
    return object_frame(keep, data), unknown


def _landed(contract: TableSchema, frame: pd.DataFrame | None, ds: str) -> pd.DataFrame:
    """The contract's frame for day `ds`: the read columns, None in those not read, `ds` on every row."""
    n = 0 if frame is None else len(frame)
    data = {c: list(frame[c]) if frame is not None and c in frame else [None] * n for c in contract.column_names}
    data["ds"] = [ds] * n
    return object_frame(contract.column_names, data)


def _latest_event_ds(ts: pd.Series) -> str:
    """The date of the latest event up to now (`latest_ds`), over the `ts` texts that parse as ISO 8601."""
    parsed = pd.to_datetime(ts, utc=True, errors="coerce", format="ISO8601").dropna()
    if parsed.empty:
        raise ValueError(f"no {EVENTS_RAW.name} ts parses as an ISO 8601 time; give the landing date with --ds")
    return latest_ds((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1))


def _looked_for(root: Path, table: str, fmt: str) -> str:
    """What `table_files` looks for, with a hint when the folder holds the table in another format."""
    suffix = SUFFIXES[fmt]
    said = f"{root / (table + suffix)} or a folder {root / table}/ of *{suffix} part files"
    others = [f for f, s in SUFFIXES.items() if f != fmt and (root / f"{table}{s}").is_file()]
    return said + (f" (found {table}{SUFFIXES[others[0]]}: try --source {others[0]})" if others else "")
