"""Land upstream data into the raw tables: the synthetic generator or a MovieLens folder.

    python -m jobs.land --source synthetic --days 3 --config jobs/conf/default.yaml
    python -m jobs.land --source movielens --path ../shared/datasets/ml-latest-small
"""

from __future__ import annotations

import argparse
import logging

from jobs.common import open_lake, parser, run
from recllm.landing import land_day
from recllm.movielens import load_movielens
from recllm.synthetic import SyntheticConfig, generate

log = logging.getLogger("recllm.jobs.land")


def main(args: argparse.Namespace) -> None:
    _, lake = open_lake(args)
    if args.source == "movielens":
        if not args.path:
            raise ValueError("--source movielens needs --path to a MovieLens CSV folder")
        days = [load_movielens(args.path, ds=args.ds)]
    else:
        synthetic = SyntheticConfig(
            seed=args.seed, n_users=args.users, n_items=args.items, n_days=args.days,
            start_ds=args.ds or SyntheticConfig.start_ds, bad_row_fraction=args.bad_row_fraction,
        )
        days, _ = generate(synthetic)
    for day in days:
        counts = land_day(lake, day)
        log.info("landed ds=%s: %s", day.ds, ", ".join(f"{t}={n}" for t, n in counts.items()))


def cli(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0], needs_ds=False)
    p.add_argument("--source", choices=["synthetic", "movielens"], default="synthetic")
    p.add_argument("--path", help="MovieLens folder (ratings.csv, movies.csv, tags.csv)")
    p.add_argument("--days", type=int, default=3, help="synthetic: consecutive days from --ds")
    p.add_argument("--seed", type=int, default=SyntheticConfig.seed)
    p.add_argument("--users", type=int, default=SyntheticConfig.n_users)
    p.add_argument("--items", type=int, default=SyntheticConfig.n_items)
    p.add_argument("--bad-row-fraction", type=float, default=SyntheticConfig.bad_row_fraction)
    run("land", main, p.parse_args(argv))


if __name__ == "__main__":
    cli()
