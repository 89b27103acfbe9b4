"""Synthetic item and user vectors with the structure of learned ones, for top-K at catalogue scale.

Learned item vectors are neither uniform on the sphere nor isolated points: items fall into
categories and sub-categories, popular ones far more often, and the vectors span far fewer
directions than their width. So an item here is a point of a 16-dimensional latent space,
drawn around one of `n_items / 200` sub-category centres (themselves around 64 category
centres; sub-category sizes follow Zipf's law over their ranks), mapped into `dim` dimensions by a fixed
random projection, with a little full-width noise, and normalised. A user's query vectors
each sit near a sub-category centre chosen by popularity, like the mixed tastes a user's
M query vectors capture; item biases are normal with `bias_sd` (log-popularity spread).
Generated in chunks, so 10 million items need only the result's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

LATENT_DIM = 16
CATEGORIES = 64
ITEMS_PER_SUBCATEGORY = 200
ZIPF_EXPONENT = 0.8
"""Sub-category r holds a share proportional to r^-0.8: at 10M items the largest holds 2.6%, the top 1% hold 33%.
(Sizes drawn from a Zipf distribution instead put 96% of the items in one sub-category: one blob, no clusters.)"""
CHUNK = 1 << 20


@dataclass
class VectorWorld:
    items: torch.Tensor  # [N, dim] unit item vectors w_i
    bias: torch.Tensor  # [N] item biases b_i
    users: torch.Tensor  # [U, M, dim] unit query vectors u_m


def clustered_vectors(n_items: int, n_users: int, dim: int = 64, query_tokens: int = 4, bias_sd: float = 0.7,
                      seed: int = 0) -> VectorWorld:
    """Items, their biases and users' query vectors drawn from one clustered latent space (see the module)."""
    rng = np.random.default_rng(seed)
    projection = np.linalg.qr(rng.standard_normal((dim, LATENT_DIM)))[0].T.astype(np.float32)  # [latent, dim]
    n_sub = max(n_items // ITEMS_PER_SUBCATEGORY, 10)
    categories = rng.standard_normal((CATEGORIES, LATENT_DIM)).astype(np.float32)
    centres = categories[rng.integers(0, CATEGORIES, n_sub)] + 0.6 * rng.standard_normal((n_sub, LATENT_DIM)).astype(np.float32)
    popularity = rng.permutation(np.arange(1, n_sub + 1, dtype=np.float64) ** -ZIPF_EXPONENT)
    popularity /= popularity.sum()

    items = torch.empty(n_items, dim)
    for start in range(0, n_items, CHUNK):
        n = min(CHUNK, n_items - start)
        latent = centres[rng.choice(n_sub, n, p=popularity)] + 0.35 * rng.standard_normal((n, LATENT_DIM)).astype(np.float32)
        items[start:start + n] = _unit(latent @ projection + 0.05 * rng.standard_normal((n, dim)).astype(np.float32))
    bias = torch.from_numpy((bias_sd * rng.standard_normal(n_items)).astype(np.float32))
    tastes = centres[rng.choice(n_sub, (n_users, query_tokens), p=popularity)] @ projection
    users = _unit(tastes + 0.3 * rng.standard_normal((n_users, query_tokens, dim)).astype(np.float32))
    return VectorWorld(items, bias, users)


def _unit(x: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.from_numpy(x), dim=-1)
