"""Training benchmark (not a test): throughput for 1 vs 2 TorchDistributor processes, side by side.

    .venv/bin/python scripts/bench_train.py [--epochs 2] [--repeats 2] [--movielens PATH]

Builds the demo's synthetic lakehouse (land, ingest, features, prompts), then alternates
1-process and 2-process runs of the same plan for `--epochs` epochs each and reports
examples/s, tokens/s and peak memory per rank (medians over `--repeats`). Then it times a
full default training run (early stopping) on the demo data and, with `--movielens`, the
pipeline and a capped training run on ml-latest-small (leave-last-out split).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time

from pyspark.ml.torch.distributor import TorchDistributor

from jobs.common import embedding_udf
from recllm.config import load_config
from recllm.data.movielens import load_movielens
from recllm.data.synthetic import SyntheticConfig, generate
from recllm.lake import Lake
from recllm.nightly import land_and_prepare
from recllm.session import build_spark
from recllm.training.checkpoints import CHECKPOINT_DIR
from recllm.training.driver import prepare_training, run_training
from recllm.training.loop import BEST_DIR, TrainingPlan, train_fn


def stage(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build(lake: Lake, config, days) -> str:
    return land_and_prepare(lake, days, config, embedding_udf(config))


def throughput(plan: TrainingPlan, processes: int) -> dict:
    shutil.rmtree(os.path.join(plan.work_dir, CHECKPOINT_DIR), ignore_errors=True)
    shutil.rmtree(os.path.join(plan.work_dir, BEST_DIR), ignore_errors=True)
    start = time.time()
    result = TorchDistributor(num_processes=processes, local_mode=True, use_gpu=False).run(train_fn, plan)
    result["wall_s"] = time.time() - start
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--movielens", default=None, help="ml-latest-small folder (optional)")
    p.add_argument("--ml-epochs", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = tempfile.mkdtemp(prefix="bench_train_")
    config = load_config(overrides={"train": {"model_root": os.path.join(work, "models")}})
    spark = build_spark(config)
    lake = Lake(spark, root=os.path.join(work, "lake"), backend="deltars")
    stage("building the demo lakehouse")
    days, _ = generate(SyntheticConfig())
    ds = build(lake, config, days)
    plan = dataclasses.replace(prepare_training(lake, ds, config), epochs=args.epochs, patience=args.epochs + 1)

    runs: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(args.repeats):
        for n in ((1, 2) if r % 2 == 0 else (2, 1)):
            stage(f"repeat {r + 1}: {n} process(es), {args.epochs} epoch(s)")
            runs[n].append(throughput(plan, n))
    print(f"\nmachine: {os.cpu_count()} cores; demo data: {runs[1][0]['train_examples']} train examples")
    print("| processes | examples/s | tokens/s | peak memory per rank (MiB) | wall s |")
    print("|---|---:|---:|---:|---:|")
    med = {}
    for n, rs in runs.items():
        med[n] = {k: statistics.median(x[k] for x in rs) for k in ("examples_per_s", "tokens_per_s", "peak_memory_bytes", "wall_s")}
        m = med[n]
        print(f"| {n} | {m['examples_per_s']:.0f} | {m['tokens_per_s']:.0f} | {m['peak_memory_bytes'] / 2**20:.0f} | {m['wall_s']:.1f} |")
    print(f"2 vs 1 process examples/s ratio: {med[2]['examples_per_s'] / med[1]['examples_per_s']:.2f}x")
    for n, rs in runs.items():
        print(f"  {n} process(es) examples/s per repeat: {[round(x['examples_per_s']) for x in rs]}")

    stage("full default training run on the demo data")
    shutil.rmtree(os.path.join(work, "models"), ignore_errors=True)
    start = time.time()
    result = run_training(lake, ds, config)
    print(f"\ndemo data, default config: {time.time() - start:.0f}s to train ({result['epochs_run']} epochs, "
          f"best valid recall@10 {result['best_valid_recall']:.4f} at epoch {result['best_epoch']})")

    if args.movielens:
        ml_config = load_config(overrides={
            "train": {"model_root": os.path.join(work, "ml-models"), "epochs": args.ml_epochs},
            "prompts": {"split": "leave_last_out", "ctr": False},
        })
        ml_lake = Lake(spark, root=os.path.join(work, "ml-lake"), backend="deltars")
        stage("ml-latest-small: land, ingest, features, prompts")
        start = time.time()
        ml_ds = build(ml_lake, ml_config, [load_movielens(args.movielens)])
        prep = time.time() - start
        stage(f"ml-latest-small: training {args.ml_epochs} epoch(s)")
        start = time.time()
        ml = run_training(ml_lake, ml_ds, ml_config)
        took = time.time() - start
        print(f"ml-latest-small: pipeline {prep:.0f}s; training {took:.0f}s for {ml['epochs_run']} epoch(s) "
              f"({ml['train_examples']} train examples, {ml['examples_per_s']:.0f} examples/s, "
              f"best valid recall@10 {ml['best_valid_recall']:.4f})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
