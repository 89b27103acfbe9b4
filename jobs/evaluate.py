"""Evaluate a model version and baselines on the day's test split; rows go to `metrics`.

    python -m jobs.evaluate --ds 2026-01-04 --config jobs/conf/default.yaml [--model-version V]

On a night with no model registered yet (a first night: nothing trained) it logs "no model
yet: skipped" and exits 0, writing nothing; an unknown version fails naming the known ones.
With MLflow on (`mlflow.enabled`), a version that beats popularity's recall@10 on
`evaluate.primary_objective` takes the alias `champion` (`recllm.tracking.promote_champion`).
"""

from __future__ import annotations

import argparse
import logging

from jobs.common import open_lake, parser, run

log = logging.getLogger("recllm.jobs.evaluate")


def main(args: argparse.Namespace) -> None:
    from recllm.evaluation.evaluate import run_evaluation
    from recllm.registry import resolve_model_if_any, version_to_evaluate

    config, lake = open_lake(args)
    model = resolve_model_if_any(lake, args.model_version or version_to_evaluate(config.score.model_version), config)
    if model is None:
        log.info("evaluate ds=%s: no model yet: skipped (nothing is registered in models until training has run)",
                 args.ds)
        return
    frame = run_evaluation(lake, args.ds, config, model)
    log.info("evaluate ds=%s model %s: %d metric rows", args.ds, model.version, len(frame))
    for row in frame[(frame.metric.isin(["recall", "auc"])) & (frame.k.isin([0, 10]))].itertuples():
        log.info("  %-20s %-12s %s@%d = %.4f (n=%d)", row.task, row.model, row.metric, row.k, row.value, row.n)


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments, built without starting Spark (`tests/test_cli.py` checks every one has help)."""
    p = parser(__doc__.splitlines()[0], job="evaluate")
    p.add_argument("--model-version", default=None,
                   help="registered model version to evaluate (default: score.model_version in the config, "
                   "the newest when that is champion; latest: the newest in models)")
    return p


def cli(argv: list[str] | None = None) -> None:
    run("evaluate", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
