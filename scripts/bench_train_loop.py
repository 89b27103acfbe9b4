"""Training loop benchmark (not a test): memory against data size, matmul fraction, cost of the machinery.

    .venv/bin/python scripts/bench_train_loop.py [--steps 30] [--repeats 2] [--rows 8192]

Builds the demo's synthetic lakehouse and the default model's plan, then writes synthetic
prompt files of `--rows` training rows (1x) and of ten times as many (10x, the same rows
repeated). Side by side, `--repeats` times, it runs:
  * the project's training (`train_fn` under TorchDistributor, 2 local processes, the
    default config) for `--steps` optimizer steps on 1x and on 10x: peak RSS per rank,
    and the epoch's FLOP/s over the fp32 matmul rate that run measured. The loop estimates
    its FLOPs from every 20th batch, which on so few steps is two batches per rank, and a
    batch's FLOPs per token vary with its length; so
    the fraction printed is of the FLOPs of every batch the 1x runs train on, counted once
    here (untimed: FLOPs depend on shapes, not on weights), over the time and the rate the
    run measured;
  * a minimal single-process PyTorch loop (forward and backward under the same autocast,
    clip, AdamW step; the faster of one thread and all cores) of the same initial model
    over the same batches, collated in advance.
It prints medians, and as its last three lines:
  memory 10x/1x: R            (peak RSS per rank, 10x over 1x)
  matmul fraction: F          (training FLOP/s, every batch counted, over the measured matmul rate, 1x runs)
  speedup vs plain loop: S    (examples/s of the project's training over the plain loop's)
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

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from pyspark.ml.torch.distributor import TorchDistributor

from jobs.common import embedding_udf
from recllm.config import load_config
from recllm.data.synthetic import SyntheticConfig, generate
from recllm.lake import Lake
from recllm.model.batching import Collator
from recllm.model.urm import URM, ItemCatalog, LossTargets, load_tokenizer
from recllm.nightly import land_and_prepare
from recllm.session import build_spark
from recllm.training.checkpoints import CHECKPOINT_DIR
from recllm.training.driver import prepare_training
from recllm.training.flops import flop_counter
from recllm.training.loop import BEST_DIR, INITIAL_DIR, TrainingPlan, train_fn, training_autocast
from recllm.training.stream import ShardStream, lm_target_tokens


def stage(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def synthetic_prompts(plan: TrainingPlan, rows: int, folder: str) -> dict[str, list[str]]:
    """1x: `rows` training rows (the demo's, cycled) plus its validation rows; 10x: the training rows ten times."""
    table = pa.concat_tables([pq.read_table(f) for f in sorted(plan.files)])
    train = table.filter(pc.equal(table["split"], "train"))
    valid = table.filter(pc.equal(table["split"], "valid"))
    train = pa.concat_tables([train] * (rows // len(train) + 1)).slice(0, rows)
    out = {}
    for name, copies in (("1x", 1), ("10x", 10)):
        os.makedirs(os.path.join(folder, name))
        path = os.path.join(folder, name, "part-0.parquet")
        pq.write_table(pa.concat_tables([train] * copies + [valid]), path)
        out[name] = [path]
    return out


def project_run(plan: TrainingPlan) -> dict:
    shutil.rmtree(os.path.join(plan.work_dir, CHECKPOINT_DIR), ignore_errors=True)
    shutil.rmtree(os.path.join(plan.work_dir, BEST_DIR), ignore_errors=True)
    result = TorchDistributor(num_processes=2, local_mode=True, use_gpu=False).run(train_fn, plan)
    epoch = result["history"][0]
    return {"peak": result["peak_memory_bytes"], "examples_per_s": epoch["examples_per_s"],
            "matmul_rate": epoch["matmul_rate"], "matmul_fraction": epoch["matmul_fraction"]}


def plain_batches(plan: TrainingPlan, steps: int):
    """The batches the two ranks see in their first `steps` steps, collated, with their targets."""
    initial = os.path.join(plan.work_dir, INITIAL_DIR)
    model = URM.from_pretrained(initial)
    collator = Collator(load_tokenizer(initial), model.config)
    catalog = ItemCatalog.load(initial)
    index = {item: i for i, item in enumerate(catalog.item_ids)}
    lm_tokens = lm_target_tokens(collator, plan.lm_texts)
    batches = []
    for rank in range(2):
        stream = ShardStream(plan.files, rank, 2, "train", collator, index, lm_tokens, None, plan.block_rows)
        for n, (_, ex) in enumerate(stream.batches(plan.batch_size, plan.seed + rank, lm_fraction=plan.lm_fraction,
                                                    balance=plan.batch_balance)):
            if n == steps:
                break
            targets = LossTargets(items=torch.as_tensor(ex.item), labels=torch.as_tensor(ex.label, dtype=torch.float32),
                                  ctr_weight=plan.ctr_loss_weight, lm_weight=plan.lm_loss_weight)
            batches.append((collator(ex.tokens, ex.history, ex.lm_target), targets, len(ex)))
    return batches, catalog


def initial_model(plan: TrainingPlan) -> URM:
    """The model every rank starts from, in training mode."""
    return URM.from_pretrained(os.path.join(plan.work_dir, INITIAL_DIR)).train()


def forward_backward(model: URM, catalog, plan: TrainingPlan, batch, targets) -> None:
    """One batch's loss and gradients, under the project's precision: the arithmetic its ranks do."""
    with training_autocast(plan.precision, use_cuda=False):
        loss, _ = model(batch, catalog, targets)
        loss.backward()


def counted_flops(plan: TrainingPlan, batches, catalog) -> float:
    """FLOPs of forward and backward over every batch, as `FlopCounterMode` counts them (untimed)."""
    model = initial_model(plan)
    total = 0.0
    for batch, targets, _ in batches:
        with flop_counter() as counter:
            forward_backward(model, catalog, plan, batch, targets)
        model.zero_grad(set_to_none=True)
        total += counter.get_total_flops()
    return total


def plain_loop(plan: TrainingPlan, batches, catalog, threads: int) -> float:
    """Examples/s of forward, backward, clip and AdamW step over pre-collated batches, one process."""
    torch.set_num_threads(threads)
    torch.manual_seed(plan.seed)
    model = initial_model(plan)
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)

    def step(batch, targets) -> None:
        forward_backward(model, catalog, plan, batch, targets)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(*batches[0][:2])  # untimed: warms the allocator and the optimizer state
    start = time.perf_counter()
    for batch, targets, _ in batches:
        step(batch, targets)
    return sum(n for _, _, n in batches) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    p.add_argument("--repeats", type=int, default=2, help="rounds of the three runs, alternating their order")
    p.add_argument("--rows", type=int, default=8192, help="training rows of the 1x prompts (10x has ten times as many)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = tempfile.mkdtemp(prefix="bench_train_loop_")
    config = load_config(overrides={"train": {"model_root": os.path.join(work, "models")}})
    lake = Lake(build_spark(config), root=os.path.join(work, "lake"), backend="deltars")
    stage("building the demo lakehouse and the default model's plan")
    days, _ = generate(SyntheticConfig())
    ds = land_and_prepare(lake, days, config, embedding_udf(config))
    plan = prepare_training(lake, ds, config)
    files = synthetic_prompts(plan, args.rows, os.path.join(work, "prompts"))
    plans = {name: dataclasses.replace(plan, files=f, epochs=1, patience=2, max_steps=args.steps)
             for name, f in files.items()}
    batches, catalog = plain_batches(plans["1x"], args.steps)
    flops_1x, examples_1x = counted_flops(plans["1x"], batches, catalog), sum(n for _, _, n in batches)

    runs: dict[str, list] = {"1x": [], "10x": [], "plain": []}
    for r in range(args.repeats):
        for name in (("1x", "10x", "plain") if r % 2 == 0 else ("plain", "10x", "1x")):
            stage(f"repeat {r + 1}: {name}")
            if name == "plain":  # the faster of one thread and all cores: the strongest reference
                runs[name].append(max(plain_loop(plan, batches, catalog, n) for n in sorted({1, os.cpu_count() or 1})))
            else:
                runs[name].append(project_run(plans[name]))

    for run in runs["1x"]:  # the run's own time and rate, every batch's FLOPs
        run["counted_fraction"] = flops_1x * run["examples_per_s"] / examples_1x / run["matmul_rate"]

    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    plain = statistics.median(runs["plain"])
    print(f"\nmachine: {os.cpu_count()} cores; {args.steps} steps of 2 batches per run ({examples_1x} examples on 1x; "
          f"batches of {plan.batch_size} rows on average, cut by {plan.batch_balance}); "
          f"1x = {args.rows} training rows, 10x = {10 * args.rows}")
    print(f"1x: {flops_1x / examples_1x / 1e6:.1f} MFLOP per example, every batch counted")
    print("| run | examples/s | peak RSS per rank (MiB) | matmul fraction (the loop's estimate) |")
    print("|---|---:|---:|---:|")
    for name in ("1x", "10x"):
        print(f"| project, {name} | {median(name, 'examples_per_s'):.0f} | {median(name, 'peak') / 2**20:.0f} | "
              f"{median(name, 'matmul_fraction'):.2f} |")
    print(f"| plain loop, 1 process (faster of 1 and {os.cpu_count()} threads) | {plain:.0f} | | |")
    for name in runs:
        print(f"  {name} per repeat: {runs[name]}")
    shutil.rmtree(work, ignore_errors=True)
    print(f"memory 10x/1x: {median('10x', 'peak') / median('1x', 'peak'):.2f}")
    print(f"matmul fraction: {median('1x', 'counted_fraction'):.2f}")
    print(f"speedup vs plain loop: {median('1x', 'examples_per_s') / plain:.2f}")


if __name__ == "__main__":
    main()
