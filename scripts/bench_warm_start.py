"""Warm-start benchmark (not a test): a warm-started night against a cold retrain on the same day.

    .venv/bin/python scripts/bench_warm_start.py [--config FILE] [--days 6] [--users 200] [--items 300]
                                                 [--seeds 7,1,2] [--replay 0.1,0.3] [--lr-scale 0.3,1]
                                                 [--repeats 1] [--processes 2]

For each generator seed (`--seeds`; each its own shop and lakehouse, the generator's default size
over `--days` days): trains a cold model as of day N-1 and registers it, lands day N, then trains
day N both ways with `run_training` (TorchDistributor, the configured defaults): cold, and warm
from the day N-1 model (`choose_start`) once per pair of a `--replay` value of
`train.warm_replay_fraction` and a `--lr-scale` value of `train.warm_lr_scale` (default: the
configured ones). Prints each run's best validation Recall@10, wall time (the whole
`run_training` call: planning, the warm examples, the ranks, registering), epochs, optimizer
steps and training examples, and the warm/cold ratios: medians over `--repeats` on one seed
(the runs are deterministic, so repeats measure only time), then over the seeds. Each repeat
starts every run afresh rather than resuming; its order alternates.
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


def comma_list(kind):
    """An argparse type: a comma-separated list of `kind`."""
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]


def bench_seed(seed: int, args, config, work: str, spark, embed) -> dict[str, list[dict]]:
    """One shop: its day N-1 parent, then day N cold and warm (one per replay fraction and lr scale), `--repeats` times."""
    lake = Lake(spark, root=os.path.join(work, f"lake-{seed}"), backend="deltars")
    config = replace(config, train=replace(config.train, model_root=os.path.join(work, f"models-{seed}")))
    days, _ = generate(SyntheticConfig(seed=seed, n_days=args.days, n_users=args.users, n_items=args.items))

    stage(f"seed {seed}: building the demo lakehouse up to day {args.days - 1}")
    parent_ds = land_and_prepare(lake, days[:-1], config, embed)
    stage(f"seed {seed}: cold parent model on {parent_ds}")
    parent = run_training(lake, parent_ds, config, start=Start("the parent"))
    print(f"seed {seed}: parent {parent['model_version']} on {parent_ds}: valid recall@10 "
          f"{parent['best_valid_recall']:.4f}, {parent['epochs_run']} epochs, {parent['train_examples']} train examples")
    stage(f"seed {seed}: landing day {args.days}")
    ds = days[-1].ds
    land_day(lake, days[-1])
    run_ingest(lake, ds, config.ingest)
    run_features(lake, ds, config.features, embed)
    run_prompts(lake, ds, config.prompts)

    kinds = [("cold", None)] + [(f"warm, replay {r}, lr x{s}", (r, s))  # (label, (replay fraction, lr scale))
                                for r in args.replay for s in args.lr_scale]
    runs: dict[str, list[dict]] = {kind: [] for kind, _ in kinds}
    for r in range(args.repeats):
        for kind, warm in (kinds if r % 2 else kinds[::-1]):
            run_config, start = config, Start("the comparison")
            if warm is not None:
                run_config = replace(config, train=replace(config.train, warm_replay_fraction=warm[0],
                                                           warm_lr_scale=warm[1]))
                start = choose_start(lake, ds, run_config)
                if not start.warm:
                    raise SystemExit(f"no warm start possible: {start.reason}")
            stage(f"seed {seed}, repeat {r + 1}: {kind} on {ds}" + (f" ({start.reason})" if start.warm else ""))
            runs[kind].append(timed_run(lake, ds, run_config, start))
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=6, help="generated days; day N-1 trains the parent (default 6)")
    p.add_argument("--users", type=int, default=SyntheticConfig().n_users)
    p.add_argument("--items", type=int, default=SyntheticConfig().n_items)
    p.add_argument("--seeds", type=comma_list(int), default=[SyntheticConfig().seed],
                   help="generator seeds, one shop each (default: the demo's)")
    p.add_argument("--replay", type=comma_list(float), default=None,
                   help="train.warm_replay_fraction of each warm run (default: the configured one)")
    p.add_argument("--lr-scale", type=comma_list(float), default=None,
                   help="train.warm_lr_scale of each warm run (default: the configured one)")
    p.add_argument("--config", default=None, help="YAML config (default: all defaults)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--processes", type=int, default=None, help="training processes (default: train.num_processes)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = tempfile.mkdtemp(prefix="bench_warm_start_")
    config = load_config(args.config)
    if args.processes:
        config = replace(config, train=replace(config.train, num_processes=args.processes))
    args.replay = args.replay or [config.train.warm_replay_fraction]
    args.lr_scale = args.lr_scale or [config.train.warm_lr_scale]
    spark, embed = build_spark(config), embedding_udf(config)
    by_seed = {seed: bench_seed(seed, args, config, work, spark, embed) for seed in args.seeds}

    print(f"\nmachine: {os.cpu_count()} cores; synthetic shop {args.users} users, {args.items}+ items, "
          f"{args.days} days, seeds {args.seeds}; {config.train.num_processes} training process(es); model "
          f"{config.model.hidden_size} wide, {config.model.num_layers} layer(s); warm: {config.train.warm_epochs} epochs")
    print("| seed | run | valid recall@10 | wall s | epochs | steps | train examples | recall / cold | wall / cold |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    ratios: dict[str, list[tuple[float, float]]] = {}
    for seed, runs in by_seed.items():
        med = {kind: {k: statistics.median(x[k] for x in rs)
                      for k in ("best_valid_recall", "wall_s", "epochs_run", "steps", "train_examples")}
               for kind, rs in runs.items()}
        c = med["cold"]
        for kind, m in med.items():
            ratio = (m["best_valid_recall"] / c["best_valid_recall"], m["wall_s"] / c["wall_s"])
            if kind != "cold":
                ratios.setdefault(kind, []).append(ratio)
            print(f"| {seed} | {kind} | {m['best_valid_recall']:.4f} | {m['wall_s']:.1f} | {m['epochs_run']:.0f} "
                  f"| {m['steps']:.0f} | {m['train_examples']:.0f} | {ratio[0]:.3f} | {ratio[1]:.3f} |")
        for kind, rs in runs.items():
            print(f"  seed {seed} {kind} per repeat: recall {[round(x['best_valid_recall'], 4) for x in rs]}, "
                  f"wall s {[round(x['wall_s'], 1) for x in rs]}")
    for kind, rs in ratios.items():
        print(f"{kind}: warm/cold valid recall@10 ratio {statistics.median(r for r, _ in rs):.3f} "
              f"(median over {len(rs)} seed(s): {[round(r, 3) for r, _ in rs]}), "
              f"training time ratio {statistics.median(t for _, t in rs):.3f} (wall)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
