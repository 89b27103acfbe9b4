"""Build one day's prompt table: training, evaluation and inference examples for every objective.

    python -m jobs.prompts --ds 2026-01-03 --config jobs/conf/default.yaml
"""

from __future__ import annotations

import argparse

from jobs.common import open_lake, parser, run
from recllm.pipeline.prompts import run_prompts


def main(args: argparse.Namespace) -> None:
    config, lake = open_lake(args)
    run_prompts(lake, args.ds, config.prompts)


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments, built without starting Spark (`tests/test_cli.py` checks every one has help)."""
    return parser(__doc__.splitlines()[0], job="prompts")


def cli(argv: list[str] | None = None) -> None:
    run("prompts", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
