"""Land upstream data (synthetic days, loaded datasets) into the raw `*_raw` tables."""

from __future__ import annotations

import logging

import pandas as pd

from recllm.data.frames import LandedDay
from recllm.lake import Lake
from schemas import EVENTS_RAW, ITEMS_RAW, USERS_RAW, TableSchema

log = logging.getLogger(__name__)


def land_frame(lake: Lake, contract: TableSchema, frame: pd.DataFrame, ds: str) -> int:
    """Replace partition `ds` of a raw table with a pandas frame; returns its row count."""
    df = lake.spark.createDataFrame(frame[contract.column_names], contract.spark)
    lake.overwrite_partition(contract.name, df, ds)
    log.info("landed %d rows into %s ds=%s", len(frame), contract.name, ds)
    return len(frame)


def land_day(lake: Lake, day: LandedDay) -> dict[str, int]:
    """Land one day's raw items, users and events; returns the row count per table."""
    return {
        c.name: land_frame(lake, c, frame, day.ds)
        for c, frame in ((ITEMS_RAW, day.items_raw), (USERS_RAW, day.users_raw), (EVENTS_RAW, day.events_raw))
    }
