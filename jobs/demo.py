"""The demo: build the embedded lakehouse from the synthetic generator and ingest a few days.

    python -m jobs.demo --config jobs/conf/default.yaml [--days 3]
"""

from __future__ import annotations

import argparse
import logging

from pyspark.sql import functions as F

from jobs.common import open_lake, parser, run
from recllm.ingest import run_ingest
from recllm.landing import land_day
from recllm.synthetic import SyntheticConfig, generate

log = logging.getLogger("recllm.jobs.demo")


def main(args: argparse.Namespace) -> None:
    config, lake = open_lake(args)
    days, _ = generate(SyntheticConfig(seed=args.seed, n_users=args.users, n_items=args.items, n_days=args.days,
                                       start_ds=args.ds or SyntheticConfig.start_ds))
    for day in days:
        land_day(lake, day)
        report = run_ingest(lake, day.ds, config.ingest)
        print(f"\n== ds={day.ds}")
        for line in report.lines():
            print("  " + line)
    show_sample(lake, days[-1].ds)


def show_sample(lake, ds: str) -> None:
    """Print where the tables are and a readable sample an analyst would look at first."""
    print(f"\nTables ({lake.backend} backend) under {lake.root}:")
    for name in lake.register_views():
        print(f"  {name:<12} version {lake.version(name):>3}  {lake.location(name)}")
    spark = lake.spark
    print(f"\nQuarantined rows by reason on {ds} (SELECT ... FROM quarantine):")
    spark.sql(f"SELECT source_table, reason, count(*) AS n FROM quarantine WHERE ds = '{ds}' "
              "GROUP BY 1, 2 ORDER BY 1, 2").show(30, truncate=False)
    user = spark.sql(f"SELECT user_id FROM events WHERE ds = '{ds}' AND event_type = 'click' "
                     "GROUP BY 1 ORDER BY count(*) DESC, user_id LIMIT 1").first()
    if user is None:
        return
    print(f"Recent history of user {user.user_id}:")
    (lake.read("events").where(F.col("user_id") == user.user_id).where(F.col("event_type") != "impression")
     .join(lake.read("items").select("item_id", "title", "category"), "item_id")
     .orderBy(F.col("ts").desc()).select("ts", "event_type", "scenario", "title", "category")
     .show(10, truncate=40))


def cli(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0], needs_ds=False)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--seed", type=int, default=SyntheticConfig.seed)
    p.add_argument("--users", type=int, default=SyntheticConfig.n_users)
    p.add_argument("--items", type=int, default=SyntheticConfig.n_items)
    run("demo", main, p.parse_args(argv))


if __name__ == "__main__":
    cli()
