"""Land upstream data (synthetic days, loaded datasets) into the raw `*_raw` tables."""

from __future__ import annotations

import logging

import pandas as pd

from recllm.lake import Lake
from schemas import EVENTS_RAW, ITEMS_RAW, USERS_RAW, TableSchema

log = logging.getLogger(__name__)


def land_frame(lake: Lake, contract: TableSchema, frame: pd.DataFrame, ds: str) -> int:
    """Replace partition `ds` of a raw table with a pandas frame; returns its row count."""
    df = lake.spark.createDataFrame(frame[contract.column_names], contract.spark)
    lake.overwrite_partition(contract.name, df, ds)
    log.info("landed %d rows into %s ds=%s", len(frame), contract.name, ds)
    return len(frame)


def land_day(lake: Lake, day) -> dict[str, int]:
    """Land one day's raw events, items and users (a `recllm.synthetic.SyntheticDay`)."""
    return {
        c.name: land_frame(lake, c, frame, day.ds)
        for c, frame in ((ITEMS_RAW, day.items_raw), (USERS_RAW, day.users_raw), (EVENTS_RAW, day.events_raw))
    }


def prepare_history(lake: Lake, days: list, config, embed) -> str:
    """Land and ingest every day, then build features and prompts as of the last; returns its ds.

    The set-up benchmarks and model tests share: a lake ready for training on `days`.
    """
    from recllm.features import run_features
    from recllm.ingest import run_ingest
    from recllm.prompts import run_prompts

    for day in days:
        land_day(lake, day)
        run_ingest(lake, day.ds, config.ingest)
    ds = days[-1].ds
    run_features(lake, ds, config.features, embed)
    run_prompts(lake, ds, config.prompts)
    return ds
