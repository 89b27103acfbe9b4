"""Prompt sensitivity: score one objective's users with alternative instructions and compare.

    python -m jobs.sensitivity --ds 2026-01-04 --objective click \\
        --instruction "Suggest what this shopper opens next." --instruction "..." [--model-version V] [--k 10]

Prints one row per instruction (the configured one first): Recall/NDCG@K and their deltas
where the split has targets, the mean overlap of the top-K sets with the configured
instruction's, and the shift of their category mix.
"""

from __future__ import annotations

import argparse

from jobs.common import open_lake, parser, run


def main(args: argparse.Namespace) -> None:
    from recllm.evaluation.sensitivity import prompt_sensitivity
    from recllm.registry import resolve_model

    config, lake = open_lake(args)
    model = resolve_model(lake, args.model_version or config.score.model_version, config)
    frame = prompt_sensitivity(lake, args.ds, model.path, args.objective, args.instruction, config.prompts,
                               k=args.k, split=args.split)
    print(f"\nprompt sensitivity, ds={args.ds}, objective {args.objective}, model {model.version}\n")
    print(frame.drop(columns=["instruction"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for row in frame.itertuples():
        print(f"  {row.variant}: {row.instruction}")


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments, built without starting Spark (`tests/test_cli.py` checks every one has help)."""
    p = parser(__doc__.splitlines()[0], job="sensitivity")
    p.add_argument("--objective", required=True, help="objective whose users to score, e.g. click (required)")
    p.add_argument("--instruction", action="append", required=True,
                   help="an alternative instruction to compare with the configured one (required; repeatable)")
    p.add_argument("--model-version", default=None,
                   help="registered model version to score with (default: score.model_version in the config)")
    p.add_argument("--k", type=int, default=10,
                   help="top-K cut-off for Recall, NDCG and the overlap of top-K sets (default: %(default)s)")
    p.add_argument("--split", default="test",
                   help="test (with metric deltas) or infer (today's prompts) (default: %(default)s)")
    return p


def cli(argv: list[str] | None = None) -> None:
    run("sensitivity", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
