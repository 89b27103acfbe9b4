"""Validate one day's raw rows into events/items/users; bad rows go to quarantine.

    python -m jobs.ingest --ds 2026-01-02 --config jobs/conf/default.yaml
"""

from __future__ import annotations

import argparse

from jobs.common import open_lake, parser, run
from recllm.pipeline.ingest import run_ingest


def main(args: argparse.Namespace) -> None:
    config, lake = open_lake(args)
    run_ingest(lake, args.ds, config.ingest, run_id=args.run_id)


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments, built without starting Spark (`tests/test_cli.py` checks every one has help)."""
    p = parser(__doc__.splitlines()[0], job="ingest")
    p.add_argument("--run-id", default=None, help="id recorded with quarantined rows (default: random)")
    return p


def cli(argv: list[str] | None = None) -> None:
    run("ingest", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
