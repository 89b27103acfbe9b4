"""Score a day with a registered model: candidates, ctr_scores and cold_start_fills for that ds.

    python -m jobs.score --ds 2026-01-03 --config jobs/conf/default.yaml [--model-version V]

The model version defaults to `score.model_version` (`latest`: the newest in `models`;
`champion`: the version holding MLflow's alias, which evaluation moves, `recllm.tracking`). On a
night with no model registered yet (a first night: nothing trained) it logs "no model yet:
skipped" and exits 0, writing nothing. An unknown version fails naming the known ones,
before anything is written. A day without inference prompts writes empty partitions and
logs a warning. Safe to rerun: each table's `ds` partition is replaced in one transaction.
See `recllm.scoring.stage` for what each table holds.
"""

from __future__ import annotations

import argparse
import logging

from jobs.common import open_lake, parser, run, scoring_functions

log = logging.getLogger("recllm.jobs.score")


def main(args: argparse.Namespace) -> None:
    from recllm.registry import resolve_model_if_any
    from recllm.scoring.stage import run_scoring

    config, lake = open_lake(args)
    if resolve_model_if_any(lake, args.model_version or config.score.model_version, config) is None:
        log.info("score ds=%s: no model yet: skipped (nothing is registered in models until training has run)",
                 args.ds)
        return
    report = run_scoring(lake, args.ds, config, scoring_functions(), model_version=args.model_version)
    log.info(
        "score ds=%s model %s: candidates=%d ctr_scores=%d cold_start_fills=%d new_items=%d new_users=%d%s",
        report.ds, report.model_version, report.candidates, report.ctr_scores, report.cold_start_fills,
        report.new_items, report.new_users, " (empty day)" if report.empty_day else "",
    )


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments, built without starting Spark (`tests/test_cli.py` checks every one has help)."""
    p = parser(__doc__.splitlines()[0], job="score")
    p.add_argument("--model-version", default=None,
                   help="registered model version to score with (default: score.model_version in the config; "
                   "latest: the newest in models; champion: the version holding MLflow's alias champion)")
    return p


def cli(argv: list[str] | None = None) -> None:
    run("score", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
