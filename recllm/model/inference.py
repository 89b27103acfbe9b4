"""Inference with a trained URM: user vectors, whole-catalogue top-K (exact or approximate), CTR.

The scorer holds a model, its tokenizer and the CURRENT item catalogue (items that arrived
after training have indices the model never trained an ID for, so they are scored from
text and image alone). The exact top-K runs over the catalogue in chunks, keeping a running
best-K, so memory is O(user block x (chunk + K)) however many users and items there are.
With an item index attached (`ann_nprobe`), top-K searches the index with each query vector,
rescores the union of what they found exactly, and keeps the best K: the same ranking
function over a short list instead of the whole catalogue.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from recllm.config import ScoreConfig
from recllm.model.batching import Collator
from recllm.model.item_index import ItemIndex
from recllm.model.urm import URM, ItemCatalog, load_tokenizer

log = logging.getLogger(__name__)

ANN_FETCH = 2
"""Each query vector asks the index for ANN_FETCH x k items (plus the row's exclusions) before the exact rescoring."""
ANN_MAX_CANDIDATES = 1 << 20
"""Most candidates one block of users rescores (a block splits when its rows' exclusions would exceed it)."""


@dataclass
class Scorer:
    model: URM
    collator: Collator
    catalog: ItemCatalog
    item_vectors: torch.Tensor  # [N, D], cached once per catalogue
    device: torch.device
    item_index: ItemIndex | None = None  # attached: top_k is approximate (see `attach_index`)
    nprobe: int = ScoreConfig.ann_nprobe  # index lists scanned per query vector

    @cached_property
    def index(self) -> dict[str, int]:
        return {item_id: i for i, item_id in enumerate(self.catalog.item_ids)}

    @classmethod
    def load(cls, model_dir: str, catalog: ItemCatalog | None = None, device: str | None = None,
             ann_nprobe: int = 0, chunk_size: int = 65536) -> "Scorer":
        """Load a model directory; `catalog` (default: the one saved with the model) may hold newer items.

        Item vectors are computed `chunk_size` items at a time. `ann_nprobe` > 0 attaches the
        model's item index (`attach_index`), searched with that many lists per query vector.
        """
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"model directory {model_dir} does not exist")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = URM.from_pretrained(model_dir, device=dev)
        catalog = (catalog or ItemCatalog.load(model_dir)).to(dev)
        scorer = cls(model, Collator(load_tokenizer(model_dir), model.config), catalog,
                     _item_vectors(model, catalog, chunk_size), dev)
        if ann_nprobe > 0:
            scorer.attach_index(model_dir, ann_nprobe)
        return scorer

    def attach_index(self, model_dir: str | None, nprobe: int) -> ItemIndex:
        """Use an item index for top-K: the one saved in `model_dir` when it holds the start of this catalogue
        (the items new since are added from their vectors), else one built now."""
        saved = ItemIndex.load(model_dir) if model_dir else None
        if saved is not None and saved.holds_prefix_of(self.catalog.item_ids):
            added = saved.extend(self.item_keys, self.catalog.item_ids)
            log.info("item index from %s: %d items, %d new since added", model_dir, saved.n_items, added)
        else:
            if model_dir:
                log.warning("no item index in %s for this catalogue; building one (%d items)", model_dir,
                            len(self.catalog))
            saved = ItemIndex.build(self.item_keys, self.catalog.item_ids)
        self.item_index, self.nprobe = saved, nprobe
        return saved

    @torch.no_grad()
    def item_keys(self, index: np.ndarray) -> np.ndarray:
        """`URM.item_keys` of catalogue indices, as float32 numpy (what the item index holds)."""
        idx = torch.as_tensor(index, device=self.device, dtype=torch.long)
        return self.model.item_keys(self.item_vectors[idx], idx).float().cpu().numpy()

    @torch.no_grad()
    def user_vectors(self, prompts: list[str], histories: list[list[str]], batch_size: int = 256) -> torch.Tensor:
        """[B, M, D] unit user vectors; history item ids unknown to the catalogue are an error."""
        out = []
        for start in range(0, len(prompts), batch_size):
            hist = [[self._item_index(i) for i in h] for h in histories[start:start + batch_size]]
            tokens = self.collator.tokenize(prompts[start:start + batch_size])
            batch = self.collator(tokens, hist).to(self.device)
            users, _ = self.model.encode(batch, self.catalog)
            out.append(users)
        if not out:
            return torch.zeros(0, self.model.config.n_query_tokens, self.item_vectors.shape[1], device=self.device)
        return torch.cat(out)

    def _item_index(self, item_id: str) -> int:
        try:
            return self.index[item_id]
        except KeyError:
            raise KeyError(f"item {item_id!r} is not in the scoring catalogue") from None

    @torch.no_grad()
    def top_k(self, users: torch.Tensor, k: int, chunk_size: int = 65536,
              exclude: list[list[int]] | None = None, candidates: torch.Tensor | None = None,
              user_block: int = 256, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(item indices [B, k], scores [B, k]) over the catalogue, or over `candidates` only.

        Users go `user_block` at a time. Exactly (no index attached, `candidates` given, or
        `exact`), items go `chunk_size` at a time, so the score tensor never exceeds
        user_block x query tokens x chunk_size, however many users and items there are;
        otherwise through the item index (`_ann_block`).
        """
        pool = candidates if candidates is not None else torch.arange(len(self.catalog), device=self.device)
        k = min(k, len(pool))
        use_index = self.item_index is not None and candidates is None and not exact

        def block(b: int):
            ex = None if exclude is None else exclude[b:b + user_block]
            if use_index:
                return self._ann_block(users[b:b + user_block], k, ex)
            return self._top_k_block(users[b:b + user_block], k, pool, chunk_size, ex)

        parts = [block(b) for b in range(0, users.shape[0], user_block)]
        if not parts:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        return np.concatenate([i for i, _ in parts]), np.concatenate([s for _, s in parts])

    def _ann_block(self, users: torch.Tensor, k: int, exclude: list[list[int]] | None) -> tuple[np.ndarray, np.ndarray]:
        """Each query vector fetches ANN_FETCH x k items (plus the most any row excludes) from the index; the
        union is rescored exactly (max over query vectors), duplicates and exclusions dropped, best k kept."""
        b, m = users.shape[0], users.shape[1]
        most_excluded = max((len(e) for e in exclude), default=0) if exclude else 0
        fetch = min(len(self.catalog), ANN_FETCH * k + most_excluded)
        if b > 1 and b * m * fetch > ANN_MAX_CANDIDATES:  # a heavy buyer's exclusions: halve the block
            half = b // 2
            parts = [self._ann_block(users[:half], k, exclude[:half]), self._ann_block(users[half:], k, exclude[half:])]
            return np.concatenate([i for i, _ in parts]), np.concatenate([s for _, s in parts])
        queries = self.model.query_keys(users)  # [B, M, D+1]
        found = self.item_index.search(queries.reshape(b * m, -1).float().cpu().numpy(), fetch, self.nprobe)
        found, _ = torch.as_tensor(found, device=self.device).view(b, m * fetch).sort(dim=1)
        keep = found >= 0
        keep[:, 1:] &= found[:, 1:] != found[:, :-1]
        if exclude:
            for row, items in enumerate(exclude):
                if items:
                    keep[row] &= ~torch.isin(found[row], torch.as_tensor(items, device=self.device))
        slots = found.clamp(min=0)
        keys = self.model.item_keys(self.item_vectors[slots.flatten()], slots.flatten()).view(b, m * fetch, -1)
        scores = torch.einsum("bmd,bcd->bmc", queries, keys.to(queries.dtype)).amax(dim=1).float()
        scores = torch.nan_to_num(scores, nan=-float("inf")).masked_fill(~keep, -float("inf"))
        best_s, pos = scores.topk(min(k, scores.shape[1]), dim=1)
        best_i = found.gather(1, pos).masked_fill(best_s == -float("inf"), -1)
        return best_i.cpu().numpy(), best_s.cpu().numpy()

    def _top_k_block(self, users: torch.Tensor, k: int, pool: torch.Tensor, chunk_size: int,
                     exclude: list[list[int]] | None) -> tuple[np.ndarray, np.ndarray]:
        best_s = torch.full((users.shape[0], k), -float("inf"), device=self.device)
        best_i = torch.full((users.shape[0], k), -1, dtype=torch.long, device=self.device)
        for start in range(0, len(pool), chunk_size):
            idx = pool[start:start + chunk_size]
            s = self.model.scores(users, self.item_vectors[idx], idx).float()
            s = torch.nan_to_num(s, nan=-float("inf"))
            if exclude is not None:
                s = _mask_excluded(s, idx, exclude)
            all_s = torch.cat([best_s, s], dim=1)
            all_i = torch.cat([best_i, idx.unsqueeze(0).expand(users.shape[0], -1)], dim=1)
            best_s, pos = all_s.topk(k, dim=1)
            best_i = all_i.gather(1, pos)
        return best_i.cpu().numpy(), best_s.cpu().numpy()

    @torch.no_grad()
    def click_probability(self, users: torch.Tensor, items: list[int], histories: list[list[str]]) -> np.ndarray:
        """Calibrated P(click) of aligned (user vector, item index, history item ids) triples."""
        idx = torch.as_tensor(items, device=self.device, dtype=torch.long)
        rows = torch.as_tensor([r for r, h in enumerate(histories) for _ in h], device=self.device, dtype=torch.long)
        slots = torch.as_tensor([self._item_index(i) for h in histories for i in h], device=self.device, dtype=torch.long)
        history = self.model.history_vectors(self.item_vectors[slots], rows, len(items)) if self.model.config.ctr_history else None
        text = self.model.text_affinity(self.catalog, slots, rows, idx) if self.model.config.ctr_text_history else None
        return self.model.click_probability(users, self.item_vectors[idx], history, idx, text).float().cpu().numpy()


def _item_vectors(model: URM, catalog: ItemCatalog, chunk_size: int) -> torch.Tensor:
    """Every item's output vector [N, D], `chunk_size` items at a time (peak memory: the result and one chunk)."""
    started = time.perf_counter()
    n = len(catalog)
    out = torch.empty(n, model.config.out_dim, device=catalog.text.device)
    with torch.no_grad():
        for start in range(0, n, chunk_size):
            index = torch.arange(start, min(n, start + chunk_size), device=out.device)
            out[start:start + len(index)] = model.item_vectors(catalog, index)
    if n > chunk_size:
        log.info("item vectors: %d items in %.1fs", n, time.perf_counter() - started)
    return out


def _mask_excluded(scores: torch.Tensor, idx: torch.Tensor, exclude: list[list[int]]) -> torch.Tensor:
    lo, hi = int(idx[0]), int(idx[-1])
    rows, cols = [], []
    contiguous = hi - lo + 1 == len(idx)
    position = None if contiguous else {int(v): p for p, v in enumerate(idx.tolist())}
    for b, items in enumerate(exclude):
        for i in items:
            if contiguous and lo <= i <= hi:
                rows.append(b)
                cols.append(i - lo)
            elif not contiguous and i in position:
                rows.append(b)
                cols.append(position[i])
    if rows:
        scores[rows, cols] = -float("inf")
    return scores
