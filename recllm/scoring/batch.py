"""Nightly scoring, the executor side: the per-worker scorer cache and batch scoring, pandas in and out.

`udfs.scoring` runs these inside `mapInPandas` tasks; nothing here touches Spark.
`get_scorer(model_dir, catalog_dir, device)` keeps a module-level cache, so each Python
worker loads a model version and computes the catalogue's item output vectors ONCE,
however many tasks it runs (Spark reuses Python workers); `set_torch_threads` keeps tasks
from oversubscribing the cores. `score_candidates` turns a batch of prompts into
whole-catalogue top-K rows (one forward pass per prompt, chunked top-K, purchased items
excluded) and, for the cold objective, each new item's best users within the batch;
`score_ctr` turns (prompt, items) rows into calibrated click probabilities.

Scores written to `candidates` and `cold_start_fills` are the retrieval logits over the
model's scale, max_m <u_m, w_i> + <v, w_i> / scale (without an item prior: the plain
similarity), so ranking by them is ranking by the logits.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recllm.model.inference import Scorer
from recllm.model.urm import ItemCatalog
from recllm.progress import progress

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
NEW_ITEM, NEW_USER = "new_item", "new_user"
CANDIDATE = "candidate"

CANDIDATE_COLUMNS = {"kind": str, "objective": str, "user_id": str, "rank": "int32", "item_id": str, "score": "float64"}
"""Rows `score_candidates` returns: kind is `candidate` or `new_item` (a new item's user within the batch)."""
CANDIDATE_SCHEMA = "kind string, objective string, user_id string, rank int, item_id string, score double"
CTR_COLUMNS = {"user_id": str, "item_id": str, "scenario": str, "p_click": "float64"}
CTR_SCHEMA = "user_id string, item_id string, scenario string, p_click double"


@dataclass(frozen=True)
class WorkerSpec:
    """What a scoring task needs to find its scorer: shipped from the driver with the task."""

    model_dir: str
    catalog_dir: str  # the day's catalogue snapshot
    device: str  # score.device
    torch_threads: int
    batch_size: int
    chunk_size: int
    ann_nprobe: int = 0  # > 0: top-K through the model's item index (score.top_k_method), this many lists per query


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
    """Torch's and faiss's CPU threads for this worker (0 leaves their defaults); Spark already sets OMP_NUM_THREADS."""
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if n > 0:
        import faiss

        faiss.omp_set_num_threads(n)


def get_scorer(model_dir: str, catalog_dir: str, device: str = "cpu", ann_nprobe: int = 0,
               chunk_size: int = 65536) -> Scorer:
    """The scorer for a model folder and catalogue snapshot, loaded once per process and kept.

    Keyed by the two paths, the device and `ann_nprobe` (> 0: with the model's item index);
    loading a new key drops the others, so a long-lived worker holds one model and one
    catalogue's item vectors (and index) at a time.
    """
    key = (os.path.abspath(model_dir), os.path.abspath(catalog_dir), str(device), ann_nprobe)
    with _LOCK:
        scorer = _CACHE.get(key)
        if scorer is None:
            _CACHE.clear()
            scorer = Scorer.load(key[0], catalog=ItemCatalog.load(key[1]), device=str(device),
                                 ann_nprobe=ann_nprobe, chunk_size=chunk_size)
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
    """The tables' score: retrieval logits over the model's scale (max_m <u_m, w_i>, plus the item prior over scale)."""
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
    exclude_item_ids (items never to return for that row: the user's purchases, and with
    `score.exclude_history` its history). Each prompt
    is one forward pass; its user vectors score the catalogue in `chunk_size` slices with a
    running best-k, so memory stays bounded for any catalogue size. Rows of
    `placement_objective` also rank the users of the batch for every index in `new_items`,
    keeping each item's best `new_item_users` (kind `new_item`; the caller keeps the global
    best across batches). Excluded or non-finite scores never become rows.
    """
    out = []
    exclude_col = "exclude_item_ids" if "exclude_item_ids" in pdf.columns else None
    for start in progress(range(0, len(pdf), batch_size), desc=f"candidates for {len(pdf)} prompts", unit="batch",
                          log=log):
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
    s = unscaled(scorer, scorer.model.scores(users, scorer.item_vectors[items], items).float())  # [B, n_new]
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
    for start in progress(range(0, len(pdf), batch_size), desc=f"ctr for {len(pdf)} prompts", unit="batch", log=log):
        part = pdf.iloc[start:start + batch_size]
        histories = _as_lists(part["history_item_ids"])
        users = scorer.user_vectors(part["prompt_text"].tolist(), histories, batch_size=batch_size)
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
        p = scorer.click_probability(users[row_idx], items, [histories[b] for b in rows]).astype("float64")
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
