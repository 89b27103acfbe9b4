"""A rank's examples, streamed from the prompt files: every row once per epoch, bounded blocks, exact resume."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recllm.model.batching import Collator
from recllm.training.stream import RowsPerBatch, ShardStream, equal_cost_cuts, length_buckets, row_cost
from tests.helpers import N_ITEMS, tiny_model

ITEM_IDS = [f"i{k}" for k in range(N_ITEMS)]


def _rows(n: int, seed: int) -> pa.Table:
    """`n` prompt rows: histories of 0-5 items, a retrieval target or a CTR label, a few valid rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n):
        history = [ITEM_IDS[k] for k in rng.integers(0, N_ITEMS, rng.integers(0, 6))]
        ctr = r % 4 == 0
        rows.append({
            "objective": "ctr" if ctr else ("click" if r % 3 else "like"),
            "split": "valid" if r % 10 == 9 else "train",
            "prompt_text": f"row {r} History: " + " ".join("clicked <|item|>" for _ in history),
            "history_item_ids": history,
            "target_item_ids": [ITEM_IDS[r % N_ITEMS]],
            "label": float(r % 2) if ctr else None,
        })
    return pa.Table.from_pylist(rows)


@pytest.fixture
def prompt_files(tmp_path) -> list[str]:
    """Two prompt files of unequal size, as a prompts partition holds them."""
    files = []
    for name, n, seed in (("part-0.parquet", 130, 0), ("part-1.parquet", 57, 1)):
        pq.write_table(_rows(n, seed), tmp_path / name, row_group_size=40)
        files.append(str(tmp_path / name))
    return files


@pytest.fixture
def collator(tokenizer):
    return Collator(tokenizer, tiny_model(tokenizer).config)


def _stream(files, collator, rank=0, world=1, split="train", block_rows=32, index=None):
    index = index if index is not None else {item: k for k, item in enumerate(ITEM_IDS)}
    return ShardStream(files, rank, world, split, collator, index, block_rows=block_rows)


def _row_number(tokens, collator) -> int:
    return int(collator.tokenizer.decode(tokens).split()[1])


def test_each_epoch_visits_every_row_of_the_split_once_across_ranks(prompt_files, collator):
    all_rows = pa.concat_tables([pq.read_table(f) for f in sorted(prompt_files)])
    expected = sorted(int(t.split()[1]) for t, s in zip(all_rows["prompt_text"].to_pylist(), all_rows["split"].to_pylist())
                      if s == "train")
    seen = []
    for rank in range(2):
        stream = _stream(prompt_files, collator, rank, 2)
        batches = [ex for _, ex in stream.batches(8, seed=3)]
        assert sum(len(ex) for ex in batches) == len(stream) and len(batches) == sum(stream.batch_counts(8))
        seen += [_row_number(tokens, collator) for ex in batches for tokens in ex.tokens]
    assert len(seen) == len(expected)  # row numbers repeat between the two files; counts and totals must match
    assert sorted(seen) == expected


def test_the_same_rows_stream_the_same_batches_whatever_the_files_are_named(prompt_files, collator, tmp_path):
    renamed = []
    for path, name in zip(prompt_files, ("part-zz.parquet", "part-aa.parquet")):  # writers name parts at random
        (tmp_path / "renamed").mkdir(exist_ok=True)
        pq.write_table(pq.read_table(path), tmp_path / "renamed" / name, row_group_size=40)
        renamed.append(str(tmp_path / "renamed" / name))
    for rank in range(2):
        original = [_row_number(t, collator) for _, ex in _stream(prompt_files, collator, rank, 2).batches(8, seed=3)
                    for t in ex.tokens]
        again = [_row_number(t, collator) for _, ex in _stream(renamed, collator, rank, 2).batches(8, seed=3)
                 for t in ex.tokens]
        assert again == original


def test_batches_group_similar_lengths_and_the_seed_changes_the_order(prompt_files, collator):
    stream = _stream(prompt_files, collator, block_rows=64)
    batches = [ex for _, ex in stream.batches(8, seed=1)]
    spread = np.mean([np.ptp([len(t) for t in ex.tokens]) for ex in batches])
    every = [len(t) for ex in batches for t in ex.tokens]
    assert spread < 0.5 * np.ptp(every)
    again = [ex.tokens for _, ex in stream.batches(8, seed=1)]
    other = [ex.tokens for _, ex in stream.batches(8, seed=2)]
    assert again == [ex.tokens for ex in batches] and other != again


def test_batches_group_lengths_counting_the_lm_targets_drawn_for_the_epoch(prompt_files, collator):
    index = {item: k for k, item in enumerate(ITEM_IDS)}
    lm_tokens = [[7] * (3 + 5 * (k % 3)) for k in range(N_ITEMS)]  # targets of 3, 8 or 13 tokens
    stream = ShardStream(prompt_files, 0, 1, "train", collator, index, lm_tokens, block_rows=64)
    batches = [ex for _, ex in stream.batches(8, seed=1, lm_fraction=0.5)]
    carried = [t is not None for ex in batches for t in ex.lm_target]
    assert 0.25 < np.mean(carried) < 0.5  # half the retrieval rows (3 in 4 rows); CTR rows never carry one
    spread = np.mean([np.ptp(ex.lengths()) for ex in batches])
    assert spread < 0.5 * np.ptp(np.concatenate([ex.lengths() for ex in batches]))
    again = [ex.lm_target for _, ex in stream.batches(8, seed=1, lm_fraction=0.5)]
    assert again == [ex.lm_target for ex in batches]


def test_a_resumed_epoch_continues_with_exactly_the_batches_it_had_left(prompt_files, collator):
    stream = _stream(prompt_files, collator)
    whole = list(stream.batches(8, seed=5))
    for cut in (1, 5, len(whole) - 1):
        (block, batch), _ = whole[cut - 1]
        rest = list(stream.batches(8, seed=5, start=(block, batch + 1)))
        assert [p for p, _ in rest] == [p for p, _ in whole[cut:]]
        assert [ex.tokens for _, ex in rest] == [ex.tokens for _, ex in whole[cut:]]


def test_blocks_hold_at_most_block_rows_rows(prompt_files, collator):
    stream = _stream(prompt_files, collator, split="valid", block_rows=16)
    sizes = [len(block) for _, block in stream.blocks()]
    assert len(sizes) > 2 and sum(sizes) == len(stream) == 18


def test_rows_naming_items_missing_from_the_catalogue_are_left_out(prompt_files, collator):
    known = {item: k for k, item in enumerate(ITEM_IDS) if item != "i3"}
    stream = _stream(prompt_files, collator, index=known)
    examples = [ex for _, ex in stream.batches(8, seed=0)]
    kept = sum(len(ex) for ex in examples)
    assert 0 < kept == len(stream) < len(_stream(prompt_files, collator))
    assert all(3 not in h for ex in examples for h in ex.history)


def test_length_buckets_cut_a_block_into_batches_of_at_most_the_batch_size():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, 100)
    batches = length_buckets(lengths, 16, rng)
    assert sorted(np.concatenate(batches).tolist()) == list(range(100))
    assert max(map(len, batches)) == 16 and len(batches) == 7


def test_equal_cost_batches_keep_the_batch_count_and_even_out_the_cost():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 90, 1000)
    costs = row_cost(lengths, np.zeros_like(lengths))
    by_rows = length_buckets(lengths, 128, np.random.default_rng(1))
    by_cost = length_buckets(lengths, 128, np.random.default_rng(1), costs)
    assert len(by_cost) == len(by_rows) == 8
    assert sorted(np.concatenate(by_cost).tolist()) == list(range(1000))
    cost_of = [[costs[b].sum() for b in batches] for batches in (by_rows, by_cost)]
    assert np.ptp(cost_of[1]) < 0.1 * np.mean(cost_of[1]) < np.ptp(cost_of[0])
    assert max(map(len, by_cost)) > 128 > min(map(len, by_cost))  # short rows share a batch with more of their kind


def test_row_cost_grows_faster_than_the_tokens_and_counts_lm_tokens_more():
    assert row_cost(np.array([80]), np.array([0]))[0] > 2 * row_cost(np.array([40]), np.array([0]))[0]
    assert row_cost(np.array([40]), np.array([12]))[0] > row_cost(np.array([40]), np.array([0]))[0]


def test_equal_cost_cuts_leave_no_batch_empty_even_when_one_row_outweighs_the_rest():
    cuts = equal_cost_cuts(np.array([1.0, 1.0, 1.0, 100.0, 1.0]), 4)
    sizes = np.diff(np.concatenate([[0], cuts, [5]]))
    assert len(sizes) == 4 and sizes.min() >= 1 and sizes.sum() == 5


def test_a_stream_cuts_by_rows_or_by_cost_into_the_same_number_of_batches(prompt_files, collator):
    stream = _stream(prompt_files, collator, block_rows=64)
    by_rows = [ex for _, ex in stream.batches(8, seed=1)]
    by_cost = [ex for _, ex in stream.batches(8, seed=1, balance="cost")]
    assert len(by_rows) == len(by_cost) == sum(stream.batch_counts(8))
    assert sum(map(len, by_cost)) == sum(map(len, by_rows)) == len(stream)
    assert max(map(len, by_rows)) == 8 and max(map(len, by_cost)) > 8
    with pytest.raises(ValueError, match="batch balance"):
        next(stream.batches(8, seed=1, balance="tokens"))


def test_a_stream_counts_its_retrieval_and_ctr_rows_as_its_batches_hold_them(prompt_files, collator):
    stream = _stream(prompt_files, collator, block_rows=64)
    batches = [ex for _, ex in stream.batches(8, seed=1)]
    retrieval, ctr = stream.kind_counts()
    assert retrieval == sum(int(ex.retrieval.sum()) for ex in batches) > 0
    assert ctr == sum(int(ex.ctr.sum()) for ex in batches) > 0
    assert retrieval + ctr == len(stream)


def test_rows_per_batch_weighs_each_loss_term_by_its_rows_so_every_row_counts_alike(prompt_files, collator):
    stream = _stream(prompt_files, collator, block_rows=64)
    retrieval, ctr = stream.kind_counts()
    n_batches = sum(stream.batch_counts(8))
    expected = RowsPerBatch(len(stream) / n_batches, retrieval / n_batches, ctr / n_batches, 0.0)
    weights = np.array([expected.weights(ex) for _, ex in stream.batches(8, seed=1, balance="cost")])
    assert weights[:, 0].mean() == pytest.approx(1.0) and weights[:, 1].mean() == pytest.approx(1.0)
    assert weights[:, 0].std() > 0  # batches differ in their mix, and their weights say so
    assert (weights[:, 2] == 1.0).all()  # no LM rows expected: the LM term keeps its plain mean
    _, half = next(stream.batches(8, seed=1))
    twice = RowsPerBatch(len(half) * 2.0, float(half.retrieval.sum()) * 2, float(half.ctr.sum()) * 2, 0.0)
    ret_w, ctr_w, _ = twice.weights(half)
    assert (ret_w, ctr_w) == (0.5, 0.5)


def test_a_step_with_more_rows_than_expected_is_clipped_at_a_larger_norm_in_proportion():
    expected = RowsPerBatch(rows=100.0, retrieval=60.0, ctr=40.0, lm=15.0)
    assert expected.clip_norm(step_rows=200.0, batches=2) == 1.0  # two ranks' batches of the expected rows
    assert expected.clip_norm(step_rows=300.0, batches=2) == 1.5
    assert expected.clip_norm(step_rows=50.0, batches=1) == 0.5
