"""Benchmark the URM default against every baseline on a real dataset, in one run.

    python -m jobs.benchmark --data ../shared/datasets/ml-latest-small --format movielens [--out results.json]
        [--config F] [--work benchmark-work]

Builds a fresh lake under `--work/<dataset>` (leave-last-out split), trains the URM default
and the ID-only expert, evaluates them with popularity and ALS (history items masked, as in
RecBole's full-sort protocol), prints one table and, with `--out`, writes the rows
`{"model", "metric", "k", "value"}` as a JSON list (with `train_s`, `examples_per_s` and
`peak_memory_bytes` for each trained model).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import replace

from jobs.common import embedding_udf, existing_folder, open_lake, parser, run
from recllm.config import load_config
from recllm.data.formats import FORMATS


def main(args: argparse.Namespace) -> None:
    from recllm.evaluation.benchmark import results_table, run_benchmark

    config = load_config(args.config)
    work = os.path.abspath(os.path.join(args.work, os.path.basename(os.path.normpath(args.data))))
    shutil.rmtree(work, ignore_errors=True)
    config = replace(config, lake=replace(config.lake, root=os.path.join(work, "lake")),
                     train=replace(config.train, model_root=os.path.join(work, "models")))
    config, lake = open_lake(args, config)
    rows = run_benchmark(lake, args.data, args.format, config, embedding_udf(config))
    print(f"\n{args.data} ({args.format}), leave-last-out, history items masked\n")
    print(results_table(rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"\nwrote {len(rows)} rows to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments, built without starting Spark (`tests/test_cli.py` checks every one has help)."""
    p = parser(__doc__.splitlines()[0], needs_ds=False, job="benchmark",
               ds_help="not used: the dataset lands at the date of its latest event")
    p.add_argument("--data", required=True, type=existing_folder, help="dataset folder (required)")
    p.add_argument("--format", required=True, choices=FORMATS, help="the dataset folder's format (required)")
    p.add_argument("--out", default=None, help="JSON file to write the result rows to (default: print the table only)")
    p.add_argument("--work", default="benchmark-work",
                   help="folder for the benchmark's lake and models; its <dataset> subfolder is replaced "
                   "(default: %(default)s)")
    return p


def cli(argv: list[str] | None = None) -> None:
    run("benchmark", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
