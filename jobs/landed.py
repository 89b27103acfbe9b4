"""Check that a day's raw partitions have landed, without Spark: exit 0 if they have, 3 if not yet.

    python -m jobs.landed --ds 2026-01-05 --config jobs/conf/default.yaml [--table events_raw --table items_raw]

What a scheduler waits on before the night's ingest: the Airflow DAG's sensor pokes it (a
BashSensor with retry_exit_code 3: not landed yet pokes again, any other failure, such as a bad
config, fails at once), the Databricks job runs it first with retries. It reads only the tables'
Delta logs with delta-rs (a second or two, no Spark session, no torch). A lake addressed by
catalog name (`lake.catalog_prefix`) has no paths to check: it fails naming that.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from jobs.common import parser, run
from recllm.config import load_config
from schemas import EVENTS_RAW, ITEMS_RAW, USERS_RAW

log = logging.getLogger("recllm.jobs.landed")

NOT_YET = 3  # the exit status for "not landed yet"; every other failure exits 1 (or 2 for a bad argument)
RAW_TABLES = (EVENTS_RAW.name, ITEMS_RAW.name)


def missing_partitions(lake_root: str, ds: str, tables=RAW_TABLES) -> list[str]:
    """The tables among `tables` under `lake_root` without a file in partition `ds` (a table not created yet counts)."""
    from deltalake import DeltaTable

    missing = []
    for table in tables:
        path = os.path.join(lake_root, table)
        if not DeltaTable.is_deltatable(path) or not DeltaTable(path).file_uris(file_pruning_predicate=[("ds", "=", ds)]):
            missing.append(table)
    return missing


def main(args: argparse.Namespace) -> None:
    lake = load_config(args.config).lake
    if lake.catalog_prefix:
        raise ValueError(f"lake.catalog_prefix is {lake.catalog_prefix!r}: the tables have no paths for landed to "
                         "check; trigger the job on the raw tables' updates instead")
    tables = args.table or RAW_TABLES
    missing = missing_partitions(lake.root, args.ds, tables)
    if missing:
        log.info("landed ds=%s: not yet: no partition in %s under %s", args.ds, ", ".join(missing), lake.root)
        sys.exit(NOT_YET)
    log.info("landed ds=%s: the partition is in %s", args.ds, ", ".join(tables))


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments, built without starting Spark (`tests/test_cli.py` checks every one has help)."""
    p = parser(__doc__.splitlines()[0], job="landed")
    p.add_argument("--table", action="append", choices=sorted({EVENTS_RAW.name, ITEMS_RAW.name, USERS_RAW.name}),
                   help=f"a raw table that must have the partition; repeat for more (default: {', '.join(RAW_TABLES)})")
    return p


def cli(argv: list[str] | None = None) -> None:
    run("landed", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
