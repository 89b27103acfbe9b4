"""Scorer: whole-catalogue top-K in user blocks and item chunks equals one plain top-K."""

from __future__ import annotations

import numpy as np
import torch

from recllm.model.batching import Collator
from recllm.model.inference import Scorer
from tests.helpers import N_ITEMS, tiny_catalog, tiny_model


def test_blocked_and_chunked_top_k_equals_one_plain_top_k_with_exclusions(tokenizer):
    model = tiny_model(tokenizer).eval()
    catalog = tiny_catalog()
    with torch.no_grad():
        items = model.item_vectors(catalog)
        users = torch.nn.functional.normalize(torch.randn(7, model.config.n_query_tokens, 16), dim=-1)
    scorer = Scorer(model, Collator(tokenizer, model.config), catalog, items, torch.device("cpu"))
    exclude = [[u % N_ITEMS, (u + 3) % N_ITEMS] for u in range(7)]

    idx, scores = scorer.top_k(users, 4, chunk_size=5, exclude=exclude, user_block=3)

    with torch.no_grad():
        full = model.scores(users, items)
    for u, banned in enumerate(exclude):
        full[u, banned] = -float("inf")
    expected = full.topk(4, dim=1)
    assert idx.shape == (7, 4)
    assert np.array_equal(idx, expected.indices.numpy())
    assert np.allclose(scores, expected.values.numpy(), atol=1e-6)
    assert all(not set(row) & set(banned) for row, banned in zip(idx.tolist(), exclude))


def test_no_users_give_an_empty_result(tokenizer):
    model = tiny_model(tokenizer).eval()
    catalog = tiny_catalog()
    with torch.no_grad():
        items = model.item_vectors(catalog)
    scorer = Scorer(model, Collator(tokenizer, model.config), catalog, items, torch.device("cpu"))
    idx, scores = scorer.top_k(torch.zeros(0, model.config.n_query_tokens, 16), 4)
    assert idx.shape == (0, 4) and scores.shape == (0, 4)
