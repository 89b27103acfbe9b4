"""The nightly pipeline: ingest, features, prompts, train (or reuse), score, evaluate for one date.

    python -m jobs.nightly --ds 2026-01-04 --config jobs/conf/default.yaml

Each step is the same library call its own job makes, so rerunning a date replaces that
date's outputs. Training runs when `nightly.retrain_every_days` have passed since the
latest model's date (or there is none) and the prompts hold training examples; scoring
and evaluation run once a model exists (`recllm.nightly`). Ends with a summary of counts
and timings.
"""

from __future__ import annotations

import argparse

from jobs.common import open_lake, parser, run, stage_functions


def print_steps(ds: str, steps: list[tuple[str, float, str]]) -> None:
    print(f"\nnightly ds={ds}")
    for name, seconds, summary in steps:
        print(f"  {name:<9} {seconds:7.1f}s  {summary}")


def main(args: argparse.Namespace) -> None:
    from recllm.nightly import run_nightly

    config, lake = open_lake(args)
    print_steps(args.ds, run_nightly(lake, args.ds, config, stage_functions(config)))


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments, built without starting Spark (`tests/test_cli.py` checks every one has help)."""
    return parser(__doc__.splitlines()[0], job="nightly")


def cli(argv: list[str] | None = None) -> None:
    run("nightly", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
