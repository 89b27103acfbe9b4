"""Inference with a trained URM: user vectors, whole-catalogue top-K in chunks, CTR.

The scorer holds a model, its tokenizer and the CURRENT item catalogue (items that arrived
after training have indices the model never trained an ID for, so they are scored from
text and image alone). Top-K runs over the catalogue in chunks, keeping a running best-K,
so memory is O(user block x (chunk + K)) however many users and items there are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from recllm.model.batching import Collator
from recllm.model.urm import URM, ItemCatalog, load_tokenizer


@dataclass
class Scorer:
    model: URM
    collator: Collator
    catalog: ItemCatalog
    item_vectors: torch.Tensor  # [N, D], cached once per catalogue
    device: torch.device

    @cached_property
    def index(self) -> dict[str, int]:
        return {item_id: i for i, item_id in enumerate(self.catalog.item_ids)}

    @classmethod
    def load(cls, model_dir: str, catalog: ItemCatalog | None = None, device: str | None = None) -> "Scorer":
        """Load a model directory; `catalog` (default: the one saved with the model) may hold newer items."""
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"model directory {model_dir} does not exist")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = URM.from_pretrained(model_dir, device=dev)
        catalog = (catalog or ItemCatalog.load(model_dir)).to(dev)
        with torch.no_grad():
            vectors = model.item_vectors(catalog)
        return cls(model, Collator(load_tokenizer(model_dir), model.config), catalog, vectors, dev)

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
              user_block: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(item indices [B, k], scores [B, k]) over the catalogue, or over `candidates` only.

        Users go `user_block` at a time and items `chunk_size` at a time, so the score
        tensor never exceeds user_block x query tokens x chunk_size, however many users
        and items there are.
        """
        pool = candidates if candidates is not None else torch.arange(len(self.catalog), device=self.device)
        k = min(k, len(pool))
        parts = [self._top_k_block(users[b:b + user_block], k, pool, chunk_size,
                                   None if exclude is None else exclude[b:b + user_block])
                 for b in range(0, users.shape[0], user_block)]
        if not parts:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        return np.concatenate([i for i, _ in parts]), np.concatenate([s for _, s in parts])

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
        history = None
        if self.model.config.ctr_history:
            rows = torch.as_tensor([r for r, h in enumerate(histories) for _ in h], device=self.device, dtype=torch.long)
            slots = torch.as_tensor([self._item_index(i) for h in histories for i in h], device=self.device, dtype=torch.long)
            history = self.model.history_vectors(self.item_vectors[slots], rows, len(items))
        return self.model.click_probability(users, self.item_vectors[idx], history, idx).float().cpu().numpy()


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
