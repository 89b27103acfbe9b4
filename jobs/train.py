"""Fine-tune the URM model on the day's prompts with TorchDistributor; registers a model version.

    python -m jobs.train --ds 2026-01-03 --config jobs/conf/default.yaml [--num-processes 2] [--when-due]

Without --when-due it trains (cold) every time it runs. With it, it asks the nightly policy
(`recllm.nightly.train_if_due`, as `jobs.nightly` does): on a night without enough history,
or when the latest model is younger than `nightly.retrain_every_days`, it logs why, writes
nothing and exits 0; otherwise it trains, warm or cold as `train.warm_start` and
`nightly.cold_retrain_every_days` say. What a scheduler runs every night.
"""

from __future__ import annotations

import argparse
import logging

from jobs.common import open_lake, parser, run

log = logging.getLogger("recllm.jobs.train")


def main(args: argparse.Namespace) -> None:
    from recllm.nightly import train_if_due
    from recllm.training.driver import run_training

    config, lake = open_lake(args)
    if args.when_due:
        outcome = train_if_due(lake, args.ds, config, num_processes=args.num_processes)
        if not outcome.trained:
            log.info("train ds=%s: nothing trained: %s", args.ds, outcome.reason)
            return
        result = outcome.result
    else:
        result = run_training(lake, args.ds, config, num_processes=args.num_processes)
    log.info(
        "model %s: best valid recall@%d %.4f at epoch %d (%d epochs, %d steps, %.0f examples/s%s) -> %s",
        result["model_version"], config.train.eval_k, result["best_valid_recall"], result["best_epoch"],
        result["epochs_run"], result["steps"], result["examples_per_s"],
        f"; resumed from the checkpoint at step {result['resumed_from_step']}" if result["resumed_from_step"] else "",
        result["path"],
    )


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments, built without starting Spark (`tests/test_cli.py` checks every one has help)."""
    p = parser(__doc__.splitlines()[0], job="train")
    p.add_argument("--num-processes", type=int, default=None,
                   help="training processes (default: train.num_processes in the config)")
    p.add_argument("--when-due", action="store_true",
                   help="train only when the nightly policy says so (enough history, and no model younger than "
                   "nightly.retrain_every_days), warm or cold as jobs.nightly would; else log why and exit 0 "
                   "(default: off, train every time)")
    return p


def cli(argv: list[str] | None = None) -> None:
    run("train", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
