"""Nightly scoring, the library half: model versions, the per-worker scorer cache, batch scoring, prompts.

The Spark bindings (`udfs.scoring`) run these functions inside `mapInPandas` tasks; nothing
here defines a UDF. Three kinds of pieces:

* Driver side. `resolve_model` picks a version from the `models` registry ("latest" is the
  newest `created_at`) and fails with the known versions when it is missing.
  `write_catalog_snapshot` writes the CURRENT item catalogue (from `item_features`, so
  items that arrived after training are scored from their text and image alone) as
  `catalog.safetensors` + `item_index.json` into a run folder the workers read.
* Worker side. `get_scorer(model_dir, catalog_dir, device)` keeps a module-level cache, so
  each Python worker loads a model version and computes the catalogue's item output
  vectors ONCE, however many tasks it runs (Spark reuses Python workers); `set_torch_threads`
  keeps tasks from oversubscribing the cores. `score_candidates` turns a batch of prompts
  into whole-catalogue top-K rows (one forward pass per prompt, chunked top-K, purchased
  items excluded) and, for the cold objective, each new item's best users within the batch;
  `score_ctr` turns (prompt, items) rows into calibrated click probabilities.
* Spark DataFrame helpers (no UDFs): `user_context` recomputes each user's inference-time
  history with the prompt job's own functions, and `render_prompts` renders any objective's
  prompt for it with the configured template, so CTR prompts (the `ctr` instruction and the
  pair's scenario, as CTR training examples were rendered) and new-user prompts (history
  "none": profile and objective text alone) read exactly like the prompts the model
  trained on. `read_requests` reads an optional table of (user, item, scenario) pairs.

Scores written to `candidates` and `cold_start_fills` are the unscaled similarity
max_m <u_m, w_i> (the tables' contract); ranking by it equals ranking by the logits.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recllm.config import ConfigError, PromptsConfig, ScoreConfig
from recllm.inference import Scorer
from recllm.lake import Lake, TableNotFoundError, check_identifier
from recllm.model import CONFIG, WEIGHTS, ItemCatalog
from recllm.objectives import CTR, DEFAULT_OBJECTIVES, Objective, objectives_from_config
from schemas import EVENTS, ITEM_FEATURES, MODELS, PROMPTS, USERS

log = logging.getLogger(__name__)

LATEST = "latest"
DEVICES = ("auto", "cpu", "cuda")
NEW_ITEM, NEW_USER = "new_item", "new_user"
CANDIDATE = "candidate"
INFER = "infer"

CANDIDATE_COLUMNS = {"kind": str, "objective": str, "user_id": str, "rank": "int32", "item_id": str, "score": "float64"}
"""Rows `score_candidates` returns: kind is `candidate` or `new_item` (a new item's user within the batch)."""
CANDIDATE_SCHEMA = "kind string, objective string, user_id string, rank int, item_id string, score double"
CTR_COLUMNS = {"user_id": str, "item_id": str, "scenario": str, "p_click": "float64"}
CTR_SCHEMA = "user_id string, item_id string, scenario string, p_click double"


class ModelNotFoundError(LookupError):
    """The requested model version is not in `models`, or its folder is missing or incomplete."""


# -- configuration -------------------------------------------------------------------------


def check_score_config(config: ScoreConfig, prompts: PromptsConfig) -> None:
    """Refuse settings scoring cannot honour, naming the key."""
    for key in ("top_k", "batch_size", "chunk_size", "ctr_top_n", "cold_item_users", "new_user_k"):
        if getattr(config, key) < 1:
            raise ConfigError(f"score.{key} must be at least 1, got {getattr(config, key)}")
    if config.torch_threads < 0:
        raise ConfigError(f"score.torch_threads must be 0 (torch default) or more, got {config.torch_threads}")
    if config.device not in DEVICES:
        raise ConfigError(f"score.device must be one of {list(DEVICES)}, got {config.device!r}")
    if not config.model_version.strip():
        raise ConfigError("score.model_version must be 'latest' or a version id")
    cold = cold_objective(config, prompts)
    if cold.query_aware:
        raise ConfigError(f"score.cold_objective {cold.name!r} is query-aware; pick one that needs no query")
    if config.requests_table:
        requests_ref(config.requests_table)


def cold_objective(config: ScoreConfig, prompts: PromptsConfig) -> Objective:
    """The enabled retrieval objective whose prompts place new items and render new-user prompts."""
    by_name = {o.name: o for o in objectives_from_config(prompts) if o.kind != CTR}
    if config.cold_objective not in by_name:
        raise ConfigError(f"score.cold_objective {config.cold_objective!r} is not an enabled retrieval objective; "
                          f"enabled: {sorted(by_name)}")
    return by_name[config.cold_objective]


def ctr_objective(prompts: PromptsConfig) -> tuple[Objective, bool]:
    """The `ctr` objective (its instruction renders CTR prompts) and whether training used CTR examples."""
    for o in objectives_from_config(prompts):
        if o.kind == CTR:
            return o, True
    return next(o for o in DEFAULT_OBJECTIVES if o.kind == CTR), False


# -- model versions -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """A registered model version and the shape facts scoring checks before any work."""

    version: str
    path: str
    n_items_trained: int
    text_dim: int
    image_dim: int


def resolve_model(lake: Lake, version: str = LATEST) -> ModelRef:
    """The version's registry row and saved config; ModelNotFoundError names the known versions."""
    try:
        models = lake.read(MODELS.name).select("model_version", "created_at", "path").toPandas()
    except TableNotFoundError:
        raise ModelNotFoundError("no model is registered in models: run the train job first") from None
    if models.empty:
        raise ModelNotFoundError("no model is registered in models: run the train job first")
    if version == LATEST:
        row = models.sort_values(["created_at", "model_version"]).iloc[-1]
    else:
        match = models[models["model_version"] == version]
        if match.empty:
            known = sorted(models["model_version"].tolist())
            raise ModelNotFoundError(f"model version {version!r} not found in models; known: {known}")
        row = match.iloc[0]
    path = str(row["path"])
    for name in (WEIGHTS, CONFIG):
        if not os.path.exists(os.path.join(path, name)):
            raise ModelNotFoundError(f"model version {row['model_version']!r} is registered at {path}, "
                                     f"but that folder has no {name}")
    with open(os.path.join(path, CONFIG)) as f:
        saved = json.load(f)
    return ModelRef(str(row["model_version"]), path, int(saved["n_items_trained"]), int(saved.get("text_dim", 384)),
                    int(saved.get("image_dim", 0)))


# -- the catalogue snapshot ------------------------------------------------------------------


def fit_catalog(catalog: ItemCatalog, model: ModelRef) -> ItemCatalog:
    """The catalogue shaped for the model: a text dimension that differs is an error; images absent
    from the catalogue become zeros (the image path contributes nothing, as for any item without one)."""
    if catalog.text.shape[1] != model.text_dim:
        raise ValueError(f"item_features text embeddings have {catalog.text.shape[1]} dims but model "
                         f"{model.version} was trained on {model.text_dim}: the text encoder changed; retrain")
    image, has_image = catalog.image, catalog.has_image
    if image.shape[1] != model.image_dim:
        if has_image.any() and model.image_dim:
            raise ValueError(f"item_features image embeddings have {image.shape[1]} dims but model "
                             f"{model.version} was trained on {model.image_dim}")
        image = torch.zeros(len(catalog), model.image_dim)
        has_image = torch.zeros(len(catalog), dtype=torch.bool)
    return ItemCatalog(catalog.text, image, has_image, catalog.item_ids)


def write_catalog_snapshot(catalog: ItemCatalog, directory: str) -> str:
    """Write `catalog` into `directory` (atomically: a temporary folder, then a rename); returns its path."""
    directory = os.path.abspath(directory)
    tmp = directory + ".tmp"
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    catalog.save(tmp)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    os.rename(tmp, directory)
    return directory


def new_item_indices(features: pd.DataFrame, ds: str, n_items_trained: int) -> list[int]:
    """Items first seen on `ds` that the model never trained an ID for (index >= n_items_trained)."""
    new = features[(features["first_seen_ds"] == ds) & (features["item_index"] >= n_items_trained)]
    return sorted(int(i) for i in new["item_index"])


# -- the per-worker scorer ------------------------------------------------------------------

_CACHE: dict[tuple, Scorer] = {}
_LOCK = threading.Lock()
LOADS = {"count": 0}
"""How many scorers this process has loaded (a worker loads one per model version and snapshot)."""


def resolve_device(setting: str) -> str:
    """`auto`: cuda when this process sees a GPU, else cpu; `cuda` without a GPU is an error."""
    if setting not in DEVICES and not str(setting).startswith("cuda:"):
        raise ValueError(f"score.device must be one of {list(DEVICES)}, got {setting!r}")
    if setting == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        if setting != "auto":
            raise RuntimeError(f"score.device is {setting!r} but this process sees no GPU")
        return "cpu"
    return "cuda" if setting == "auto" else setting


def set_torch_threads(n: int) -> None:
    """Torch CPU threads for this worker (0 leaves torch's default); Spark already sets OMP_NUM_THREADS."""
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def get_scorer(model_dir: str, catalog_dir: str, device: str = "cpu") -> Scorer:
    """The scorer for a model folder and catalogue snapshot, loaded once per process and kept.

    Keyed by the two paths and the device; loading a new key drops the others, so a
    long-lived worker holds one model and one catalogue's item vectors at a time.
    """
    key = (os.path.abspath(model_dir), os.path.abspath(catalog_dir), str(device))
    with _LOCK:
        scorer = _CACHE.get(key)
        if scorer is None:
            _CACHE.clear()
            scorer = Scorer.load(key[0], catalog=ItemCatalog.load(key[1]), device=str(device))
            _CACHE[key] = scorer
            LOADS["count"] += 1
        return scorer


def clear_scorers() -> None:
    with _LOCK:
        _CACHE.clear()


# -- batch scoring (pandas in, pandas out) ---------------------------------------------------


def _empty(columns: dict) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t if t is not str else object) for c, t in columns.items()})


def _as_lists(values) -> list[list[str]]:
    return [[] if v is None else list(v) for v in values]


def _indices(scorer: Scorer, ids: list[str]) -> list[int]:
    """Catalogue indices of the ids the catalogue knows (others cannot be candidates anyway)."""
    index = scorer.index
    return [index[i] for i in ids if i in index]


def unscaled(scorer: Scorer, logits: np.ndarray) -> np.ndarray:
    """max_m <u_m, w_i> from the retrieval logits scale * max_m <u_m, w_i>."""
    return logits / float(scorer.model.log_scale.detach().exp())


def score_candidates(
    pdf: pd.DataFrame,
    scorer: Scorer,
    k: int,
    batch_size: int = 256,
    chunk_size: int = 65536,
    new_items: list[int] | None = None,
    new_item_users: int = 0,
    placement_objective: str | None = None,
) -> pd.DataFrame:
    """Whole-catalogue top-k per prompt, and each new item's best users among this batch's users.

    `pdf` holds objective, user_id, prompt_text, history_item_ids and, optionally,
    exclude_item_ids (items never to return for that row: the user's purchases). Each prompt
    is one forward pass; its user vectors score the catalogue in `chunk_size` slices with a
    running best-k, so memory stays bounded for any catalogue size. Rows of
    `placement_objective` also rank the users of the batch for every index in `new_items`,
    keeping each item's best `new_item_users` (kind `new_item`; the caller keeps the global
    best across batches). Excluded or non-finite scores never become rows.
    """
    out = []
    exclude_col = "exclude_item_ids" if "exclude_item_ids" in pdf.columns else None
    for start in range(0, len(pdf), batch_size):
        part = pdf.iloc[start:start + batch_size]
        histories = _as_lists(part["history_item_ids"])
        users = scorer.user_vectors(part["prompt_text"].tolist(), histories, batch_size=batch_size)
        exclude = [_indices(scorer, ids) for ids in _as_lists(part[exclude_col])] if exclude_col else None
        idx, logits = scorer.top_k(users, k, chunk_size=chunk_size, exclude=exclude)
        out.append(_candidate_rows(part, scorer, idx, logits))
        if new_items and placement_objective is not None:
            mask = (part["objective"] == placement_objective).to_numpy()
            if mask.any():
                keep = torch.as_tensor(np.flatnonzero(mask), device=users.device)
                out.append(_new_item_rows(part[mask], scorer, users[keep], new_items, new_item_users,
                                          [exclude[i] for i in np.flatnonzero(mask)] if exclude else None))
    out = [o for o in out if len(o)]
    if not out:
        return _empty(CANDIDATE_COLUMNS)
    return pd.concat(out, ignore_index=True).astype(CANDIDATE_COLUMNS)


def _candidate_rows(part: pd.DataFrame, scorer: Scorer, idx: np.ndarray, logits: np.ndarray) -> pd.DataFrame:
    k = idx.shape[1]
    finite = np.isfinite(logits) & (idx >= 0)
    rows, cols = np.nonzero(finite)
    item_ids = np.asarray(scorer.catalog.item_ids, dtype=object)
    return pd.DataFrame({
        "kind": CANDIDATE,
        "objective": part["objective"].to_numpy()[rows],
        "user_id": part["user_id"].to_numpy()[rows],
        "rank": (cols + 1).astype("int32") if k else np.zeros(0, "int32"),
        "item_id": item_ids[idx[rows, cols]],
        "score": unscaled(scorer, logits[rows, cols]).astype("float64"),
    })


@torch.no_grad()
def _new_item_rows(part: pd.DataFrame, scorer: Scorer, users: torch.Tensor, new_items: list[int], n: int,
                   exclude: list[list[int]] | None) -> pd.DataFrame:
    """Each new item's best `n` users among `part` (score rows kind `new_item`)."""
    items = torch.as_tensor(new_items, device=users.device, dtype=torch.long)
    s = scorer.model.similarity(users, scorer.item_vectors[items]).float()  # [B, n_new]
    s = torch.nan_to_num(s, nan=-float("inf"))
    if exclude:
        position = {v: j for j, v in enumerate(new_items)}
        for b, bought in enumerate(exclude):
            for i in bought:
                if i in position:
                    s[b, position[i]] = -float("inf")
    top = min(n, s.shape[0])
    best, who = s.topk(top, dim=0)  # [top, n_new]
    best, who = best.cpu().numpy(), who.cpu().numpy()
    ok = np.isfinite(best)
    r, c = np.nonzero(ok)
    item_ids = np.asarray(scorer.catalog.item_ids, dtype=object)[np.asarray(new_items)]
    return pd.DataFrame({
        "kind": NEW_ITEM,
        "objective": part["objective"].to_numpy()[who[r, c]],
        "user_id": part["user_id"].to_numpy()[who[r, c]],
        "rank": (r + 1).astype("int32"),
        "item_id": item_ids[c],
        "score": best[r, c].astype("float64"),
    })


def score_ctr(pdf: pd.DataFrame, scorer: Scorer, batch_size: int = 256) -> pd.DataFrame:
    """P(click) for every item of every row: user_id, scenario, prompt_text, history_item_ids, item_ids.

    One forward pass per row (the user's CTR prompt for that scenario), then the CTR head on
    each (user vectors, item vector) pair. Items the catalogue does not know are skipped.
    """
    out = []
    index = scorer.index
    for start in range(0, len(pdf), batch_size):
        part = pdf.iloc[start:start + batch_size]
        users = scorer.user_vectors(part["prompt_text"].tolist(), _as_lists(part["history_item_ids"]),
                                    batch_size=batch_size)
        rows, items, ids = [], [], []
        for b, wanted in enumerate(_as_lists(part["item_ids"])):
            for item_id in wanted:
                if item_id in index:
                    rows.append(b)
                    items.append(index[item_id])
                    ids.append(item_id)
        if not rows:
            continue
        row_idx = torch.as_tensor(rows, device=users.device, dtype=torch.long)
        p = scorer.click_probability(users[row_idx], items).astype("float64")
        frame = pd.DataFrame({
            "user_id": part["user_id"].to_numpy()[rows],
            "item_id": ids,
            "scenario": part["scenario"].to_numpy()[rows],
            "p_click": p,
        })
        out.append(frame[np.isfinite(p)])
    if not out:
        return _empty(CTR_COLUMNS)
    return pd.concat(out, ignore_index=True).astype(CTR_COLUMNS)


# -- Spark DataFrame helpers (driver-built plans; no UDFs) ----------------------------------


def infer_prompts(lake: Lake, ds: str) -> DataFrame:
    """Today's inference prompts (split infer, every retrieval objective): one per user and objective."""
    if not lake.exists(PROMPTS.name):
        return lake.read_or_empty(PROMPTS.name)
    return lake.read(PROMPTS.name, ds=ds).where((F.col("split") == INFER) & (F.col("objective") != CTR))


def purchases(lake: Lake, ds: str) -> DataFrame:
    """Per user, the items bought up to `ds` (exclude_item_ids)."""
    return (
        lake.read_or_empty(EVENTS.name)
        .where((F.col("ds") <= ds) & (F.col("event_type") == "purchase"))
        .groupBy("user_id")
        .agg(F.array_sort(F.collect_set("item_id")).alias("exclude_item_ids"))
    )


def user_context(lake: Lake, ds: str, prompts: PromptsConfig) -> DataFrame:
    """Per user with any event up to `ds`: latest scenario, inference history text and item ids.

    Built by the prompt job's own functions (`recllm.prompts`), so the history reads
    exactly as in the user's inference prompts; only each user's last
    `max_lookback_events` events (the most a history looks at) go through the window.
    """
    from recllm.prompts import context_events, inference_anchors, with_history

    events = context_events(lake, ds, prompts.max_text_chars, ctr=False)
    anchors = inference_anchors(events, ds)
    latest_first = Window.partitionBy("user_id").orderBy(F.desc("ts"), F.desc("event_id"))
    recent = (events.withColumn("_n", F.row_number().over(latest_first))
              .where(F.col("_n") <= prompts.max_lookback_events).drop("_n"))
    rows = with_history(recent.unionByName(anchors, allowMissingColumns=True), prompts)
    return rows.where(F.col("_sentinel")).select(
        "user_id",
        "scenario",
        F.col("_history_text").alias("history_text"),
        F.transform("_history", lambda h: h["item_id"]).alias("history_item_ids"),
    )


def render_prompts(rows: DataFrame, lake: Lake, prompts: PromptsConfig, objective: Objective,
                   scenario: Column, history_text: Column) -> DataFrame:
    """`rows` (with user_id) plus `prompt_text`: `objective`'s prompt, rendered as the prompt job does.

    `scenario` is the surface (the objective's own scenario wins); the profile comes from
    `users`; the query is empty (scoring never renders query-aware objectives).
    """
    from recllm.prompts import UNKNOWN, neutral, parse_template, profiles

    template = parse_template(prompts.template)
    chars = prompts.max_text_chars
    surface = F.lit(objective.scenario) if objective.scenario else scenario
    rows = rows.join(profiles(lake, chars).withColumnRenamed("profile", "_profile"), "user_id", "left")
    text = template.render({
        "instruction": F.lit(objective.instruction),
        "scenario": F.coalesce(neutral(surface, chars), F.lit(UNKNOWN)),
        "profile": F.coalesce(F.col("_profile"), F.lit(UNKNOWN)),
        "query": F.lit(""),
        "history": history_text,
    })
    return rows.withColumn("prompt_text", text).drop("_profile")


def new_users(lake: Lake, ds: str, context: DataFrame) -> DataFrame:
    """user_id of today's new users: first event on `ds`, no history in today's context, or
    created on `ds` (in `users`) without any event yet."""
    first = (lake.read_or_empty(EVENTS.name).where(F.col("ds") <= ds).groupBy("user_id")
             .agg(F.min("ds").alias("_first")).where(F.col("_first") == ds).select("user_id"))
    empty = context.where(F.size("history_item_ids") == 0).select("user_id")
    ids = first.unionByName(empty)
    if lake.exists(USERS.name):
        signed_up = lake.read(USERS.name).where(F.to_date("created_ts") == F.to_date(F.lit(ds))).select("user_id")
        ids = ids.unionByName(signed_up.join(context.select("user_id"), "user_id", "left_anti"))
    return ids.distinct()


def requests_ref(ref: str) -> tuple[str, str]:
    """("path", p) for a folder path (Delta or Parquet), else ("table", name) after checking each name part."""
    if "/" in ref or "\\" in ref:
        return "path", ref
    for part in ref.split("."):
        check_identifier(part, "score.requests_table part")
    return "table", ref


def read_requests(spark: SparkSession, ref: str, ds: str) -> DataFrame:
    """(user_id, item_id, scenario) pairs to score from a table name or a Delta/Parquet folder.

    When the table has a `ds` column only that day's rows are read. A missing scenario reads
    'unknown'. A missing table or column is an error naming it.
    """
    kind, where = requests_ref(ref)
    if kind == "table":
        if not spark.catalog.tableExists(where):
            raise LookupError(f"score.requests_table {where!r} does not exist")
        df = spark.table(where)
    elif os.path.isdir(os.path.join(where, "_delta_log")):
        from deltalake import DeltaTable

        files = DeltaTable(where).file_uris()
        if not files:
            return spark.createDataFrame([], "user_id string, item_id string, scenario string")
        df = spark.read.option("basePath", where).parquet(*files)
    elif os.path.exists(where) or "://" in where:
        df = spark.read.parquet(where)
    else:
        raise LookupError(f"score.requests_table path {where!r} does not exist")
    missing = [c for c in ("user_id", "item_id") if c not in df.columns]
    if missing:
        raise ValueError(f"score.requests_table {ref!r} has no column(s) {missing}; it needs user_id, item_id, scenario")
    if "ds" in df.columns:
        df = df.where(F.col("ds").cast("string") == ds)
    scenario = F.col("scenario").cast("string") if "scenario" in df.columns else F.lit(None).cast("string")
    from recllm.prompts import UNKNOWN

    return df.select(
        F.col("user_id").cast("string").alias("user_id"),
        F.col("item_id").cast("string").alias("item_id"),
        F.coalesce(scenario, F.lit(UNKNOWN)).alias("scenario"),
    ).where(F.col("user_id").isNotNull() & F.col("item_id").isNotNull())


def current_features(lake: Lake) -> tuple[pd.DataFrame, int]:
    """The current `item_features` as pandas (what the catalogue is built from) and its table version."""
    version = lake.version(ITEM_FEATURES.name)
    frame = lake.read(ITEM_FEATURES.name, version=version).select(
        "item_id", "item_index", "text_embedding", "image_embedding", "first_seen_ds", "ds").toPandas()
    return frame, version
