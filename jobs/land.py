"""Land upstream data into the raw tables: the synthetic generator or a dataset folder.

    python -m jobs.land --source synthetic --days 3 --config jobs/conf/default.yaml
    python -m jobs.land --source movielens --path ../shared/datasets/ml-latest-small
    python -m jobs.land --source recbole --path ../shared/datasets/Office [--ds 2026-03-01]

A dataset (movielens, amazon, recbole; see `recllm.data.formats`) lands as one day, at --ds
or else the date of its latest event.
"""

from __future__ import annotations

import argparse
import logging

from jobs.common import add_synthetic_args, existing_folder, open_lake, parser, run, synthetic_config
from recllm.data.formats import FORMATS, REGISTRY, load_dataset
from recllm.data.landing import land_day
from recllm.data.synthetic import generate

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


def cli(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0], needs_ds=False)
    p.add_argument("--source", choices=["synthetic", *FORMATS], default="synthetic")
    p.add_argument("--path", type=existing_folder, help="dataset folder, for every source but synthetic")
    add_synthetic_args(p, days=3)
    args = p.parse_args(argv)
    if args.source in REGISTRY and not args.path:
        p.error(f"--source {args.source} needs --path to {REGISTRY[args.source].folder}")
    run("land", main, args)


if __name__ == "__main__":
    cli()
