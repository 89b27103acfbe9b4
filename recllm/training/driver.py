"""Fine-tuning, the driver side: write the work folder and the rank plan, run the ranks, register.

`prepare_training` snapshots the item catalogue, lists the prompt partition's Parquet files,
builds the tokenizer and the initial model into the version's work folder, and returns a
`TrainingPlan`, under a version name that a rerun of the same date and settings finds again
(so it resumes); `run_training` runs `recllm.training.loop.train_fn` on every rank with
TorchDistributor (rerunning a failed run from its last checkpoint) and registers the URM
version in `models`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict

import pyarrow.parquet as pq
import torch

from recllm.lake import Lake
from recllm.model.backbone import backbone_config_dict, build_backbone, is_causal
from recllm.model.tokens import neutralize
from recllm.model.urm import URM, ItemCatalog, URMConfig, control_token_ids
from recllm.registry import register_model
from recllm.training.loop import BEST_DIR, INITIAL_DIR, TrainingPlan, train_fn
from schemas import ITEM_FEATURES, ITEMS, PROMPTS

log = logging.getLogger(__name__)

PLACEMENT_KEYS = ("local_mode", "use_gpu", "torch_threads", "max_attempts", "model_root", "checkpoint_every_steps")
"""`train:` keys saying where and how ranks run; they do not name a different model."""


def model_version_for(ds: str, config, id_only: bool = False) -> str:
    """Deterministic for a run date and the settings that shape the model, so reruns resume.

    Where and how the ranks run (`PLACEMENT_KEYS`) is left out: a cluster run and a local
    run of the same settings train the same version.
    """
    train = {k: v for k, v in asdict(config.train).items() if k not in PLACEMENT_KEYS}
    shape = json.dumps([asdict(config.model), train, asdict(config.prompts)], sort_keys=True)
    return f"{'sasrec' if id_only else 'urm'}-{ds}-{hashlib.sha256(shape.encode()).hexdigest()[:8]}"


def prepare_training(lake: Lake, ds: str, config, id_only: bool = False) -> TrainingPlan:
    """Write the work folder (catalogue, tokenizer, initial weights) and return the rank plan.

    `id_only` prepares the SASRec-style expert instead: the same backbone and loop over
    item ID vectors alone (no prompt text, no text or image features), on one objective's
    examples (`evaluate.expert_objective`), as SASRec learns the next item.
    """
    version = model_version_for(ds, config, id_only)
    work = os.path.abspath(os.path.join(config.train.model_root, version))
    features = lake.read(ITEM_FEATURES.name).select(
        "item_id", "item_index", "text_embedding", "image_embedding", "n_positive").toPandas()
    catalog = ItemCatalog.from_features(features)
    files = lake.files(PROMPTS.name, ds=ds)
    if not files:
        raise ValueError(f"prompts has no rows for ds={ds}: run the prompts job first")
    titles = dict(lake.read(ITEMS.name).select("item_id", "title", "category").toPandas()
                  .apply(lambda r: (r.item_id, f"{r.title} ({r.category})" if r.category else r.title), axis=1).to_list())
    lm_texts = [neutralize(titles.get(i, ""), config.prompts.max_text_chars) for i in catalog.item_ids]
    initial = os.path.join(work, INITIAL_DIR)
    if not os.path.exists(os.path.join(initial, "model.safetensors")):
        _write_initial_model(initial, config, catalog, _tokenizer_corpus(files, lm_texts), id_only)
    t = config.train
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
    )


def _write_initial_model(initial: str, config, catalog: ItemCatalog, texts: list[str], id_only: bool) -> None:
    """The tokenizer trained on `texts`, the backbone and the URM heads, saved atomically into `initial`."""
    torch.manual_seed(config.train.seed)
    backbone, tokenizer = build_backbone(config.model, texts)
    urm_config = URMConfig.from_model_config(
        config.model,
        backbone=backbone_config_dict(backbone),
        n_items_trained=len(catalog),
        text_dim=catalog.text.shape[1],
        image_dim=catalog.image.shape[1],
        id_only=id_only,
        **({"id_dropout": 0.0} if id_only else {}),
        causal=is_causal(backbone.config.model_type),
        pad_token_id=int(tokenizer.pad_token_id),
        **control_token_ids(tokenizer),
    )
    URM(urm_config, backbone).save_pretrained(initial + ".tmp", tokenizer, catalog)
    shutil.rmtree(initial, ignore_errors=True)
    os.rename(initial + ".tmp", initial)


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


def run_training(lake: Lake, ds: str, config, num_processes: int | None = None, id_only: bool = False) -> dict:
    """Fine-tune with TorchDistributor; the URM model's version is registered in `models`.

    With `id_only` it trains the SASRec-style expert baseline instead, which is not registered.
    Returns the ranks' summary plus `model_version` and `path` (the best weights' folder).
    """
    from pyspark.ml.torch.distributor import TorchDistributor

    plan = prepare_training(lake, ds, config, id_only)
    n = num_processes or config.train.num_processes
    log.info("training %s on %d process(es), %s, work dir %s", plan.model_version, n,
             "GPU" if plan.use_gpu else "CPU", plan.work_dir)
    distributor = TorchDistributor(num_processes=n, local_mode=config.train.local_mode, use_gpu=plan.use_gpu)
    result = run_with_retries(lambda: distributor.run(train_fn, plan), config.train.max_attempts)
    path = os.path.join(plan.work_dir, BEST_DIR)
    if not id_only:
        register_model(lake, ds, config, plan.model_version, path, result)
    return {**result, "model_version": plan.model_version, "path": path}


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
