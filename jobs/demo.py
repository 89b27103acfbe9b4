"""The demo: build the embedded lakehouse from the synthetic generator and run the nightly pipeline.

    python -m jobs.demo --config jobs/conf/default.yaml [--days 4]

Day by day: land the generator's raw rows, then `jobs.nightly` for that date (the first
nights only ingest and build prompts until there is enough history to train; from then on
each night retrains cold). Ends with
where the tables are and a readable sample: one user's recent history with today's
candidates, a CTR score and a cold-start fill.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from pyspark.sql import functions as F

from jobs.common import add_synthetic_args, open_lake, parser, run, stage_functions, synthetic_config
from recllm.config import load_config
from recllm.data.landing import land_day
from recllm.data.synthetic import SyntheticConfig, generate
from schemas import CANDIDATES, COLD_START_FILLS, CTR_SCORES, EVENTS, ITEMS

log = logging.getLogger("recllm.jobs.demo")


def main(args: argparse.Namespace) -> None:
    from recllm.nightly import run_nightly

    config = load_config(args.config)
    # every night retrains cold: on four days a warm start (the parent's item biases kept, a few epochs on one new
    # day) recalled last night's clicks worse than a cold retrain (README, the demo's table)
    config = replace(config, nightly=replace(config.nightly, retrain_every_days=1, cold_retrain_every_days=1))
    config, lake = open_lake(args, config)
    functions = stage_functions(config)
    days, _ = generate(synthetic_config(args))
    for day in days:
        land_day(lake, day)
        print(f"\n== nightly ds={day.ds}")
        for name, seconds, summary in run_nightly(lake, day.ds, config, functions):
            print(f"  {name:<9} {seconds:6.1f}s  {summary}")
    show_sample(lake, days[-1].ds)


def show_sample(lake, ds: str) -> None:
    """Print where the tables are and a readable sample an analyst would look at first."""
    print(f"\nTables ({lake.backend} backend) under {lake.root}; query them by name in Spark SQL:")
    for name in lake.register_views():
        print(f"  {name:<17} version {lake.version(name):>3}  {lake.location(name)}")
    spark = lake.spark
    titles = lake.read(ITEMS.name).select("item_id", "title", "category")
    if not lake.exists(CANDIDATES.name) or lake.read(CANDIDATES.name, ds=ds).count() == 0:
        print("\nNo candidates yet: run more days.")
        return
    user = spark.sql(f"SELECT user_id FROM candidates WHERE ds = '{ds}' AND objective = 'click' "
                     "ORDER BY user_id LIMIT 1").first().user_id
    print(f"\nUser {user}: recent history")
    (lake.read(EVENTS.name).where(F.col("user_id") == user).where(F.col("event_type") != "impression")
     .join(titles, "item_id").orderBy(F.col("ts").desc()).select("ts", "event_type", "title", "category")
     .show(6, truncate=40))
    print(f"Today's click candidates for {user} (with p_click where scored):")
    (lake.read(CANDIDATES.name, ds=ds).where((F.col("user_id") == user) & (F.col("objective") == "click"))
     .join(titles, "item_id").join(lake.read(CTR_SCORES.name, ds=ds).select("user_id", "item_id", "p_click")
                                   .dropDuplicates(["user_id", "item_id"]), ["user_id", "item_id"], "left")
     .orderBy("rank").select("rank", "title", "category", F.round("score", 2).alias("score"),
                             F.round("p_click", 3).alias("p_click")).show(10, truncate=40))
    print("A cold-start fill (a new item placed with the users most likely to want it):")
    (lake.read(COLD_START_FILLS.name, ds=ds).join(titles, "item_id").orderBy("reason", "item_id", F.desc("score"), "user_id")
     .select("reason", "user_id", "rank", "title", "category", F.round("score", 2).alias("score")).show(5, truncate=40))


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments, built without starting Spark (`tests/test_cli.py` checks every one has help)."""
    p = parser(__doc__.splitlines()[0], needs_ds=False, job="demo",
               ds_help=f"first day of the synthetic shop (default: {SyntheticConfig.start_ds})")
    add_synthetic_args(p, days=4)
    return p


def cli(argv: list[str] | None = None) -> None:
    run("demo", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
