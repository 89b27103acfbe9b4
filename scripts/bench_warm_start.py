"""Warm-start benchmark (not a test): a warm-started night against a cold retrain on the same day.

    .venv/bin/python scripts/bench_warm_start.py [--config FILE] [--days 6] [--users 200] [--items 300]
                                                 [--repeats 1] [--processes 2]

Builds the demo's synthetic lakehouse (the generator's shop, by default its default size, over `--days` days),
trains a cold model as of day N-1 and registers it, lands day N, then trains day N both ways
with `run_training` (TorchDistributor, the configured defaults): warm from the day N-1 model
(`choose_start`) and cold. Prints each run's best validation Recall@10, wall time (the whole
`run_training` call: planning, the warm examples, the ranks, registering), epochs, optimizer
steps and training examples, and the warm/cold ratios (medians over `--repeats`; the order
alternates, and each repeat starts both runs afresh rather than resuming).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace

from jobs.common import embedding_udf
from recllm.config import load_config
from recllm.data.landing import land_day
from recllm.data.synthetic import SyntheticConfig, generate
from recllm.lake import Lake
from recllm.nightly import land_and_prepare
from recllm.pipeline.features import run_features
from recllm.pipeline.ingest import run_ingest
from recllm.pipeline.prompts import run_prompts
from recllm.session import build_spark
from recllm.training.driver import Start, choose_start, run_training


def stage(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed_run(lake: Lake, ds: str, config, start: Start) -> dict:
    start_s = time.time()
    result = run_training(lake, ds, config, start=start)
    result["wall_s"] = time.time() - start_s
    shutil.rmtree(os.path.dirname(result["path"]))  # the next repeat trains afresh instead of resuming
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=6, help="generated days; day N-1 trains the parent (default 6)")
    p.add_argument("--users", type=int, default=SyntheticConfig().n_users)
    p.add_argument("--items", type=int, default=SyntheticConfig().n_items)
    p.add_argument("--config", default=None, help="YAML config (default: all defaults); train.model_root is set here")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--processes", type=int, default=None, help="training processes (default: train.num_processes)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = tempfile.mkdtemp(prefix="bench_warm_start_")
    config = load_config(args.config, overrides={"train": {"model_root": os.path.join(work, "models")}})
    if args.processes:
        config = replace(config, train=replace(config.train, num_processes=args.processes))
    spark = build_spark(config)
    lake = Lake(spark, root=os.path.join(work, "lake"), backend="deltars")
    embed = embedding_udf(config)
    days, _ = generate(SyntheticConfig(n_days=args.days, n_users=args.users, n_items=args.items))

    stage(f"building the demo lakehouse up to day {args.days - 1}")
    parent_ds = land_and_prepare(lake, days[:-1], config, embed)
    stage(f"cold parent model on {parent_ds}")
    parent = run_training(lake, parent_ds, config, start=Start("the parent"))
    stage(f"landing day {args.days}")
    ds = days[-1].ds
    land_day(lake, days[-1])
    run_ingest(lake, ds, config.ingest)
    run_features(lake, ds, config.features, embed)
    run_prompts(lake, ds, config.prompts)

    runs: dict[str, list[dict]] = {"warm": [], "cold": []}
    for r in range(args.repeats):
        for kind in (("warm", "cold") if r % 2 == 0 else ("cold", "warm")):
            start = choose_start(lake, ds, config) if kind == "warm" else Start("the comparison")
            if kind == "warm" and not start.warm:
                raise SystemExit(f"no warm start possible: {start.reason}")
            stage(f"repeat {r + 1}: {kind} on {ds}" + (f" ({start.reason})" if kind == "warm" else ""))
            runs[kind].append(timed_run(lake, ds, config, start))

    print(f"\nmachine: {os.cpu_count()} cores; synthetic shop {args.users} users, {args.items}+ items, "
          f"{args.days} days; {config.train.num_processes} training process(es); model {config.model.hidden_size} wide, "
          f"{config.model.num_layers} layer(s); warm: {config.train.warm_epochs} epochs, lr x{config.train.warm_lr_scale}, "
          f"replay {config.train.warm_replay_fraction}")
    print(f"parent {parent['model_version']} on {parent_ds}: valid recall@10 {parent['best_valid_recall']:.4f}, "
          f"{parent['epochs_run']} epochs, {parent['train_examples']} train examples")
    print("| run | valid recall@10 | wall s | epochs | steps | train examples |")
    print("|---|---:|---:|---:|---:|---:|")
    med = {}
    for kind, rs in runs.items():
        med[kind] = {k: statistics.median(x[k] for x in rs)
                     for k in ("best_valid_recall", "wall_s", "epochs_run", "steps", "train_examples")}
        m = med[kind]
        print(f"| {kind} | {m['best_valid_recall']:.4f} | {m['wall_s']:.1f} | {m['epochs_run']:.0f} | {m['steps']:.0f} "
              f"| {m['train_examples']:.0f} |")
    w, c = med["warm"], med["cold"]
    print(f"warm/cold valid recall@10 ratio: {w['best_valid_recall'] / c['best_valid_recall']:.3f}")
    print(f"warm/cold training time ratio: {w['wall_s'] / c['wall_s']:.3f} (wall); "
          f"{w['steps'] / c['steps']:.3f} (optimizer steps)")
    for kind, rs in runs.items():
        print(f"  {kind} per repeat: recall {[round(x['best_valid_recall'], 4) for x in rs]}, "
              f"wall s {[round(x['wall_s'], 1) for x in rs]}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
