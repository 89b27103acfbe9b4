"""The item index: approximate top-K through faiss, rescored exactly, against the exact chunked top-K."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from recllm.data.synthetic_vectors import clustered_vectors
from recllm.model.batching import Collator
from recllm.model.inference import Scorer
from recllm.model.item_index import ItemIndex, lists_for
from recllm.model.urm import ItemCatalog
from tests.helpers import tiny_model

OUT_DIM = 64


def vector_scorer(tokenizer, n_items: int, n_users: int = 64, seed: int = 0, ids: str = "i"):
    """A scorer whose catalogue is `n_items` clustered synthetic vectors, under a tiny URM with an item bias and an
    item prior (both nonzero), and its users' query vectors."""
    world = clustered_vectors(n_items, n_users, dim=OUT_DIM, query_tokens=4, seed=seed)
    model = tiny_model(tokenizer, n_items_trained=n_items, item_bias=True, item_prior=True, out_dim=OUT_DIM).eval()
    with torch.no_grad():
        model.item_bias.weight[:, 0] = world.bias
        model.retrieval_prior.weight.normal_(0, 0.3)
        model.log_scale.fill_(float(np.log(20.0)))
    catalog = ItemCatalog(torch.zeros(1, 1).expand(n_items, 1), torch.zeros(1, 0).expand(n_items, 0),
                          torch.zeros(1, dtype=torch.bool).expand(n_items), [f"{ids}{k}" for k in range(n_items)])
    scorer = Scorer(model, Collator(tokenizer, model.config), catalog, world.items, torch.device("cpu"))
    return scorer, world.users


def exclusions(n_users: int, n_items: int) -> list[list[int]]:
    return [[(u * 37 + j * 11) % n_items for j in range(u % 7)] for u in range(n_users)]


def test_the_query_and_item_keys_inner_product_is_the_retrieval_logit(tokenizer):
    scorer, users = vector_scorer(tokenizer, 500, n_users=8)
    model, index = scorer.model, torch.arange(500)
    with torch.no_grad():
        keys = model.item_keys(scorer.item_vectors, index)
        via_keys = torch.einsum("bmd,nd->bmn", model.query_keys(users), keys).amax(dim=1)
        logits = model.scores(users, scorer.item_vectors, index)
    assert keys.shape == (500, OUT_DIM + 1)
    assert torch.allclose(via_keys, logits, atol=1e-4)


def test_with_every_list_probed_the_index_top_k_is_the_exact_top_k(tokenizer):
    scorer, users = vector_scorer(tokenizer, 3000)
    exclude = exclusions(len(users), 3000)
    exact_idx, exact_scores = scorer.top_k(users, 50, chunk_size=700, exclude=exclude)

    scorer.attach_index(None, nprobe=10**6)
    ann_idx, ann_scores = scorer.top_k(users, 50, exclude=exclude, user_block=16)

    assert all(set(a) == set(e) for a, e in zip(ann_idx.tolist(), exact_idx.tolist()))
    assert np.allclose(ann_scores, exact_scores, atol=1e-4)  # the same order, but among ties within rounding


def test_probing_one_list_in_a_hundred_finds_95_percent_of_the_exact_top_50_never_an_excluded_item_nor_one_twice(tokenizer):
    n = 40000
    scorer, users = vector_scorer(tokenizer, n, n_users=200, seed=1)
    exclude = exclusions(len(users), n)
    exact_idx, _ = scorer.top_k(users, 50, exclude=exclude, exact=True)

    index = scorer.attach_index(None, nprobe=8)
    ann_idx, ann_scores = scorer.top_k(users, 50, exclude=exclude)

    assert index.index.nlist == lists_for(n) == 800
    recall = np.mean([len(set(a) & set(e)) / 50 for a, e in zip(ann_idx.tolist(), exact_idx.tolist())])
    assert recall >= 0.95, recall
    assert np.isfinite(ann_scores).all() and (ann_idx >= 0).all()
    assert all(len(set(row)) == 50 and not set(row) & set(ex) for row, ex in zip(ann_idx.tolist(), exclude))
    assert (np.diff(ann_scores, axis=1) <= 0).all()


def test_a_saved_index_takes_the_items_new_since_and_one_for_other_items_is_rebuilt(tokenizer, tmp_path, caplog):
    scorer, users = vector_scorer(tokenizer, 2500)
    old_ids = scorer.catalog.item_ids[:2000]
    ItemIndex.build(lambda i: scorer.item_keys(i), old_ids).save(str(tmp_path))

    with caplog.at_level(logging.INFO, logger="recllm.model.inference"):
        index = scorer.attach_index(str(tmp_path), nprobe=10**6)
    assert index.n_items == 2500 and "500 new since added" in caplog.text
    exact_idx, exact_scores = scorer.top_k(users, 20, exact=True)
    ann_idx, ann_scores = scorer.top_k(users, 20)
    assert all(set(a) == set(e) for a, e in zip(ann_idx.tolist(), exact_idx.tolist()))
    assert np.allclose(ann_scores, exact_scores, atol=1e-4)

    other, _ = vector_scorer(tokenizer, 2500, ids="other-")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recllm.model.inference"):
        rebuilt = other.attach_index(str(tmp_path), nprobe=8)
    assert "no item index" in caplog.text and rebuilt.n_items == 2500 and rebuilt.holds_prefix_of(other.catalog.item_ids)


def test_an_index_saved_half_way_is_not_used(tokenizer, tmp_path):
    scorer, _ = vector_scorer(tokenizer, 300)
    ItemIndex.build(lambda i: scorer.item_keys(i), scorer.catalog.item_ids).save(str(tmp_path))
    (tmp_path / "item_index_meta.json").unlink()
    assert ItemIndex.load(str(tmp_path)) is None
    with pytest.raises(ValueError, match="empty catalogue"):
        ItemIndex.build(lambda i: scorer.item_keys(i), [])


def test_training_writes_the_item_index_beside_the_model_only_when_scoring_will_use_it(tokenizer, tmp_path):
    from recllm.config import ScoreConfig
    from recllm.training.driver import write_item_index
    from tests.helpers import tiny_catalog

    tiny_model(tokenizer).save_pretrained(str(tmp_path), tokenizer, tiny_catalog())

    assert not write_item_index(str(tmp_path), ScoreConfig(top_k_method="auto", ann_min_items=10**6))
    assert ItemIndex.load(str(tmp_path)) is None
    assert write_item_index(str(tmp_path), ScoreConfig(top_k_method="ann"))
    saved = ItemIndex.load(str(tmp_path))
    assert saved.n_items == len(tiny_catalog()) and saved.holds_prefix_of(tiny_catalog().item_ids)
    assert ItemCatalog.load(str(tmp_path)).item_ids == tiny_catalog().item_ids  # the index keeps its own files


def test_a_user_who_excludes_thousands_of_items_still_gets_k_and_the_block_stays_bounded(tokenizer, monkeypatch):
    import recllm.model.inference as inference

    scorer, users = vector_scorer(tokenizer, 3000, n_users=8)
    exclude = [list(range(2500)) if u == 3 else [u] for u in range(8)]
    scorer.attach_index(None, nprobe=10**6)
    monkeypatch.setattr(inference, "ANN_MAX_CANDIDATES", 4 * 4 * 200)
    idx, scores = scorer.top_k(users, 50, exclude=exclude)
    exact_idx, _ = scorer.top_k(users, 50, exclude=exclude, exact=True)
    assert idx.shape == (8, 50) and np.isfinite(scores).all()
    assert all(set(a) == set(e) for a, e in zip(idx.tolist(), exact_idx.tolist()))
    assert min(idx[3]) >= 2500
