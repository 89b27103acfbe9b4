"""The per-rank training loop that TorchDistributor runs: `train_fn(plan)` on every rank.

Each rank reads its own share of the prompt partition's Parquet files, trains with DDP
(gloo on CPU, nccl on GPU, bf16 autocast on GPU) on the joint loss of every objective
(full or sampled softmax with logQ correction for retrieval, BCE for CTR impressions,
next-token loss after `<|lm|>` for causal backbones), checkpoints to safetensors, resumes
from the last checkpoint after a crash, and stops early on validation recall. Every rank
returns the same summary.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from recllm.model.batching import Collator
from recllm.model.urm import URM, ItemCatalog, LossTargets, load_tokenizer
from recllm.training.checkpoints import load_checkpoint, save_checkpoint

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


@dataclass
class Examples:
    """Tokenised examples of one split on one rank (lists aligned by example)."""

    tokens: list[list[int]]
    history: list[list[int]]
    item: np.ndarray  # the target item (retrieval) or the impressed item (CTR); -1 where none
    label: np.ndarray  # CTR label; nan for retrieval examples
    lm_target: list[list[int] | None]

    @property
    def retrieval(self) -> np.ndarray:
        return np.isnan(self.label) & (self.item >= 0)

    def __len__(self) -> int:
        return len(self.tokens)

    def take(self, idx) -> "Examples":
        return Examples(
            [self.tokens[i] for i in idx], [self.history[i] for i in idx], self.item[idx],
            self.label[idx], [self.lm_target[i] for i in idx],
        )


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


# -- reading a rank's shard -------------------------------------------------------------


def shard_ranges(row_counts: list[int], rank: int, world: int) -> list[tuple[int, int, int]]:
    """(file position, first row, row count) of this rank's contiguous share of all rows.

    Ranks split the rows, not the files: files differ in size, and DDP steps every rank
    the same number of batches, so a rank with a small file would cap every other
    rank's epoch at its own size.
    """
    total = sum(row_counts)
    lo, hi = total * rank // world, total * (rank + 1) // world
    out, start = [], 0
    for position, n in enumerate(row_counts):
        a, b = max(lo, start), min(hi, start + n)
        if a < b:
            out.append((position, a - start, b - a))
        start += n
    return out


def read_examples(files: list[str], rank: int, world: int) -> pa.Table:
    """This rank's rows of the prompt files (only the files its share touches are read)."""
    columns = ["objective", "split", "prompt_text", "history_item_ids", "target_item_ids", "label"]
    files = sorted(files)
    counts = [pq.ParquetFile(f).metadata.num_rows for f in files]
    tables = [pq.read_table(files[p], columns=columns).slice(first, n) for p, first, n in shard_ranges(counts, rank, world)]
    return pa.concat_tables(tables) if tables else pa.table({c: [] for c in columns})


def to_examples(table: pa.Table, split: str, collator: Collator, index: dict[str, int],
                lm_texts: list[str] | None, max_examples: int = 0) -> Examples:
    """Tokenise one split; rows naming an item missing from the catalogue are skipped."""
    mask = pc.equal(table["split"], split)
    rows = table.filter(mask).to_pylist()
    if max_examples:
        rows = rows[:max_examples]
    keep, history, item, label = [], [], [], []
    for r in rows:
        hist = [index.get(i) for i in r["history_item_ids"]]
        tgt = [index.get(i) for i in (r["target_item_ids"] or [])]
        if any(h is None for h in hist) or any(t is None for t in tgt):
            continue
        keep.append(r["prompt_text"])
        history.append(hist)
        item.append(tgt[0] if tgt else -1)
        label.append(np.nan if r["label"] is None else float(r["label"]))
    skipped = len(rows) - len(keep)
    if skipped:
        log.warning("%s: skipped %d examples naming items missing from the catalogue", split, skipped)
    tokens = collator.tokenize(keep) if keep else []
    examples = Examples(tokens, history, np.array(item, dtype=np.int64), np.array(label, dtype=np.float64),
                        [None] * len(keep))
    if lm_texts is not None and len(keep):
        wanted = [lm_texts[i] if r else "" for i, r in zip(examples.item, examples.retrieval)]
        examples.lm_target = [ids or None for ids in collator.tokenize(wanted)]
    return examples


# -- loss and evaluation ----------------------------------------------------------------


@torch.no_grad()
def valid_recall_counts(model: URM, ex: Examples, collator: Collator, catalog: ItemCatalog, k: int,
                batch_size: int, device) -> tuple[float, float]:
    """(hits, count) of full-ranking Recall@k over this rank's retrieval examples."""
    raw = model.module if hasattr(model, "module") else model
    raw.eval()
    items = raw.item_vectors(catalog)
    hits = count = 0.0
    idx = np.flatnonzero(ex.retrieval)
    for start in range(0, len(idx), batch_size):
        part = ex.take(idx[start:start + batch_size])
        batch = collator(part.tokens, part.history).to(device)
        users, _ = raw.encode(batch, catalog)
        scores = raw.scores(users, items).float()
        scores = torch.nan_to_num(scores, nan=-1e9)
        top = scores.topk(min(k, scores.shape[1]), dim=1).indices.cpu().numpy()
        hits += float((top == part.item[:, None]).any(axis=1).sum())
        count += len(part)
    raw.train()
    return hits, count


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
    lm_texts = plan.lm_texts if model.config.causal and plan.lm_loss_weight > 0 else None

    table = read_examples(plan.files, rank, world)
    if plan.objectives:
        table = table.filter(pc.is_in(table["objective"], value_set=pa.array(plan.objectives)))
    train = to_examples(table, "train", collator, index, lm_texts, plan.max_train_examples)
    valid = to_examples(table, "valid", collator, index, None)
    n_train = int(_all_reduce([len(train)])[0])
    log.info("rank %d/%d: %d train, %d valid examples (global train %d)", rank, world, len(train), len(valid), n_train)

    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)
    sampling = None
    if len(catalog) > plan.full_softmax_max_items:
        counts = torch.as_tensor(plan.item_counts, dtype=torch.float64, device=device)
        sampling = ((counts + 1.0) ** 0.75 / ((counts + 1.0) ** 0.75).sum()).float()

    state = {"epoch": 0, "batch": 0, "step": 0, "best": -1.0, "best_epoch": -1, "bad_epochs": 0, "history": []}
    resumed = load_checkpoint(work, model, optimizer, device)
    resumed_from = 0
    if resumed:
        state.update(resumed)
        resumed_from = state["step"]
        log.info("resumed from checkpoint at step %d (epoch %d, batch %d)", state["step"], state["epoch"], state["batch"])

    bs, accum = plan.batch_size, plan.grad_accum_steps
    n_batches = int(_all_reduce([math.ceil(len(train) / bs)], "min")[0])
    t0, seen, tokens_seen = time.time(), 0, 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_cuda else torch.autocast("cpu", enabled=False)
    if use_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    while state["epoch"] < plan.epochs and state["bad_epochs"] < plan.patience:
        order = np.random.default_rng(plan.seed + state["epoch"] * 1000 + rank).permutation(len(train))
        losses = []
        for b in range(state["batch"], n_batches):
            ex = train.take(order[b * bs:(b + 1) * bs])
            batch = collator(ex.tokens, ex.history, ex.lm_target if lm_texts else None).to(device)
            targets = LossTargets(
                items=torch.as_tensor(ex.item, device=device),
                labels=torch.as_tensor(ex.label, device=device, dtype=torch.float32),
                sampling_probs=sampling, num_negatives=plan.num_negatives,
                ctr_weight=plan.ctr_loss_weight, lm_weight=plan.lm_loss_weight if lm_texts else 0.0,
            )
            with autocast:
                loss, parts = ddp(batch, catalog, targets)
            (loss / accum).backward()
            if (b + 1) % accum == 0 or b + 1 == n_batches:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
            losses.append(float(loss.detach()))
            seen += len(ex)
            tokens_seen += int(batch.attention_mask.sum())
            state["batch"] = b + 1
            if state["step"] and state["step"] % plan.checkpoint_every_steps == 0 and (b + 1) % accum == 0:
                if rank == 0:
                    save_checkpoint(work, model, optimizer, state)
            if rank == 0 and (b % max(1, n_batches // 4) == 0):
                log.info("epoch %d batch %d/%d loss %.4f %s", state["epoch"], b + 1, n_batches, loss.item(),
                         {k: round(v, 4) for k, v in parts.items()})
        hits, count = valid_recall_counts(model, valid, collator, catalog, plan.eval_k, bs, device)
        hits, count, loss_sum, loss_n = _all_reduce([hits, count, sum(losses), len(losses)])
        recall = hits / count if count else 0.0
        epoch_loss = loss_sum / max(loss_n, 1)
        state["history"].append({"epoch": state["epoch"], "loss": epoch_loss, f"recall@{plan.eval_k}": recall})
        if rank == 0:
            log.info("epoch %d done: loss %.4f valid recall@%d %.4f (%d examples)", state["epoch"], epoch_loss,
                     plan.eval_k, recall, count)
        if recall > state["best"]:
            state.update(best=recall, best_epoch=state["epoch"], bad_epochs=0)
            if rank == 0:
                model.save_pretrained(os.path.join(work, BEST_DIR), tokenizer, catalog.to("cpu"))
        else:
            state["bad_epochs"] += 1
        state["epoch"] += 1
        state["batch"] = 0
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
    return {
        "best_valid_recall": state["best"],
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "steps": state["step"],
        "resumed_from_step": resumed_from,
        "train_examples": n_train,
        "examples_per_s": seen_all / elapsed if elapsed else 0.0,
        "tokens_per_s": tokens_all / elapsed if elapsed else 0.0,
        "peak_memory_bytes": int(peak),
        "history": state["history"],
        "world_size": world,
        "device": device.type,
    }


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
