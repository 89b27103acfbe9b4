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


def cli(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--run-id", default=None, help="id recorded with quarantined rows (default: random)")
    run("ingest", main, p.parse_args(argv))


if __name__ == "__main__":
    cli()
