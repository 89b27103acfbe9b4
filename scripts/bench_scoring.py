"""Benchmark nightly scoring: the pandas-UDF path, chunked top-K at catalogue scale, set-out vs autoregressive.

    .venv/bin/python scripts/bench_scoring.py [--users 400] [--items 300] [--repeats 3] [--sizes 10000,100000,1000000]
        [--user-counts 256,1024,4096]

Three measures, each the median of `--repeats` runs after one warm-up, side by side in one run
(the two sides of (a) and of (c) alternate within each round, so load changes hit both):

(a) UDF vs plain loop. A synthetic lake (`--users`, `--items`, two days) gets features and
    prompts; a model in the default shape (`model:` defaults: 2-layer, 128-wide Qwen2) is
    built by `prepare_training` and registered untrained (weights do not change the cost).
    The same inference prompts of day 2 are scored by the job's candidates stage:
    `mapInPandas(udfs.scoring.candidates_fn)` over a local[2] session, one torch thread per
    task, purchases excluded, counted so every row is produced; and by a plain PyTorch
    loop in this process (`Scorer.user_vectors` + `Scorer.top_k`, same batches, exclusions,
    torch's default threads). Reported: prompts per second and the ratio. The full
    `run_scoring` (all three tables; each run writes a new catalogue snapshot, so every
    worker loads the model again) is timed too.
(b) Top-K vs catalogue size. In a subprocess per size (so peak memory is that size's alone),
    random unit item vectors [N, 64] and 256 users with 4 query vectors go through
    `Scorer.top_k(k=50)`, chunked (65536 items at a time, the job's default) and one-shot
    (chunk = N, the whole [256 x 4 x N] score tensor at once); then chunked over 100,000 items
    for each of `--user-counts` users. Reported: time, users per second and peak RSS above
    the process's footprint once the item vectors exist. One torch thread (one Spark task).
(c) Set-out vs autoregressive generation with the same backbone. Set-out (the job): one
    forward pass of the prompt plus M query tokens, then a top-K over every item's output
    vector. Autoregressive (how generative recommenders such as P5 emit item ids): the
    same backbone, with every item given its own token in an extended vocabulary (its
    input embedding is the item's fused soft token, and the output layer is tied to those
    embeddings); the prompt (without query tokens, left-padded) is encoded once into a KV
    cache, then K item tokens are decoded greedily, one per step, each step a forward
    pass of one token through the cached backbone and an argmax over the item vocabulary
    (items already emitted masked, so the K are distinct). Both start from the same
    tokenised batch of 256 prompts and produce K items each; reported: wall time for
    K = 10 and 50 and the slowdown, over the real catalogue and over 100,000 synthetic
    items (random item tokens and output vectors at the real ones' scale), where every
    decoding step also pays a projection onto the whole item vocabulary.

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from bench_common import log, median_time, reset_peak_rss, status_mb
from recllm.model.urm import URM

def paired_medians(fns: dict, repeats: int) -> tuple[dict[str, float], dict]:
    """Median seconds of each of several functions measured side by side: one untimed warm-up
    each, then `repeats` rounds running all of them, alternating which goes first, so a change
    in machine load hits every side alike. Returns medians and the last result of each."""
    results = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            results[name] = fns[name]()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}, results


# -- (b) top-K at catalogue scale, one size per subprocess ------------------------------------


class ScoreHead(torch.nn.Module):
    """Just the scoring head of a URM (scale and max over query vectors), for synthetic item vectors."""

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.log_scale = torch.nn.Parameter(torch.tensor(float(np.log(scale))))
        self.retrieval_prior = self.item_bias = None

    similarity = URM.similarity
    scores = URM.scores


def topk_worker(n_items: int, chunk: int, repeats: int, n_users: int = 256) -> dict:
    from recllm.model.inference import Scorer
    from recllm.model.urm import ItemCatalog

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    items = torch.nn.functional.normalize(torch.randn(n_items, 64, generator=gen), dim=-1)
    users = torch.nn.functional.normalize(torch.randn(n_users, 4, 64, generator=gen), dim=-1)
    catalog = ItemCatalog(torch.zeros(1, 1).expand(n_items, 1), torch.zeros(1, 0).expand(n_items, 0),
                          torch.zeros(1, dtype=torch.bool).expand(n_items), [])
    scorer = Scorer(ScoreHead().eval(), None, catalog, items, torch.device("cpu"))
    exclude = [list(range(i % n_items, i % n_items + 5)) for i in range(n_users)]
    reset_peak_rss()
    base = status_mb("VmRSS")
    seconds, (idx, _) = median_time(lambda: scorer.top_k(users, 50, chunk_size=chunk, exclude=exclude), repeats)
    peak = status_mb("VmHWM")
    return {"n_items": n_items, "n_users": n_users, "chunk": chunk, "seconds": seconds, "peak_above_base_mb": peak - base,
            "item_vectors_mb": items.numel() * 4 / 2**20, "check": int(idx[0, 0])}


def bench_topk(sizes: list[int], user_counts: list[int], repeats: int) -> list[dict]:
    """Chunked vs one-shot over each catalogue size (256 users), then chunked over 100k items by user count."""
    runs = [(n, chunk, 256) for n in sizes for chunk in (65536, n)]
    runs += [(100000, 65536, u) for u in user_counts if u != 256]
    rows = []
    for n, chunk, users in runs:
        if chunk == n and n * users * 4 * 4 * 2.5 > _mem_available() * 0.7:
            log(f"top-K one-shot over {n} items skipped: not enough free memory")
            continue
        log(f"top-K over {n} items, chunk {chunk}, {users} users")
        out = subprocess.run([sys.executable, __file__, "--topk-worker", str(n), str(chunk), str(repeats), str(users)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# -- the lake and model for (a) and (c) --------------------------------------------------------


def build_world(root: str, users: int, items: int):
    from jobs.common import embedding_udf
    from recllm.config import load_config
    from recllm.data.synthetic import SyntheticConfig, generate
    from recllm.lake import Lake
    from recllm.nightly import land_and_prepare
    from recllm.registry import register_model
    from recllm.session import build_spark
    from recllm.training.driver import prepare_training
    from recllm.training.loop import BEST_DIR, INITIAL_DIR

    config = load_config(overrides={
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "app_name": "recllm-bench-scoring"},
        "train": {"model_root": os.path.join(root, "models")},
        "score": {"work_root": os.path.join(root, "scoring")},
    })
    spark = build_spark(config)
    lake = Lake(spark, root=os.path.join(root, "lake"), backend="deltars")
    days, _ = generate(SyntheticConfig(seed=3, n_users=users, n_items=items, n_days=2))
    ds = land_and_prepare(lake, days, config, embedding_udf(config))
    plan = prepare_training(lake, ds, config)
    best = os.path.join(plan.work_dir, BEST_DIR)
    shutil.copytree(os.path.join(plan.work_dir, INITIAL_DIR), best, dirs_exist_ok=True)
    register_model(lake, ds, config, plan.model_version, best, {"note": "untrained, for benchmarking"})
    return lake, config, ds


# -- (a) the UDF path vs a plain loop -------------------------------------------------------------


def bench_udf(lake, config, ds: str, repeats: int) -> dict:
    from pyspark.sql import functions as F

    from jobs.common import scoring_functions
    from recllm.model.inference import Scorer
    from recllm.model.urm import ItemCatalog
    from recllm.registry import resolve_model
    from recllm.scoring.batch import CANDIDATE_SCHEMA, WorkerSpec
    from recllm.scoring.stage import current_features, fit_catalog, infer_prompts, purchases, run_scoring, write_catalog_snapshot
    from udfs.scoring import candidates_fn

    sc = config.score
    model = resolve_model(lake)
    features, _ = current_features(lake)
    catalog = fit_catalog(ItemCatalog.from_features(features), model)
    snapshot = write_catalog_snapshot(catalog, os.path.join(sc.work_root, "bench-catalog"))
    spec = WorkerSpec(model_dir=model.path, catalog_dir=snapshot, device="cpu", torch_threads=sc.torch_threads,
                      batch_size=sc.batch_size, chunk_size=sc.chunk_size)
    prompts = (infer_prompts(lake, ds).select("objective", "user_id", "prompt_text", "history_item_ids")
               .join(purchases(lake, ds), "user_id", "left")
               .withColumn("exclude_item_ids", F.coalesce("exclude_item_ids", F.array().cast("array<string>"))))
    pdf = prompts.toPandas()
    n = len(pdf)
    tasks = lake.spark.sparkContext.defaultParallelism
    staged = prompts.repartition(tasks).cache()
    staged.count()
    log(f"(a) {n} prompts, catalogue {len(catalog)} items, {tasks} tasks")
    scorer = Scorer.load(model.path, catalog=catalog, device="cpu")
    threads = torch.get_num_threads()

    def plain():
        rows = 0
        for start in range(0, n, sc.batch_size):
            part = pdf.iloc[start:start + sc.batch_size]
            users = scorer.user_vectors(part.prompt_text.tolist(), [list(h) for h in part.history_item_ids],
                                        sc.batch_size)
            exclude = [[scorer.index[i] for i in e if i in scorer.index] for e in part.exclude_item_ids]
            idx, _ = scorer.top_k(users, sc.top_k, sc.chunk_size, exclude=exclude)
            rows += idx.size
        return rows

    medians, _ = paired_medians({
        "udf": lambda: staged.mapInPandas(candidates_fn(spec, sc.top_k), CANDIDATE_SCHEMA).count(),
        "plain": plain,
    }, repeats)
    udf_s, plain_s = medians["udf"], medians["plain"]
    log(f"(a) udf {udf_s:.2f}s plain {plain_s:.2f}s; now the whole job")
    functions = scoring_functions()
    job_s, report = median_time(lambda: run_scoring(lake, ds, config, functions), repeats, warmup=0)
    return {"prompts": n, "tasks": tasks, "udf_s": udf_s, "plain_s": plain_s, "plain_threads": threads,
            "job_s": job_s, "report": report}


# -- (c) set-out vs autoregressive ------------------------------------------------------------------


@torch.no_grad()
def generate_items(model, catalog, item_tokens: torch.Tensor, batch, k: int) -> torch.Tensor:
    """Greedy decoding of k distinct item tokens per prompt with a KV cache (see the module docstring)."""
    emb = model.backbone.get_input_embeddings()(batch.input_ids)
    if len(batch.slot_items):
        emb = emb.index_put((batch.slot_rows, batch.slot_cols), model.fusion(batch.slot_items, catalog).to(emb.dtype))
    lengths = batch.query_cols[:, 0]  # the prompt's tokens end where the query tokens begin
    b, width = emb.shape[0], int(lengths.max())
    x = emb.new_zeros(b, width, emb.shape[2])
    mask = torch.zeros(b, width, dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        x[row, width - n:] = emb[row, :n]
        mask[row, width - n:] = 1
    position = (mask.cumsum(1) - 1).clamp(min=0)
    out = model.backbone(inputs_embeds=x, attention_mask=mask, position_ids=position, use_cache=True)
    past, hidden = out.past_key_values, out.last_hidden_state[:, -1]
    chosen = torch.empty(b, k, dtype=torch.long)
    emitted = torch.zeros(b, item_tokens.shape[0], dtype=torch.bool)
    rows = torch.arange(b)
    for step in range(k):
        logits = (hidden @ item_tokens.T).masked_fill(emitted, -float("inf"))
        nxt = logits.argmax(dim=1)
        chosen[:, step] = nxt
        emitted[rows, nxt] = True
        if step == k - 1:
            break
        mask = torch.cat([mask, torch.ones(b, 1, dtype=torch.long)], dim=1)
        position = position[:, -1:] + 1
        out = model.backbone(inputs_embeds=item_tokens[nxt].unsqueeze(1), attention_mask=mask,
                             position_ids=position, past_key_values=past, use_cache=True)
        past, hidden = out.past_key_values, out.last_hidden_state[:, -1]
    return chosen


def bench_generation(lake, ds: str, repeats: int, n_prompts: int = 256, big: int = 100000) -> list[dict]:
    """(c) for the real catalogue and for `big` synthetic items (random item tokens and output vectors)."""
    from recllm.model.inference import Scorer
    from recllm.model.urm import ItemCatalog
    from recllm.registry import resolve_model
    from recllm.scoring.stage import current_features, fit_catalog

    model_ref = resolve_model(lake)
    features, _ = current_features(lake)
    catalog = fit_catalog(ItemCatalog.from_features(features), model_ref)
    scorer = Scorer.load(model_ref.path, catalog=catalog, device="cpu")
    rows = (lake.read("prompts", ds=ds).where("split = 'infer' AND objective = 'click'")
            .select("prompt_text", "history_item_ids").limit(n_prompts).toPandas())
    prompts, histories = rows.prompt_text.tolist(), [list(h) for h in rows.history_item_ids]
    model = scorer.model
    batch = scorer.collator(scorer.collator.tokenize(prompts), [[scorer.index[i] for i in h] for h in histories])
    with torch.no_grad():
        real_tokens = model.fusion(torch.arange(len(catalog)), scorer.catalog)
    gen = torch.Generator().manual_seed(0)
    catalogues = {
        len(catalog): (real_tokens, scorer.item_vectors),
        big: (torch.randn(big, real_tokens.shape[1], generator=gen) * real_tokens.std(),
              torch.nn.functional.normalize(torch.randn(big, scorer.item_vectors.shape[1], generator=gen), dim=-1)),
    }
    out = []
    for n_items, (item_tokens, item_vectors) in catalogues.items():
        pool = Scorer(model, scorer.collator, _sized(scorer.catalog, n_items), item_vectors, scorer.device)

        def set_out(k):
            with torch.no_grad():
                users, _ = model.encode(batch, scorer.catalog)
            return pool.top_k(users, k)

        for k in (10, 50):
            medians, results = paired_medians({
                "set_out": lambda: set_out(k),
                "autoregressive": lambda: generate_items(model, scorer.catalog, item_tokens, batch, k),
            }, repeats)
            set_s, ar_s, chosen = medians["set_out"], medians["autoregressive"], results["autoregressive"]
            assert all(len(set(r)) == k for r in chosen.tolist())
            out.append({"k": k, "items": n_items, "prompts": len(prompts), "set_out_s": set_s,
                        "autoregressive_s": ar_s})
            log(f"(c) {out[-1]}")
    return out


def _sized(catalog, n: int):
    """A catalogue stand-in of n items for top_k's pool (top_k only needs its length)."""
    from recllm.model.urm import ItemCatalog

    return ItemCatalog(torch.zeros(1, 1).expand(n, 1), torch.zeros(1, 0).expand(n, 0),
                       torch.zeros(1, dtype=torch.bool).expand(n), [])


# -- main -------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--user-counts", default="256,1024,4096", help="users for top-K over 100k items")
    p.add_argument("--topk-worker", nargs=4, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.topk_worker:
        print(json.dumps(topk_worker(*args.topk_worker)))
        return
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    root = tempfile.mkdtemp(prefix="recllm-bench-scoring-")
    try:
        log(f"building a lake of {args.users} users and {args.items} items under {root}")
        lake, config, ds = build_world(root, args.users, args.items)
        udf = bench_udf(lake, config, ds, args.repeats)
        gen = bench_generation(lake, ds, args.repeats)
        lake.spark.stop()
        topk = bench_topk([int(s) for s in args.sizes.split(",")], [int(u) for u in args.user_counts.split(",")],
                          args.repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    cores = os.cpu_count()
    print(f"\nrecllm scoring benchmark ({cores} cores, torch {torch.__version__}, CPU; medians of {args.repeats})\n")
    print("(a) candidates for the same prompts: pandas UDF (Spark local[2], 1 torch thread/task) vs plain PyTorch loop")
    print(f"    {udf['prompts']} prompts (users x objectives), top-{config.score.top_k}, batch {config.score.batch_size}")
    print("    | path                                   | seconds | prompts/s |")
    print("    |----------------------------------------|--------:|----------:|")
    print(f"    | mapInPandas candidates_fn ({udf['tasks']} tasks)      | {udf['udf_s']:7.2f} | {udf['prompts'] / udf['udf_s']:9.1f} |")
    print(f"    | plain loop ({udf['plain_threads']} torch threads)            | {udf['plain_s']:7.2f} | {udf['prompts'] / udf['plain_s']:9.1f} |")
    print(f"    UDF / plain throughput: {udf['plain_s'] / udf['udf_s']:.2f}x; whole score job (3 tables): {udf['job_s']:.1f}s "
          f"({udf['report'].candidates} candidates, {udf['report'].ctr_scores} ctr, {udf['report'].cold_start_fills} fills)")
    print("\n(b) top-50 over the catalogue, users x 4 query vectors, 1 torch thread (peak RSS: VmHWM reset first)")
    print("    | items     | users | chunk     | seconds | users/s | peak RSS above base (MB) | item vectors (MB) |")
    print("    |----------:|------:|----------:|--------:|--------:|-------------------------:|------------------:|")
    for r in topk:
        chunk = "one-shot" if r["chunk"] >= r["n_items"] and r["n_items"] > 65536 else str(r["chunk"])
        print(f"    | {r['n_items']:9d} | {r['n_users']:5d} | {chunk:>9} | {r['seconds']:7.3f} | "
              f"{r['n_users'] / r['seconds']:7.0f} | {r['peak_above_base_mb']:24.0f} | {r['item_vectors_mb']:17.0f} |")
    print("\n(c) K items for the same prompts with the same backbone: set-out vs greedy autoregressive (KV cache)")
    print("    | items  | K  | prompts | set-out s | autoregressive s | slowdown |")
    print("    |-------:|---:|--------:|----------:|-----------------:|---------:|")
    for r in gen:
        print(f"    | {r['items']:6d} | {r['k']:2d} | {r['prompts']:7d} | {r['set_out_s']:9.3f} | "
              f"{r['autoregressive_s']:16.3f} | {r['autoregressive_s'] / r['set_out_s']:7.1f}x |")


if __name__ == "__main__":
    main()
