"""The per-rank training loop that TorchDistributor runs: `train_fn(plan)` on every rank.

Each rank streams its own share of the prompt partition's Parquet files (`recllm.training.stream`:
a block at a time, length-bucketed batches, the read position in every checkpoint), trains with DDP
(gloo on CPU, nccl on GPU; bf16 autocast per `train.precision`) on the joint loss of every objective
(full or sampled softmax with logQ correction for retrieval, BCE for CTR impressions,
next-token loss after `<|lm|>` for causal backbones), checkpoints to safetensors, resumes
from the last checkpoint after a crash, and stops early on validation recall. Each epoch logs
examples/s, tokens/s and its FLOP/s (counted by torch's FlopCounterMode on a sample of
batches) as a fraction of the machine's fp32 matmul rate, measured at the start of the same
epoch. Every rank returns the same summary.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from transformers import get_constant_schedule, get_cosine_schedule_with_warmup

from recllm.model.batching import Collator
from recllm.model.urm import TEXT_HEAD_LR_SCALE, URM, ItemCatalog, LossTargets, load_tokenizer
from recllm.progress import progress
from recllm.training.checkpoints import load_checkpoint, save_checkpoint
from recllm.training.flops import flop_counter, matmul_rate
from recllm.training.stream import RowsPerBatch, ShardStream, lm_target_tokens

log = logging.getLogger(__name__)

BEST_DIR = "best"
INITIAL_DIR = "initial"


@dataclass(frozen=True)
class TrainingPlan:
    """What every rank needs, written by the driver (`recllm.training.driver.prepare_training`)."""

    model_version: str
    work_dir: str  # holds initial/ (tokenizer, catalogue, initial weights), checkpoints/ and best/
    files: list[str]  # the prompt partition's Parquet files; ranks split their rows
    lm_texts: list[str]  # per catalogue index, the text the LM head learns after <|lm|>
    item_counts: list[float]  # per catalogue index, positive events (sampled-softmax proposal)
    use_gpu: bool
    torch_threads: int
    seed: int
    epochs: int
    batch_size: int
    grad_accum_steps: int
    lr: float
    weight_decay: float
    full_softmax_max_items: int
    num_negatives: int
    ctr_loss_weight: float
    lm_loss_weight: float
    objectives: list[str] | None  # train on these objectives only (None: all)
    checkpoint_every_steps: int
    patience: int
    eval_k: int
    max_train_examples: int
    block_rows: int = 8192  # prompt rows a rank reads, tokenises and shuffles at a time (its memory bound)
    lm_fraction: float = 1.0  # share of retrieval examples that carry their LM target
    max_steps: int = 0  # stop after this many optimizer steps (0: no cap; benchmarks)
    lr_schedule: str = "constant"  # constant | cosine (warm-up, then decay to 0 over `epochs`)
    warmup_fraction: float = 0.05
    flop_sample_every: int = 20  # count the FLOPs of every n-th batch (the counter slows the batch it counts)
    precision: str = "auto"  # auto (bf16 autocast on a GPU, fp32 on a CPU) | fp32 | bf16
    batch_balance: str = "rows"  # rows | cost: batches cut to equal estimated cost (no rank waits for another)


def training_autocast(precision: str, use_cuda: bool) -> torch.autocast:
    """The forward and backward passes' autocast: bf16 when `precision` says so, or, with `auto`, on a GPU only (on a
    CPU with native bf16 it pays off for wide models only, and those learned less in the same time: README)."""
    enabled = precision == "bf16" or (precision == "auto" and use_cuda)
    return torch.autocast("cuda" if use_cuda else "cpu", dtype=torch.bfloat16, enabled=enabled)


# -- distributed helpers ----------------------------------------------------------------


def _dist():
    return torch.distributed


def _world() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Sum (or min/max) a few numbers across ranks; identity on one process."""
    if not (_dist().is_available() and _dist().is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if _dist().get_backend() == "nccl":
        t = t.cuda()
    reduce_op = {"sum": _dist().ReduceOp.SUM, "min": _dist().ReduceOp.MIN, "max": _dist().ReduceOp.MAX}[op]
    _dist().all_reduce(t, op=reduce_op)
    return t.cpu().tolist()


# -- loss and evaluation ----------------------------------------------------------------


@torch.no_grad()
def valid_recall_counts(model: URM, valid: ShardStream, collator: Collator, catalog: ItemCatalog, k: int,
                        batch_size: int, device) -> tuple[float, float]:
    """(hits, count) of full-ranking Recall@k over this rank's retrieval examples of `valid`."""
    raw = model.module if hasattr(model, "module") else model
    raw.eval()
    items = raw.item_vectors(catalog)
    everything = torch.arange(len(catalog), device=items.device)
    hits = count = 0.0
    for _, block in valid.blocks():
        idx = np.flatnonzero(block.retrieval)
        for start in range(0, len(idx), batch_size):
            part = block.take(idx[start:start + batch_size])
            batch = collator(part.tokens, part.history).to(device)
            users, _ = raw.encode(batch, catalog)
            scores = torch.nan_to_num(raw.scores(users, items, everything).float(), nan=-1e9)
            top = scores.topk(min(k, scores.shape[1]), dim=1).indices.cpu().numpy()
            hits += float((top == part.item[:, None]).any(axis=1).sum())
            count += len(part)
    raw.train()
    return hits, count


def adamw(model: URM, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with its fused kernel: one pass over each parameter's memory per step. At a million items the
    per-item tables dominate the step (the for-each AdamW made a 1M-item step 4.1x a 10k-item one; fused: 2.6x).
    The CTR text stack's scalars form a second group at `TEXT_HEAD_LR_SCALE` times `lr`, without decay."""
    head = model.text_head_parameters()
    rest = [p for p in model.parameters() if all(p is not h for h in head)]
    groups = [{"params": rest}] + ([{"params": head, "lr": lr * TEXT_HEAD_LR_SCALE, "weight_decay": 0.0}] if head else [])
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)


def clip_each_group(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    """Clips each parameter group's gradient norm on its own: one norm over all would let the CTR text stack's
    gradients (`adamw`'s second group) shrink the vectors' steps, and its loss would reach them after all."""
    for group in optimizer.param_groups:
        torch.nn.utils.clip_grad_norm_(group["params"], max_norm)


def lr_schedule(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup_fraction: float,
                done_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' constant or cosine-with-warm-up schedule over `total_steps`, placed at `done_steps`.

    A resumed run builds it at its checkpoint's step and so continues on the same curve.
    """
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    if schedule == "constant":
        return get_constant_schedule(optimizer, last_epoch=done_steps - 1)
    warmup = max(1, int(total_steps * warmup_fraction))
    return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps, last_epoch=done_steps - 1)


# -- the rank's entry point ---------------------------------------------------------------


def train_fn(plan: TrainingPlan) -> dict:
    """Train on this rank's shard; every rank returns the same summary dict."""
    rank, world, local_rank = _world()
    use_cuda = plan.use_gpu and torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not _dist().is_initialized():
        _dist().init_process_group("nccl" if use_cuda else "gloo")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(message)s")
    if not use_cuda:
        torch.set_num_threads(cpu_threads_per_rank(plan.torch_threads))
    torch.manual_seed(plan.seed)
    try:
        return _train(plan, rank, world, device, use_cuda)
    finally:
        if world > 1 and _dist().is_initialized():
            _dist().destroy_process_group()


def cpu_threads_per_rank(configured: int) -> int:
    """`train.torch_threads`, or when 0 the host's cores split among the ranks it runs.

    Set here rather than left to torchrun, which pins 1 thread only when it starts several
    ranks itself; a fixed setting gives the same floats in local and cluster mode.
    """
    if configured > 0:
        return configured
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (os.cpu_count() or 1) // local_ranks)


def _train(plan: TrainingPlan, rank: int, world: int, device, use_cuda: bool) -> dict:
    work = plan.work_dir
    initial = os.path.join(work, INITIAL_DIR)
    tokenizer = load_tokenizer(initial)
    catalog = ItemCatalog.load(initial).to(device)
    model = URM.from_pretrained(initial, device=device).train()
    collator = Collator(tokenizer, model.config)
    index = {item_id: i for i, item_id in enumerate(catalog.item_ids)}
    use_lm = model.config.causal and plan.lm_loss_weight > 0
    lm_tokens = lm_target_tokens(collator, plan.lm_texts) if use_lm else None

    def stream(split: str) -> ShardStream:
        return ShardStream(plan.files, rank, world, split, collator, index, lm_tokens if split == "train" else None,
                           plan.objectives, plan.block_rows)

    train, valid = stream("train"), stream("valid")
    bs, accum = plan.batch_size, plan.grad_accum_steps
    own_batches = n_batches = sum(train.batch_counts(bs))
    if plan.max_train_examples:
        n_batches = min(n_batches, math.ceil(plan.max_train_examples / bs))
    fewest, most = (int(_all_reduce([n_batches], op)[0]) for op in ("min", "max"))
    if rank == 0 and fewest < 0.8 * most:
        log.warning("the ranks' shares are uneven: every rank steps %d batches per epoch, the fewest any rank has, "
                    "where the largest share has %d; the rest of the larger shares goes unread each epoch",
                    fewest, most)
    n_batches = fewest
    n_train = int(_all_reduce([len(train)])[0])
    rows_per_batch = None
    if plan.batch_balance == "cost":  # batches of equal cost differ in rows: each row is to count alike
        retrieval_rows, ctr_rows, all_batches = _all_reduce([*train.kind_counts(), own_batches])
        rows_per_batch = RowsPerBatch(n_train / all_batches, retrieval_rows / all_batches, ctr_rows / all_batches,
                                      (plan.lm_fraction if use_lm else 0.0) * retrieval_rows / all_batches)
    log.info("rank %d/%d: %d train, %d valid examples (global train %d), %d batches per epoch in blocks of %d rows",
             rank, world, len(train), len(valid), n_train, n_batches, plan.block_rows)
    if n_batches == 0:
        raise ValueError("no training examples: every rank needs at least one (fewer processes, or more data)")

    total_steps = plan.epochs * math.ceil(n_batches / accum)
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    optimizer = adamw(model, plan.lr, plan.weight_decay)
    sampling = None
    if len(catalog) > plan.full_softmax_max_items:
        counts = torch.as_tensor(plan.item_counts, dtype=torch.float64, device=device)
        sampling = ((counts + 1.0) ** 0.75 / ((counts + 1.0) ** 0.75).sum()).float()

    state = {"epoch": 0, "batch": 0, "position": [0, 0], "step": 0, "best": -1.0, "best_epoch": -1, "bad_epochs": 0,
             "history": []}
    resumed = load_checkpoint(work, model, optimizer, device)
    resumed_from = 0
    if resumed:
        if "position" not in resumed:  # written before streaming: its epoch restarts
            resumed["batch"] = 0
        state.update(resumed)
        resumed_from = state["step"]
        log.info("resumed from checkpoint at step %d (epoch %d, batch %d, block %d batch %d)", state["step"],
                 state["epoch"], state["batch"], *state["position"])

    scheduler = lr_schedule(optimizer, plan.lr_schedule, total_steps, plan.warmup_fraction, state["step"])
    t0, seen, tokens_seen = time.time(), 0, 0
    autocast = training_autocast(plan.precision, use_cuda)
    if use_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    done = False
    while state["epoch"] < plan.epochs and state["bad_epochs"] < plan.patience and not done:
        # measured each epoch, every rank at once: a shared machine's rate drifts during a run
        machine_rate = _all_reduce([0.0 if use_cuda else matmul_rate()])[0]
        losses, epoch_start, epoch_examples, epoch_tokens = [], time.time(), 0, 0
        flops = counted_tokens = 0.0
        window_rows = window_batches = 0
        batches = train.batches(bs, plan.seed + state["epoch"] * 1000 + rank, tuple(state["position"]),
                                plan.lm_fraction if use_lm else 0.0, plan.batch_balance)
        # progress lines from rank 0 only (every rank runs n_batches); made inline, so a break ends them at once
        for position, ex in (progress(batches, n_batches - state["batch"], f"epoch {state['epoch']}", "batch", log)
                             if rank == 0 else batches):
            b = state["batch"]
            if b >= n_batches:
                break
            batch = collator(ex.tokens, ex.history, ex.lm_target if use_lm else None).to(device)
            retrieval_weight, ctr_weight, lm_weight = rows_per_batch.weights(ex) if rows_per_batch else (1.0,) * 3
            targets = LossTargets(
                items=torch.as_tensor(ex.item, device=device),
                labels=torch.as_tensor(ex.label, device=device, dtype=torch.float32),
                sampling_probs=sampling, num_negatives=plan.num_negatives, retrieval_weight=retrieval_weight,
                ctr_weight=plan.ctr_loss_weight * ctr_weight,
                lm_weight=plan.lm_loss_weight * lm_weight if use_lm else 0.0,
            )
            tokens = int(batch.attention_mask.sum())
            counter = flop_counter() if b % plan.flop_sample_every == 0 else None
            with counter or contextlib.nullcontext(), autocast:
                loss, parts = ddp(batch, catalog, targets)
                (loss / accum).backward()
            if counter is not None:
                flops += counter.get_total_flops()
                counted_tokens += tokens
            window_rows, window_batches = window_rows + len(ex), window_batches + 1
            if (b + 1) % accum == 0 or b + 1 == n_batches:
                max_norm = (rows_per_batch.clip_norm(_all_reduce([window_rows])[0], world * window_batches)
                            if rows_per_batch else 1.0)
                clip_each_group(optimizer, max_norm)
                window_rows = window_batches = 0
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
            losses.append(float(loss.detach()))
            epoch_examples += len(ex)
            epoch_tokens += tokens
            state["batch"] = b + 1
            state["position"] = [position[0], position[1] + 1]
            if state["step"] and state["step"] % plan.checkpoint_every_steps == 0 and (b + 1) % accum == 0:
                if rank == 0:
                    save_checkpoint(work, model, optimizer, state)
            if rank == 0 and (b % max(1, n_batches // 4) == 0):
                log.info("epoch %d batch %d/%d loss %.4f %s", state["epoch"], b + 1, n_batches, loss.item(),
                         {k: round(v, 4) for k, v in parts.items()})
            if plan.max_steps and state["step"] >= plan.max_steps:
                done = True
                break
        train_s = time.time() - epoch_start
        seen += epoch_examples
        tokens_seen += epoch_tokens
        flops_per_token = flops / counted_tokens if counted_tokens else 0.0
        hits, count, loss_sum, loss_n, ex_all, tok_all, flop_all = _all_reduce(
            [*valid_recall_counts(model, valid, collator, catalog, plan.eval_k, bs, device), sum(losses), len(losses),
             epoch_examples, epoch_tokens, flops_per_token * epoch_tokens])
        recall = hits / count if count else 0.0
        epoch_loss = loss_sum / max(loss_n, 1)
        speed = {"examples_per_s": ex_all / train_s, "tokens_per_s": tok_all / train_s, "flops_per_s": flop_all / train_s,
                 "matmul_rate": machine_rate, "matmul_fraction": flop_all / train_s / machine_rate if machine_rate else 0.0}
        state["history"].append({"epoch": state["epoch"], "loss": epoch_loss, f"recall@{plan.eval_k}": recall, **speed})
        if rank == 0:
            log.info("epoch %d done: loss %.4f valid recall@%d %.4f (%d examples); %.0f examples/s, %.0f tokens/s, "
                     "%.1f GFLOP/s = %.2f of the measured matmul rate %.1f GFLOP/s", state["epoch"], epoch_loss,
                     plan.eval_k, recall, count, speed["examples_per_s"], speed["tokens_per_s"],
                     speed["flops_per_s"] / 1e9, speed["matmul_fraction"], machine_rate / 1e9)
        if recall > state["best"]:
            state.update(best=recall, best_epoch=state["epoch"], bad_epochs=0)
            if rank == 0:
                model.save_pretrained(os.path.join(work, BEST_DIR), tokenizer, catalog.to("cpu"))
        else:
            state["bad_epochs"] += 1
        state["epoch"] += 1
        state["batch"], state["position"] = 0, [0, 0]
        if rank == 0:
            save_checkpoint(work, model, optimizer, state)

    elapsed = time.time() - t0
    seen_all, tokens_all = _all_reduce([seen, tokens_seen])
    peak = torch.cuda.max_memory_allocated(device) if use_cuda else _peak_rss()
    peak = _all_reduce([peak], "max")[0]
    if rank == 0 and not os.path.exists(os.path.join(work, BEST_DIR)):
        model.save_pretrained(os.path.join(work, BEST_DIR), tokenizer, catalog.to("cpu"))
    if world > 1:
        _dist().barrier()
    history = state["history"]
    return {
        "best_valid_recall": state["best"],
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "steps": state["step"],
        "resumed_from_step": resumed_from,
        "train_examples": n_train,
        "examples_per_s": seen_all / elapsed if elapsed else 0.0,
        "tokens_per_s": tokens_all / elapsed if elapsed else 0.0,
        "matmul_rate": float(np.median([h["matmul_rate"] for h in history])) if history else 0.0,
        "matmul_fraction": float(np.median([h["matmul_fraction"] for h in history])) if history else 0.0,
        "peak_memory_bytes": int(peak),
        "history": history,
        "world_size": world,
        "device": device.type,
    }


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
