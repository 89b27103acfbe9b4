"""Fine-tuning, the driver side: write the work folder and the rank plan, run the ranks, register.

`prepare_training` snapshots the item catalogue, lists the prompt partition's Parquet files,
builds the tokenizer and the initial model (item biases started at the training targets' log
frequency, `training_target_counts`) into the version's work folder, and returns a
`TrainingPlan`, under a version name that a rerun of the same date and settings finds again
(so it resumes); `run_training` runs `recllm.training.loop.train_fn` on every rank with
TorchDistributor (rerunning a failed run from its last checkpoint), writes the model card,
opens the folder to the owner's group, logs the run and registers a version in MLflow
(`recllm.tracking`, unless `mlflow.enabled` is false) and registers the URM version in `models`.

Warm starts (`choose_start`, then `prepare_training(..., start=...)`): the initial model is
the newest earlier model (its tokenizer kept, its ID embedding grown by a fresh row per item
new to the catalogue, its item bias by the start a cold retrain would give), trained for `train.warm_epochs` on the examples it never trained on
plus a `train.warm_replay_fraction` sample of those it did; its `models` row names the parent.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, replace

import pyarrow.parquet as pq
import torch
from pyspark.sql import functions as F
from torch import nn

from recllm.lake import Lake
from recllm.model.backbone import backbone_config_dict, build_backbone, is_causal
from recllm.model.inference import Scorer
from recllm.model.tokens import neutralize
from recllm.model.urm import ITEM_INDEX, URM, ItemCatalog, ItemFusion, URMConfig, control_token_ids, load_tokenizer
from recllm.pipeline.prompts import TRAIN, VALID
from recllm.model.shared_files import share_with_group
from recllm.registry import ModelNotFoundError, model_row, newest_model_before, register_row, resolve_model
from recllm.training.model_card import write_model_card
from recllm.training.loop import BEST_DIR, INITIAL_DIR, TrainingPlan, train_fn
from schemas import ITEM_FEATURES, ITEMS, PROMPTS

log = logging.getLogger(__name__)

PLACEMENT_KEYS = ("local_mode", "use_gpu", "precision", "torch_threads", "max_attempts", "model_root",
                  "checkpoint_every_steps")
"""`train:` keys saying where and how ranks run (their arithmetic included); they do not name a different model."""

WARM_KEYS = ("warm_start", "warm_epochs", "warm_patience", "warm_replay_fraction", "warm_lr_scale")
"""`train:` keys that only shape a warm-started run: a cold version's name leaves them out."""

WARM_EXAMPLES_DIR = "warm_examples"
"""Under a warm version's work folder: the Parquet files of the examples it trains and validates on."""


def model_version_for(ds: str, config, id_only: bool = False, parent_version: str | None = None) -> str:
    """Deterministic for a run date and the settings that shape the model, so reruns resume.

    Where and how the ranks run (`PLACEMENT_KEYS`) is left out: a cluster run and a local
    run of the same settings train the same version. A warm start (`parent_version`) also
    hashes its parent and the warm settings, and ends in `-warm`, so it never takes the
    name of the same day's cold model.
    """
    train = {k: v for k, v in asdict(config.train).items() if k not in PLACEMENT_KEYS + WARM_KEYS}
    shape = [asdict(config.model), train, asdict(config.prompts)]
    if parent_version is not None:
        shape += [{k: getattr(config.train, k) for k in WARM_KEYS}, parent_version]
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:8]
    return f"{'sasrec' if id_only else 'urm'}-{ds}-{digest}{'-warm' if parent_version is not None else ''}"


@dataclass(frozen=True)
class Start:
    """How a run starts: cold (`parent_version` None) or warm from a registered model, and why."""

    reason: str
    parent_version: str | None = None
    parent_path: str | None = None
    parent_ds: str | None = None  # the parent's prompt partition: the examples it trained on
    new_examples: int = 0  # training examples of the day that the parent never trained on

    @property
    def warm(self) -> bool:
        return self.parent_version is not None


def choose_start(lake: Lake, ds: str, config) -> Start:
    """Warm from the newest model of an earlier date when it fits, else cold; the reason either way.

    Cold when there is no earlier model, when the last cold model is
    `nightly.cold_retrain_every_days` or more days old (0: no cold retrain by age), when the
    newest model's `model:` settings differ from today's, when its folder is gone, when its
    item indices are not a prefix of today's catalogue, or when the day holds no training
    example it has not already trained on.
    """
    parent = newest_model_before(lake, ds)
    if parent is None:
        return Start("no model of an earlier date to start from")
    every = config.nightly.cold_retrain_every_days
    if every:
        last_cold = newest_model_before(lake, ds, cold_only=True)
        if last_cold is None:
            return Start(f"cold retrain due: no cold-started model before {ds} "
                         f"(nightly.cold_retrain_every_days={every})")
        age = (dt.date.fromisoformat(ds) - dt.date.fromisoformat(last_cold.ds)).days
        if age >= every:
            return Start(f"cold retrain due: the last cold model {last_cold.model_version} is {age} day(s) old "
                         f"(nightly.cold_retrain_every_days={every})")
    problem = _warm_problem(lake, parent, config)
    if problem:
        return Start(f"cannot warm-start from {parent.model_version}: {problem}")
    new = _train_rows_new_to(lake, ds, parent.ds).where(F.col("_seen").isNull()).count()
    if not new:
        return Start(f"no training example of {ds} is new to {parent.model_version}")
    return Start(f"warm start from {parent.model_version} (ds {parent.ds}) on {new} new training examples",
                 parent.model_version, parent.path, parent.ds, new)


def _warm_problem(lake: Lake, parent, config) -> str | None:
    """Why `parent` (a `models` row) cannot seed today's model, or None when it can."""
    saved = json.loads(parent.config_json).get("model", {})
    differ = sorted(k for k, v in asdict(config.model).items() if saved.get(k) != v)
    if differ:
        return f"its model settings differ from today's in {differ}"
    try:
        ref = resolve_model(lake, parent.model_version)
    except ModelNotFoundError as e:
        return str(e)
    features = lake.read(ITEM_FEATURES.name)
    dims = features.agg(F.max(F.size("text_embedding")).alias("text"), F.max(F.size("image_embedding")).alias("image")).first()
    if (ref.text_dim, ref.image_dim) != (dims.text, max(dims.image or 0, 0)):
        return (f"its text/image dimensions {ref.text_dim}/{ref.image_dim} differ from today's item_features "
                f"({dims.text}/{max(dims.image or 0, 0)})")
    with open(os.path.join(ref.path, ITEM_INDEX)) as f:
        parent_ids = json.load(f)[:ref.n_items_trained]
    today = [r.item_id for r in features.where(F.col("item_index") < len(parent_ids)).orderBy("item_index")
             .select("item_id").collect()]
    if today != parent_ids:
        return "its item indices are not a prefix of today's item_features (indices must be stable)"
    return None


def _train_rows_new_to(lake: Lake, ds: str, parent_ds: str):
    """The training rows of `ds`'s prompts, `_seen` true where the parent's partition trained on the same example."""
    seen = (lake.read(PROMPTS.name, ds=parent_ds).where(F.col("split") == TRAIN).select("example_id").distinct()
            .withColumn("_seen", F.lit(True)))
    return lake.read(PROMPTS.name, ds=ds).where(F.col("split") == TRAIN).join(seen, "example_id", "left")


def _write_warm_examples(lake: Lake, ds: str, start: Start, config, out: str) -> list[str]:
    """The warm run's examples as Parquet under `out` (kept for a rerun): the day's training
    rows the parent never trained on, a `train.warm_replay_fraction` sample of those it did,
    and every validation row; returns the files.

    Rows are written in the order of a hash of their id, so both splits are spread through the
    files: ranks take contiguous shares of all rows, and the union's order (train, then valid)
    gave one rank nearly all the training rows and capped every rank's epoch at the other's few.
    """
    if not os.path.exists(os.path.join(out, "_SUCCESS")):
        rows = _train_rows_new_to(lake, ds, start.parent_ds)
        replay = rows.where(F.col("_seen")).sample(fraction=config.train.warm_replay_fraction, seed=config.train.seed)
        valid = lake.read(PROMPTS.name, ds=ds).where(F.col("split") == VALID)
        (rows.where(F.col("_seen").isNull()).unionByName(replay).drop("_seen").unionByName(valid)
         .orderBy(F.xxhash64("example_id"), "example_id").write.mode("overwrite").parquet(out))
    return sorted(glob.glob(os.path.join(out, "part-*.parquet")))


def prepare_training(lake: Lake, ds: str, config, id_only: bool = False, start: Start | None = None) -> TrainingPlan:
    """Write the work folder (catalogue, tokenizer, initial weights) and return the rank plan.

    `id_only` prepares the SASRec-style expert instead: the same backbone and loop over
    item ID vectors alone (no prompt text, no text or image features), on one objective's
    examples (`evaluate.expert_objective`), as SASRec learns the next item.
    A warm `start` (from `choose_start`) starts from its parent instead of fresh weights,
    on the warm examples, for `train.warm_epochs` with `train.warm_patience`, at `train.lr` times
    `train.warm_lr_scale`.
    """
    warm = start is not None and start.warm and not id_only
    version = model_version_for(ds, config, id_only, start.parent_version if warm else None)
    work = os.path.abspath(os.path.join(config.train.model_root, version))
    features = lake.read(ITEM_FEATURES.name).select(
        "item_id", "item_index", "text_embedding", "image_embedding", "n_positive", "first_seen_ds").toPandas()
    catalog = ItemCatalog.from_features(features)
    files = lake.files(PROMPTS.name, ds=ds)
    if not files:
        raise ValueError(f"prompts has no rows for ds={ds}: run the prompts job first")
    titles = dict(lake.read(ITEMS.name).select("item_id", "title", "category").toPandas()
                  .apply(lambda r: (r.item_id, f"{r.title} ({r.category})" if r.category else r.title), axis=1).to_list())
    lm_texts = [neutralize(titles.get(i, ""), config.prompts.max_text_chars) for i in catalog.item_ids]
    initial = os.path.join(work, INITIAL_DIR)
    if not os.path.exists(os.path.join(initial, "model.safetensors")):
        if warm:
            _write_warm_initial_model(initial, start.parent_path, catalog, config.train.seed,
                                      training_target_counts(lake, ds, features))
        else:
            bias_start = None if id_only else training_target_counts(lake, ds, features)
            _write_initial_model(initial, config, catalog, _tokenizer_corpus(files, lm_texts), id_only, bias_start)
    t = config.train
    if warm:
        files = _write_warm_examples(lake, ds, start, config, os.path.join(work, WARM_EXAMPLES_DIR))
        t = replace(t, epochs=t.warm_epochs, patience=t.warm_patience, lr=t.lr * t.warm_lr_scale)
    return TrainingPlan(
        model_version=version,
        work_dir=work,
        files=files,
        lm_texts=lm_texts,
        item_counts=features.sort_values("item_index")["n_positive"].astype(float).to_list(),
        use_gpu=_use_gpu(t.use_gpu),
        torch_threads=t.torch_threads,
        seed=t.seed,
        epochs=t.epochs,
        batch_size=t.batch_size,
        grad_accum_steps=t.grad_accum_steps,
        lr=t.lr,
        lr_schedule=t.lr_schedule,
        warmup_fraction=t.warmup_fraction,
        precision=t.precision,
        weight_decay=t.weight_decay,
        full_softmax_max_items=t.full_softmax_max_items,
        num_negatives=t.num_negatives,
        ctr_loss_weight=t.ctr_loss_weight,
        lm_loss_weight=0.0 if id_only else config.model.lm_loss_weight,
        objectives=[config.evaluate.expert_objective] if id_only else None,
        checkpoint_every_steps=t.checkpoint_every_steps,
        patience=t.patience,
        eval_k=t.eval_k,
        max_train_examples=t.max_train_examples,
        block_rows=t.block_rows,
        lm_fraction=t.lm_fraction,
        batch_balance=t.batch_balance,
    )


def training_target_counts(lake: Lake, ds: str, features) -> tuple[torch.Tensor, torch.Tensor]:
    """(how often each catalogue item is a retrieval training target of `ds`'s prompts, whether the training window
    could show it: a target in it, or featurised by its last day), by item index: `init_item_bias`'s start."""
    rows = (lake.read(PROMPTS.name, ds=ds)
            .where((F.col("split") == TRAIN) & F.col("label").isNull() & (F.size("target_item_ids") > 0)))
    per_item = (rows.groupBy(F.col("target_item_ids")[0].alias("item_id"))
                .agg(F.count(F.lit(1)).alias("n"), F.max("cutoff_ts").alias("last")).toPandas())
    ordered = features.sort_values("item_index")
    n_by_item = dict(zip(per_item["item_id"], per_item["n"]))
    counts = torch.tensor([float(n_by_item.get(i, 0)) for i in ordered["item_id"]])
    last = per_item["last"].max() if len(per_item) else None
    last_ds = last.date().isoformat() if last is not None else ""
    eligible = (counts > 0) | torch.tensor((ordered["first_seen_ds"] <= last_ds).to_numpy(dtype=bool))
    log.info("item bias start: %d retrieval training targets over %d items (%d items eligible, window to %s)",
             int(counts.sum()), int((counts > 0).sum()), int(eligible.sum()), last_ds or "no training rows")
    return counts, eligible


def _write_initial_model(initial: str, config, catalog: ItemCatalog, texts: list[str], id_only: bool,
                         bias_start: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """The tokenizer trained on `texts`, the backbone and the URM heads, saved atomically into `initial`;
    `bias_start` (`training_target_counts`) starts the item biases of a model with `item_bias`."""
    torch.manual_seed(config.train.seed)
    backbone, tokenizer = build_backbone(config.model, texts)
    urm_config = URMConfig.from_model_config(
        config.model,
        backbone=backbone_config_dict(backbone),
        n_items_trained=len(catalog),
        text_dim=catalog.text.shape[1],
        image_dim=catalog.image.shape[1],
        id_only=id_only,
        **({"id_dropout": 0.0, "item_prior": False, "item_bias": False} if id_only else {}),
        causal=is_causal(backbone.config.model_type),
        pad_token_id=int(tokenizer.pad_token_id),
        **control_token_ids(tokenizer),
    )
    model = URM(urm_config, backbone)
    if model.item_bias is not None and bias_start is not None:
        model.init_item_bias(*bias_start)
    model.save_pretrained(initial + ".tmp", tokenizer, catalog)
    shutil.rmtree(initial, ignore_errors=True)
    os.rename(initial + ".tmp", initial)


def _write_warm_initial_model(initial: str, parent_path: str, catalog: ItemCatalog, seed: int,
                              bias_start: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The parent's tokenizer as is and its weights, ID embedding grown to today's catalogue, saved atomically;
    new items' biases start where a cold retrain would start them (`bias_start`: `training_target_counts`)."""
    model = grow_id_embeddings(URM.from_pretrained(parent_path), len(catalog), seed, bias_start)
    model.save_pretrained(initial + ".tmp", load_tokenizer(parent_path), catalog)
    shutil.rmtree(initial, ignore_errors=True)
    os.rename(initial + ".tmp", initial)


def grow_id_embeddings(model: URM, n_items: int, seed: int = 0,
                       bias_start: tuple[torch.Tensor, torch.Tensor] | None = None) -> URM:
    """`model` with a learned ID row for each of `n_items` catalogue indices (in place; returned).

    Indices are stable, so the first `n_items_trained` rows keep the model's learned vectors and biases;
    new items' ID rows are initialised as a fresh model initialises them, and their biases start where a cold
    retrain would (`bias_start`: `training_target_counts`), or at 0, the average item, without it.
    """
    old = model.config.n_items_trained
    if n_items < old:
        raise ValueError(f"the catalogue has {n_items} items, fewer than the {old} the model was trained on")
    config = replace(model.config, n_items_trained=n_items)
    torch.manual_seed(seed)
    fresh = ItemFusion(config).id_embedding
    with torch.no_grad():
        fresh.weight[:old] = model.fusion.id_embedding.weight[:old].to(fresh.weight.dtype)
    model.fusion.id_embedding = fresh.to(model.fusion.id_embedding.weight.device)
    if model.item_bias is not None:
        model.item_bias = _grown_per_item(model.item_bias, n_items, old)
        if bias_start is not None:
            model.init_item_bias(*bias_start, first=old)
    if model.ctr_item_offset is not None:
        model.ctr_item_offset = _grown_per_item(model.ctr_item_offset, n_items, old)
    model.fusion.n_items_trained = n_items
    model.config = config
    return model


def _grown_per_item(table: nn.Embedding, n_items: int, learned: int) -> nn.Embedding:
    """A per-item table of `n_items` rows: its first `learned` rows kept, the rest 0."""
    grown = nn.Embedding(n_items, table.weight.shape[1]).to(table.weight.device)
    with torch.no_grad():
        grown.weight.zero_()
        grown.weight[:learned] = table.weight[:learned]
    return grown


def _tokenizer_corpus(files: list[str], item_texts: list[str], limit: int = 50000) -> list[str]:
    texts = list(item_texts)
    for f in files:
        texts.extend(pq.read_table(f, columns=["prompt_text"])["prompt_text"].to_pylist()[:limit])
    return texts


def _use_gpu(setting) -> bool:
    if str(setting).lower() in ("true", "1", "yes"):
        return True
    if str(setting).lower() in ("false", "0", "no"):
        return False
    return torch.cuda.is_available()


def run_training(lake: Lake, ds: str, config, num_processes: int | None = None, id_only: bool = False,
                 start: Start | None = None) -> dict:
    """Fine-tune with TorchDistributor; the URM model's version is registered in `models`.

    With `id_only` it trains the SASRec-style expert baseline instead, which is not registered.
    `start` (from `choose_start`; None: cold) may warm-start from a registered model, whose
    version the new row's `parent_version` names.
    The model's folder gets a model card (`README.md`, `recllm.training.model_card`) and the whole
    work folder is opened to the owner's group (`share_with_group`) before the row is registered.
    With `mlflow.enabled` the run is logged to MLflow and registered as a model version there
    (`recllm.tracking.log_training_run`) first, and the row names that version.
    Returns the ranks' summary plus `model_version`, `path` (the best weights' folder),
    `parent_version` (None when cold), `start_reason` and `objectives` (training examples per objective).
    """
    from pyspark.ml.torch.distributor import TorchDistributor

    if start is None or id_only:
        start = Start("cold start asked for")
    plan = prepare_training(lake, ds, config, id_only, start)
    n = num_processes or config.train.num_processes
    log.info("training %s on %d process(es), %s, %s, work dir %s", plan.model_version, n,
             "GPU" if plan.use_gpu else "CPU", start.reason if start.warm else f"cold start: {start.reason}",
             plan.work_dir)
    distributor = TorchDistributor(num_processes=n, local_mode=config.train.local_mode, use_gpu=plan.use_gpu)
    result = run_with_retries(lambda: distributor.run(train_fn, plan), config.train.max_attempts)
    result = {**result, "parent_version": start.parent_version, "start_reason": start.reason}
    path = os.path.join(plan.work_dir, BEST_DIR)
    if id_only:
        share_with_group(plan.work_dir)
        return {**result, "model_version": plan.model_version, "path": path}
    write_item_index(path, config.score)
    data_start_ds, result["objectives"] = training_window(lake, ds)
    row = model_row(ds, config, plan.model_version, path, result, start.parent_version, data_start_ds)
    write_model_card(path, row, result.get("history"))
    share_with_group(plan.work_dir)  # before the row tells others where to load it from
    if config.mlflow.enabled:
        from recllm.tracking import log_training_run

        row["mlflow_version"] = log_training_run(lake.root, config, row, result, path)
    register_row(lake, row)
    return {**result, "model_version": plan.model_version, "path": path}


def training_window(lake: Lake, ds: str) -> tuple[str | None, dict[str, int]]:
    """The first date of `ds`'s training examples (their events' times, UTC) and how many there are per
    objective: the data window and objectives a `models` row and the model card record."""
    rows = (lake.read(PROMPTS.name, ds=ds).where(F.col("split") == TRAIN).groupBy("objective")
            .agg(F.count(F.lit(1)).alias("n"), F.min("cutoff_ts").alias("first")).collect())
    firsts = [r["first"] for r in rows if r["first"] is not None]
    return (min(firsts).date().isoformat() if firsts else None), {r["objective"]: int(r["n"]) for r in rows}


def write_item_index(model_dir: str, score_config) -> bool:
    """Build the model's item index into its folder when scoring its catalogue will use one
    (`score.top_k_method`); scoring then only adds the items new since. Returns whether it did."""
    catalog = ItemCatalog.load(model_dir)
    if not score_config.uses_index(len(catalog)):
        return False
    scorer = Scorer.load(model_dir, catalog=catalog, device="cpu", ann_nprobe=0, chunk_size=score_config.chunk_size)
    scorer.attach_index(None, score_config.ann_nprobe).save(model_dir)
    return True


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
