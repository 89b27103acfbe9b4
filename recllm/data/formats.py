"""The dataset formats a folder can be loaded from, used by `jobs.land` and the benchmark.

`load_dataset(path, fmt)` turns a dataset folder into one `LandedDay` and says whether the
dataset ships its own train/valid/test split (only pre-split RecBole data does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from recllm.data.amazon import amazon_files, load_amazon
from recllm.data.frames import LandedDay
from recllm.data.movielens import load_movielens
from recllm.data.recbole import load_recbole
from recllm.data.tabular import load_tabular


@dataclass(frozen=True)
class DatasetFormat:
    """One format: what its folder holds, and how to load it (folder, ds or None -> day, presplit)."""

    folder: str
    load: Callable[[str | Path, str | None], tuple[LandedDay, bool]]


def _movielens(path: str | Path, ds: str | None) -> tuple[LandedDay, bool]:
    return load_movielens(path, ds=ds), False


def _amazon(path: str | Path, ds: str | None) -> tuple[LandedDay, bool]:
    reviews, meta = amazon_files(path)
    return load_amazon(reviews, meta, ds=ds), False


def _recbole(path: str | Path, ds: str | None) -> tuple[LandedDay, bool]:
    data = load_recbole(path, ds=ds)
    return data.day, data.presplit


def _parquet(path: str | Path, ds: str | None) -> tuple[LandedDay, bool]:
    return load_tabular(path, "parquet", ds=ds), False


def _csv(path: str | Path, ds: str | None) -> tuple[LandedDay, bool]:
    return load_tabular(path, "csv", ds=ds), False


REGISTRY = {
    "movielens": DatasetFormat("a MovieLens CSV folder (ratings.csv, movies.csv, tags.csv)", _movielens),
    "amazon": DatasetFormat("a folder of Amazon review JSON lines (reviews, optionally *meta*)", _amazon),
    "recbole": DatasetFormat("a RecBole atomic-file folder (NAME.inter or NAME.train/valid/test.inter)", _recbole),
    "parquet": DatasetFormat("a folder of raw tables as Parquet (events_raw[.parquet], optional items_raw, users_raw)",
                             _parquet),
    "csv": DatasetFormat("a folder of raw tables as CSV (events_raw[.csv], optional items_raw, users_raw)", _csv),
}
FORMATS = tuple(REGISTRY)


def load_dataset(path: str | Path, fmt: str, ds: str | None = None) -> tuple[LandedDay, bool]:
    """The dataset folder as one landing and whether it ships its own split; ds defaults to the latest event's date."""
    if fmt not in REGISTRY:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return REGISTRY[fmt].load(path, ds)
