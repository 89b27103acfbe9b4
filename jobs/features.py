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


def cli(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--reembed-all",
        action="store_true",
        help="embed every item again (after changing features.text_encoder or correcting catalogue text)",
    )
    run("features", main, p.parse_args(argv))


if __name__ == "__main__":
    cli()
