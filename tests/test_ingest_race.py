"""Two ingests at once on a new lake, and an older day rerun after a newer one, keep one copy of every key
and the newest version of each. Each ingest is its own process with its own Spark session (real Spark,
real delta-rs); they start together on a signal file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from recllm.config import IngestConfig
from recllm.data.landing import land_frame
from recllm.lake import Lake
from recllm.pipeline.ingest import run_ingest
from schemas import EVENTS_RAW, ITEMS_RAW, USERS_RAW
from tests.test_lake_faults import kill_job

pytestmark = pytest.mark.slow  # two extra Spark sessions

REPO = Path(__file__).resolve().parents[1]
DAYS = ("2026-01-02", "2026-01-03")
ITEMS_PER_DAY = 40  # i0 .. i29 land on both days (the later day with new titles), the rest on one day each

INGEST_SCRIPT = """
import os, sys, time

from recllm.config import IngestConfig, load_config
from recllm.lake import Lake
from recllm.pipeline.ingest import run_ingest
from recllm.session import build_spark

root, ds, go = sys.argv[1:4]
spark = build_spark(load_config(overrides={"spark": {
    "master": "local[1]", "shuffle_partitions": 1, "driver_memory": "1g", "app_name": "recllm-ingest-race",
    "conf": {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}}}))
lake = Lake(spark, root=root, backend="deltars")
while not os.path.exists(go):
    time.sleep(0.005)
run_ingest(lake, ds, IngestConfig(), run_id="race-" + ds)
"""


def land_day(lake: Lake, ds: str) -> None:
    n = DAYS.index(ds)
    ids = [f"i{i}" for i in range(30)] + [f"i{100 * (n + 1) + i}" for i in range(ITEMS_PER_DAY - 30)]
    created = "2026-01-01T00:00:00Z"
    items = [dict(item_id=i, title=f"{i} as of {ds}", description=None, category="c", brand=None, price="1",
                  image_embedding=None, created_ts=created, ds=ds) for i in ids]
    users = [dict(user_id=f"u{u}", age=str(30 + n), gender=None, country=None, profile_text=None,
                  created_ts=created, ds=ds) for u in range(20)]
    events = [dict(event_id=f"e{ds}-{k}", user_id=f"u{k % 20}", item_id=ids[k % len(ids)], event_type="click",
                   scenario="feed", query=None, value=None, ts=f"{ds}T10:00:00Z", ds=ds) for k in range(60)]
    for contract, rows in ((ITEMS_RAW, items), (USERS_RAW, users), (EVENTS_RAW, events)):
        land_frame(lake, contract, pd.DataFrame(rows, columns=contract.column_names), ds)


def test_two_first_ingests_at_once_then_an_older_rerun_keep_one_newest_row_per_key(spark, tmp_path):
    root, go = str(tmp_path / "lake"), tmp_path / "go"
    script = tmp_path / "ingest.py"
    script.write_text(INGEST_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    logs = {ds: open(tmp_path / f"ingest-{ds}.log", "wb") for ds in DAYS}
    jobs = {ds: subprocess.Popen([sys.executable, str(script), root, ds, str(go)], cwd=REPO, env=env,
                                 stdout=logs[ds], stderr=subprocess.STDOUT, start_new_session=True) for ds in DAYS}
    try:
        lake = Lake(spark, root=root, backend="deltars")
        for ds in DAYS:
            land_day(lake, ds)
        assert not lake.exists("items") and not lake.exists("users")
        time.sleep(1)
        go.touch()
        for ds, job in jobs.items():
            assert job.wait(timeout=900) == 0, (tmp_path / f"ingest-{ds}.log").read_text()[-3000:]
    finally:
        for ds, job in jobs.items():
            kill_job(job)
            logs[ds].close()

    def check() -> None:
        items = lake.read("items").toPandas()
        assert items["item_id"].is_unique and len(items) == 30 + 2 * (ITEMS_PER_DAY - 30)
        both_days = items[items["item_id"].isin([f"i{i}" for i in range(30)])]
        assert (both_days["title"].str.endswith(DAYS[1]) & (both_days["ds"] == DAYS[1])).all(), both_days
        users = lake.read("users").toPandas()
        assert users["user_id"].is_unique and len(users) == 20 and (users["age"] == 31).all()
        events = lake.read("events")
        assert events.count() == 120 and events.select("event_id").distinct().count() == 120

    check()
    run_ingest(lake, DAYS[0], IngestConfig())  # the older day again, after the newer one
    check()
