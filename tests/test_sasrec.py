"""The SASRec expert: a causal next-item model over item IDs, trained at every position, rebuilt from prompt rows."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch

from recllm.evaluation.sasrec import (IGNORE, SASRec, SASRecConfig, fit, load_item_ids, training_windows,
                                      user_sequences)

N = 30


def cycle_sequences(n_users: int = 200, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Users walk the catalogue in order (item i is always followed by item i + 1 mod N), from random starts."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_users):
        start, length = int(rng.integers(0, N)), int(rng.integers(4, 12))
        items = [(start + j) % N for j in range(length)]
        out.append((items[:-1], items[1:]))
    return out


def test_it_learns_a_deterministic_successor_pattern_to_near_perfect_recall_within_seconds():
    histories = [[(s + j) % N for j in range(5)] for s in range(N)]
    targets = [(s + 5) % N for s in range(N)]
    start = time.perf_counter()
    model, summary = fit(SASRecConfig(n_items=N, epochs=20, patience=3, dropout=0.1, batch_size=32),
                         cycle_sequences(), histories, targets, threads=1)
    assert time.perf_counter() - start < 60
    top1 = model.top_k(histories, 1)[:, 0]  # unmasked: the history's own items are rankable too
    assert (top1 == np.array(targets)).mean() >= 0.9
    assert summary["valid_ndcg"] >= 0.9 and summary["best_epoch"] <= summary["epochs"] <= 20
    assert summary["examples"] == sum(len(items) for items, _ in cycle_sequences())
    assert summary["examples_per_s"] > 0 and summary["peak_memory_bytes"] > 0


def test_an_output_depends_only_on_the_items_before_it():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=N, dropout=0.0)).eval()
    tokens = torch.tensor([[3, 8, 1, 20, 7, 11]])
    changed = tokens.clone()
    changed[0, 4] = 25
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.equal(a[0, :4], b[0, :4])
    assert not torch.allclose(a[0, 4:], b[0, 4:])


def test_a_history_is_ranked_from_its_last_item_whatever_the_padding_of_its_batch():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=N)).eval()
    alone = model.scores([[4, 5, 6]])
    batched = model.scores([[4, 5, 6], list(range(20)), []])
    assert torch.allclose(alone[0], batched[0], atol=1e-5)
    assert torch.isfinite(batched).all()  # an empty history still ranks


def test_excluded_items_are_never_ranked():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=N)).eval()
    ranked = model.top_k([[1, 2, 3], [4]], 10, exclude=[[1, 2, 3], [4, 5]])
    assert not {1, 2, 3} & set(ranked[0].tolist()) and not {4, 5} & set(ranked[1].tolist())
    assert ranked.shape == (2, 10) and all(len(set(row)) == 10 for row in ranked.tolist())


def test_training_is_deterministic_for_a_seed():
    config = SASRecConfig(n_items=N, epochs=2, dropout=0.3, batch_size=16, seed=7)
    a, _ = fit(config, cycle_sequences(40), threads=1)
    b, _ = fit(config, cycle_sequences(40), threads=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_saved_model_loads_with_identical_scores_and_its_item_ids(tmp_path):
    model, _ = fit(SASRecConfig(n_items=N, epochs=1, batch_size=32), cycle_sequences(40), threads=1)
    ids = [f"item-{i}" for i in range(N)]
    model.save(str(tmp_path / "sasrec"), ids)
    loaded = SASRec.load(str(tmp_path / "sasrec"))
    assert loaded.config == model.config and load_item_ids(str(tmp_path / "sasrec")) == ids
    histories = [[1, 2, 3], [9], []]
    assert torch.equal(loaded.scores(histories), model.eval().scores(histories))
    assert sorted(p.name for p in (tmp_path / "sasrec").iterdir()) == ["config.json", "items.json", "model.safetensors"]
    with pytest.raises(ValueError, match="item ids"):
        model.save(str(tmp_path / "other"), ids[:-1])


def prompt_rows(user: str, events: list[str], positives: set[str], history_length: int) -> list[dict]:
    """The prompts table's training rows of one user: one per positive event, with the bounded history before it."""
    return [dict(user_id=user, cutoff_ts=pd.Timestamp("2024-01-01") + pd.Timedelta(seconds=t),
                 history_item_ids=events[max(0, t - history_length):t], target_item_ids=[item])
            for t, item in enumerate(events) if item in positives]


def test_a_users_sequence_is_rebuilt_from_bounded_histories_with_every_next_item_as_a_label():
    index = {f"i{k}": k for k in range(10)}
    events = ["i0", "i1", "i2", "i3", "i4", "i5", "i6", "i2"]  # longer than the 3-event histories, with a repeat
    rows = pd.DataFrame(prompt_rows("u", events, set(index), 3)).sample(frac=1.0, random_state=0)  # any row order
    [(items, labels)] = user_sequences(rows, index)
    assert items == [0, 1, 2, 3, 4, 5, 6]
    assert labels == [1, 2, 3, 4, 5, 6, 2]


def test_history_events_that_are_not_examples_are_inputs_without_labels():
    index = {f"i{k}": k for k in range(10)}
    events = ["i0", "i1", "i2", "i3", "i4"]  # i1 and i3 not positives of the objective (e.g. low ratings)
    rows = pd.DataFrame(prompt_rows("u", events, {"i0", "i2", "i4"}, 20)
                        + prompt_rows("v", ["i5", "i6"], {"i5", "i6"}, 20)
                        + [dict(user_id="w", cutoff_ts=pd.Timestamp("2024-01-01"), history_item_ids=["i1"],
                                target_item_ids=["unknown"])])
    sequences = user_sequences(rows, index)
    assert sequences == [([0, 1, 2, 3], [IGNORE, 2, IGNORE, 4]), ([5], [6])]  # w: no known example


def test_long_sequences_are_cut_into_windows_from_their_end_and_every_label_is_trained_once():
    tokens, labels = training_windows([(list(range(7)), list(range(1, 8))), ([3], [IGNORE])], max_len=3)
    assert tokens.tolist() == [[5, 6, 7], [2, 3, 4], [1, 0, 0]]  # token = item + 1, right-padded
    assert labels.tolist() == [[5, 6, 7], [2, 3, 4], [1, IGNORE, IGNORE]]
