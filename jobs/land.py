"""Land upstream data into the raw tables: the synthetic generator or a dataset folder.

    python -m jobs.land --source synthetic --days 3 --config jobs/conf/default.yaml
    python -m jobs.land --source movielens --path ../shared/datasets/ml-latest-small
    python -m jobs.land --source recbole --path ../shared/datasets/Office [--ds 2026-03-01]
    python -m jobs.land --source parquet --path exports/2026-03-01 [--ds 2026-03-01]
    python -m jobs.land --source csv --path exports/2026-03-01

A dataset (movielens, amazon, recbole, or your own raw tables as parquet or csv files; see
`recllm.data.formats` and `recllm.data.tabular`) lands as one day, at --ds or else the date of
its latest event.
"""

from __future__ import annotations

import argparse
import logging

from jobs.common import add_synthetic_args, existing_folder, open_lake, parser, run, synthetic_config
from recllm.data.formats import FORMATS, REGISTRY, load_dataset
from recllm.data.landing import land_day
from recllm.data.synthetic import SyntheticConfig, generate

log = logging.getLogger("recllm.jobs.land")


def main(args: argparse.Namespace) -> None:
    _, lake = open_lake(args)
    if args.source in REGISTRY:
        day, _ = load_dataset(args.path, args.source, ds=args.ds)
        days = [day]
    else:
        days, _ = generate(synthetic_config(args))
    for day in days:
        counts = land_day(lake, day)
        log.info("landed ds=%s: %s", day.ds, ", ".join(f"{t}={n}" for t, n in counts.items()))


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments, built without starting Spark (`tests/test_cli.py` checks every one has help)."""
    p = parser(__doc__.splitlines()[0], needs_ds=False, job="land",
               ds_help=f"landing date (default: synthetic: {SyntheticConfig.start_ds}; "
               "a dataset: the date of its latest event)")
    p.add_argument("--source", choices=["synthetic", *FORMATS], default="synthetic",
                   help="the synthetic generator, or the format of the --path folder (default: %(default)s)")
    p.add_argument("--path", type=existing_folder, help="dataset folder (required for every source but synthetic)")
    add_synthetic_args(p, days=3)
    return p


def cli(argv: list[str] | None = None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    if args.source in REGISTRY and not args.path:
        p.error(f"--source {args.source} needs --path to {REGISTRY[args.source].folder}")
    run("land", main, args)


if __name__ == "__main__":
    cli()
