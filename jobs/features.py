"""Build item features (stable indices, text embeddings, counts, cold flags) as of one day.

    python -m jobs.features --ds 2026-01-02 --config jobs/conf/default.yaml
"""

from __future__ import annotations

import argparse

from jobs.common import embedding_udf, open_lake, parser, run
from recllm.pipeline.features import run_features


def main(args: argparse.Namespace) -> None:
    config, lake = open_lake(args)
    run_features(lake, args.ds, config.features, embedding_udf(config), reembed_all=args.reembed_all)


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments, built without starting Spark (`tests/test_cli.py` checks every one has help)."""
    p = parser(__doc__.splitlines()[0], job="features")
    p.add_argument(
        "--reembed-all",
        action="store_true",
        help="embed every item again, after changing features.text_encoder or correcting catalogue text "
        "(default: embed only new and changed items)",
    )
    return p


def cli(argv: list[str] | None = None) -> None:
    run("features", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
