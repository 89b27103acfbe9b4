"""Fine-tuning: the driver prepares a plan, `train_fn` runs on every TorchDistributor rank.

The driver (`prepare_training`) snapshots the item catalogue, lists the prompt table's
Parquet files for the run date, builds the tokenizer and the initial model, and writes
them into a work folder. Each rank (`train_fn`) reads its own shard of the prompt files,
trains with DDP (gloo on CPU, nccl on GPU, bf16 autocast on GPU) on the joint loss of
every objective (full or sampled softmax with logQ correction for retrieval, BCE for CTR
impressions, next-token loss after `<|lm|>` for causal backbones), checkpoints to
safetensors, resumes from the last checkpoint after a crash, and stops early on
validation recall. Every rank returns the same summary.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from recllm.batching import Collator
from recllm.model import URM, ItemCatalog, LossTargets, URMConfig, control_token_ids, load_tokenizer

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
BEST_DIR = "best"
INITIAL_DIR = "initial"
RETRIEVAL = "retrieval"


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
def recall_at_k(model: URM, ex: Examples, collator: Collator, catalog: ItemCatalog, k: int,
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


# -- checkpoints ------------------------------------------------------------------------


def save_checkpoint(work_dir: str, model: URM, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Atomically replace the latest checkpoint: weights, optimizer state, progress."""
    root = os.path.join(work_dir, CHECKPOINT_DIR)
    tmp = os.path.join(root, f".tmp-{state['step']}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_model(model, os.path.join(tmp, "model.safetensors"))
    tensors, meta = _flatten_optimizer(optimizer)
    save_file(tensors, os.path.join(tmp, "optimizer.safetensors"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({**state, "optimizer_meta": meta}, f)
    latest = os.path.join(root, LATEST)
    old = os.path.join(root, ".old")
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(latest):
        os.rename(latest, old)
    os.rename(tmp, latest)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(work_dir: str, model: URM, optimizer: torch.optim.Optimizer, device) -> dict | None:
    """Restore the latest checkpoint into model and optimizer; None when there is none."""
    latest = os.path.join(work_dir, CHECKPOINT_DIR, LATEST)
    if not os.path.exists(os.path.join(latest, "state.json")):
        return None
    for name in ("model.safetensors", "optimizer.safetensors"):
        if not os.path.exists(os.path.join(latest, name)):
            raise FileNotFoundError(f"checkpoint {latest} is missing {name}")
    with open(os.path.join(latest, "state.json")) as f:
        state = json.load(f)
    try:
        load_model(model, os.path.join(latest, "model.safetensors"), device=str(device))
        _restore_optimizer(optimizer, load_file(os.path.join(latest, "optimizer.safetensors"), device=str(device)),
                           state.pop("optimizer_meta"))
    except Exception as e:
        raise RuntimeError(f"checkpoint {latest} is corrupted: {e}") from e
    return state


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            tensors[f"{pid}.{key}"] = (value if torch.is_tensor(value) else torch.tensor(value)).detach().cpu().contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# -- the rank's entry point ---------------------------------------------------------------


def train_fn(plan: dict) -> dict:
    """Train on this rank's shard; every rank returns the same summary dict."""
    rank, world, local_rank = _world()
    use_cuda = plan["use_gpu"] and torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not _dist().is_initialized():
        _dist().init_process_group("nccl" if use_cuda else "gloo")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(message)s")
    if not use_cuda:
        torch.set_num_threads(cpu_threads_per_rank(plan["torch_threads"]))
    torch.manual_seed(plan["seed"])
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


def _train(plan: dict, rank: int, world: int, device, use_cuda: bool) -> dict:
    work = plan["work_dir"]
    initial = os.path.join(work, INITIAL_DIR)
    tokenizer = load_tokenizer(initial)
    catalog = ItemCatalog.load(initial).to(device)
    model = URM.from_pretrained(initial, device=device).train()
    collator = Collator(tokenizer, model.config)
    index = {item_id: i for i, item_id in enumerate(catalog.item_ids)}
    lm_texts = plan.get("lm_texts") if model.config.causal and plan["lm_loss_weight"] > 0 else None

    table = read_examples(plan["files"], rank, world)
    if plan.get("objectives"):
        table = table.filter(pc.is_in(table["objective"], value_set=pa.array(plan["objectives"])))
    train = to_examples(table, "train", collator, index, lm_texts, plan.get("max_train_examples", 0))
    valid = to_examples(table, "valid", collator, index, None)
    n_train = int(_all_reduce([len(train)])[0])
    log.info("rank %d/%d: %d train, %d valid examples (global train %d)", rank, world, len(train), len(valid), n_train)

    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan["lr"], weight_decay=plan["weight_decay"])
    sampling = None
    if len(catalog) > plan["full_softmax_max_items"]:
        counts = torch.as_tensor(plan["item_counts"], dtype=torch.float64, device=device)
        sampling = ((counts + 1.0) ** 0.75 / ((counts + 1.0) ** 0.75).sum()).float()

    state = {"epoch": 0, "batch": 0, "step": 0, "best": -1.0, "best_epoch": -1, "bad_epochs": 0, "history": []}
    resumed = load_checkpoint(work, model, optimizer, device)
    resumed_from = 0
    if resumed:
        state.update(resumed)
        resumed_from = state["step"]
        log.info("resumed from checkpoint at step %d (epoch %d, batch %d)", state["step"], state["epoch"], state["batch"])

    bs, accum = plan["batch_size"], plan["grad_accum_steps"]
    n_batches = int(_all_reduce([math.ceil(len(train) / bs)], "min")[0])
    t0, seen, tokens_seen = time.time(), 0, 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_cuda else torch.autocast("cpu", enabled=False)
    if use_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    while state["epoch"] < plan["epochs"] and state["bad_epochs"] < plan["patience"]:
        order = np.random.default_rng(plan["seed"] + state["epoch"] * 1000 + rank).permutation(len(train))
        losses = []
        for b in range(state["batch"], n_batches):
            ex = train.take(order[b * bs:(b + 1) * bs])
            batch = collator(ex.tokens, ex.history, ex.lm_target if lm_texts else None).to(device)
            targets = LossTargets(
                items=torch.as_tensor(ex.item, device=device),
                labels=torch.as_tensor(ex.label, device=device, dtype=torch.float32),
                sampling_probs=sampling, num_negatives=plan["num_negatives"],
                ctr_weight=plan["ctr_loss_weight"], lm_weight=plan["lm_loss_weight"] if lm_texts else 0.0,
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
            if state["step"] and state["step"] % plan["checkpoint_every_steps"] == 0 and (b + 1) % accum == 0:
                if rank == 0:
                    save_checkpoint(work, model, optimizer, state)
            if rank == 0 and (b % max(1, n_batches // 4) == 0):
                log.info("epoch %d batch %d/%d loss %.4f %s", state["epoch"], b + 1, n_batches, loss.item(),
                         {k: round(v, 4) for k, v in parts.items()})
        hits, count = recall_at_k(model, valid, collator, catalog, plan["eval_k"], bs, device)
        hits, count, loss_sum, loss_n = _all_reduce([hits, count, sum(losses), len(losses)])
        recall = hits / count if count else 0.0
        epoch_loss = loss_sum / max(loss_n, 1)
        state["history"].append({"epoch": state["epoch"], "loss": epoch_loss, f"recall@{plan['eval_k']}": recall})
        if rank == 0:
            log.info("epoch %d done: loss %.4f valid recall@%d %.4f (%d examples)", state["epoch"], epoch_loss,
                     plan["eval_k"], recall, count)
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


# -- the driver side --------------------------------------------------------------------


def catalog_from_features(features) -> ItemCatalog:
    """The model's item catalogue from an `item_features` pandas frame (dense indices 0..N-1)."""
    features = features.sort_values("item_index").reset_index(drop=True)
    n = len(features)
    if n == 0:
        raise ValueError("item_features is empty: run the features job first")
    if not (features["item_index"].to_numpy() == np.arange(n)).all():
        raise ValueError("item_features indices are not dense 0..N-1")
    text = torch.tensor(np.stack(features["text_embedding"].map(np.asarray).to_list()), dtype=torch.float32)
    images = features["image_embedding"].to_list()
    dim = next((len(v) for v in images if v is not None), 0)
    image = torch.zeros(n, dim)
    has_image = torch.zeros(n, dtype=torch.bool)
    for i, v in enumerate(images):
        if v is not None and len(v) == dim:
            image[i] = torch.as_tensor(np.asarray(v, dtype=np.float32))
            has_image[i] = True
    return ItemCatalog(text, image, has_image, features["item_id"].to_list())


PLACEMENT_KEYS = ("local_mode", "use_gpu", "torch_threads", "max_attempts", "model_root", "checkpoint_every_steps")


def model_version_for(ds: str, config, id_only: bool = False) -> str:
    """Deterministic for a run date and the settings that shape the model, so reruns resume.

    Where and how the ranks run (`PLACEMENT_KEYS`) is left out: a cluster run and a local
    run of the same settings train the same version.
    """
    import hashlib

    train = {k: v for k, v in asdict(config.train).items() if k not in PLACEMENT_KEYS}
    shape = json.dumps([asdict(config.model), train, asdict(config.prompts)], sort_keys=True)
    return f"{'sasrec' if id_only else 'urm'}-{ds}-{hashlib.sha256(shape.encode()).hexdigest()[:8]}"


def prepare_training(lake, ds: str, config, id_only: bool = False) -> dict:
    """Write the work folder (catalogue, tokenizer, initial weights) and return the rank plan.

    `id_only` prepares the SASRec-style expert instead: the same backbone and loop over
    item ID vectors alone (no prompt text, no text or image features), on one objective's
    examples (`evaluate.expert_objective`), as SASRec learns the next item.
    """
    from recllm.backbone import backbone_config_dict, build_backbone, is_causal
    from recllm.tokens import neutralize

    version = model_version_for(ds, config, id_only)
    work = os.path.abspath(os.path.join(config.train.model_root, version))
    features = lake.read("item_features").select(
        "item_id", "item_index", "text_embedding", "image_embedding", "n_positive").toPandas()
    catalog = catalog_from_features(features)
    files = lake.files("prompts", ds=ds)
    if not files:
        raise ValueError(f"prompts has no rows for ds={ds}: run the prompts job first")
    titles = dict(lake.read("items").select("item_id", "title", "category").toPandas()
                  .apply(lambda r: (r.item_id, f"{r.title} ({r.category})" if r.category else r.title), axis=1).to_list())
    lm_texts = [neutralize(titles.get(i, ""), config.prompts.max_text_chars) for i in catalog.item_ids]
    initial = os.path.join(work, INITIAL_DIR)
    if not os.path.exists(os.path.join(initial, "model.safetensors")):
        texts = _tokenizer_corpus(files, lm_texts)
        torch.manual_seed(config.train.seed)
        backbone, tokenizer = build_backbone(config.model, texts)
        m = config.model
        urm_config = URMConfig(
            backbone=backbone_config_dict(backbone),
            n_items_trained=len(catalog),
            text_dim=catalog.text.shape[1],
            image_dim=catalog.image.shape[1],
            id_dim=m.id_dim,
            out_dim=m.out_dim,
            n_query_tokens=m.n_query_tokens,
            init_scale=m.init_scale,
            id_dropout=0.0 if id_only else m.id_dropout,
            slot_attention=m.slot_attention,
            id_only=id_only,
            causal=is_causal(backbone.config.model_type),
            pad_token_id=int(tokenizer.pad_token_id),
            max_tokens=m.max_tokens,
            **control_token_ids(tokenizer),
        )
        URM(urm_config, backbone).save_pretrained(initial + ".tmp", tokenizer, catalog)
        shutil.rmtree(initial, ignore_errors=True)
        os.rename(initial + ".tmp", initial)
    t = config.train
    return {
        "model_version": version,
        "work_dir": work,
        "files": files,
        "lm_texts": lm_texts,
        "item_counts": features.sort_values("item_index")["n_positive"].astype(float).to_list(),
        "use_gpu": _use_gpu(t.use_gpu),
        "torch_threads": t.torch_threads,
        "seed": t.seed,
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "grad_accum_steps": t.grad_accum_steps,
        "lr": t.lr,
        "weight_decay": t.weight_decay,
        "full_softmax_max_items": t.full_softmax_max_items,
        "num_negatives": t.num_negatives,
        "ctr_loss_weight": t.ctr_loss_weight,
        "lm_loss_weight": 0.0 if id_only else config.model.lm_loss_weight,
        "objectives": [config.evaluate.expert_objective] if id_only else None,
        "checkpoint_every_steps": t.checkpoint_every_steps,
        "patience": t.patience,
        "eval_k": t.eval_k,
        "max_train_examples": t.max_train_examples,
    }


def _tokenizer_corpus(files: list[str], item_texts: list[str], limit: int = 50000) -> list[str]:
    texts = list(item_texts)
    for f in files:
        texts.extend(pq.read_table(f, columns=["prompt_text"])["prompt_text"].to_pylist()[:limit])
    return texts


def _use_gpu(setting: str) -> bool:
    if str(setting).lower() in ("true", "1", "yes"):
        return True
    if str(setting).lower() in ("false", "0", "no"):
        return False
    return torch.cuda.is_available()


def run_training(lake, ds: str, config, num_processes: int | None = None, id_only: bool = False) -> dict:
    """Fine-tune with TorchDistributor; the URM model's version is registered in `models`.

    With `id_only` it trains the SASRec-style expert baseline instead, which is not registered.
    """
    from pyspark.ml.torch.distributor import TorchDistributor

    plan = prepare_training(lake, ds, config, id_only)
    n = num_processes or config.train.num_processes
    log.info("training %s on %d process(es), %s, work dir %s", plan["model_version"], n,
             "GPU" if plan["use_gpu"] else "CPU", plan["work_dir"])
    distributor = TorchDistributor(num_processes=n, local_mode=config.train.local_mode, use_gpu=plan["use_gpu"])
    result = run_with_retries(lambda: distributor.run(train_fn, plan), config.train.max_attempts)
    if not id_only:
        register_model(lake, ds, config, plan, result)
    return {**result, "model_version": plan["model_version"], "path": os.path.join(plan["work_dir"], BEST_DIR)}


def run_with_retries(run, max_attempts: int):
    """`run()`, rerun after a failure up to `max_attempts` runs in all.

    Spark aborts a failed barrier stage instead of retrying it, so a rank lost mid-run
    (a killed process, a lost executor) fails TorchDistributor's job; the rerun trains the
    same version in the same work dir and so resumes from its last checkpoint.
    """
    for attempt in range(1, max_attempts + 1):
        try:
            return run()
        except Exception as e:
            if attempt == max_attempts:
                raise
            log.warning("training attempt %d of %d failed (%s: %s); rerunning from the last checkpoint",
                        attempt, max_attempts, type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")


def register_model(lake, ds: str, config, plan: dict, result: dict) -> None:
    """Upsert the version's row in the `models` registry."""
    import datetime as dt

    from schemas import MODELS

    row = {
        "model_version": plan["model_version"],
        "created_at": dt.datetime.now(dt.timezone.utc),
        "ds": ds,
        "path": os.path.join(plan["work_dir"], BEST_DIR),
        "config_json": json.dumps({"model": asdict(config.model), "train": asdict(config.train)}, sort_keys=True),
        "data_start_ds": None,
        "data_end_ds": ds,
        "metrics_json": json.dumps({k: v for k, v in result.items() if k != "history"}, sort_keys=True),
    }
    lake.merge("models", lake.spark.createDataFrame([row], MODELS.spark))


def training_decision(lake, ds: str, config) -> tuple[bool, str]:
    """Whether the nightly run should train for `ds`, and why (or why not)."""
    import datetime as dt

    from pyspark.sql import functions as SF

    counts = {r["split"]: r["n"] for r in lake.read("prompts", ds=ds).where(SF.col("objective") != "ctr")
              .groupBy("split").agg(SF.count("*").alias("n")).collect()}
    if not counts.get("train") or not counts.get("valid"):
        return False, f"not enough history yet (train={counts.get('train', 0)}, valid={counts.get('valid', 0)} examples)"
    if not lake.exists("models") or lake.read("models").count() == 0:
        return True, "no model yet"
    latest = lake.read("models").orderBy(SF.desc("created_at")).first()
    age = (dt.date.fromisoformat(ds) - dt.date.fromisoformat(latest.ds)).days
    every = config.nightly.retrain_every_days
    if age >= every or age < 0:
        return True, f"latest model {latest.model_version} is {age} day(s) old (retrain every {every})"
    return False, f"reusing {latest.model_version} ({age} day(s) old, retrain every {every})"
