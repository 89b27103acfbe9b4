"""A rank's examples, streamed: its share of the prompt files read in blocks, tokenised as they come.

Memory holds one block of rows (`block_rows`), never the whole shard, so it does not grow
with the number of examples. Each epoch visits the blocks in file order; inside a block
the rows are shuffled, grouped by token length (their LM target, drawn for the epoch
first, included) into batches (little padding), and the batches shuffled. The batches may
be cut to an equal estimated cost instead of an equal row count (`balance="cost"`): under
DDP every rank waits at each step's gradient all-reduce for the slowest, and a batch's time
follows its tokens (on Office, 60-480 ms for 128 rows), so batches of equal rows but random
lengths leave the faster rank idle. Objectives stay mixed in every batch: batches of one
objective each trained the demo's model to half its click recall. A batch is thus named
by (block, batch within the block), and that position, saved in checkpoints, is all a
resumed run needs to continue mid-epoch with the very batches it would have seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recllm.model.batching import MAX_LM_TARGET_TOKENS, Collator, lm_tail_length

log = logging.getLogger(__name__)

COLUMNS = ["objective", "split", "prompt_text", "history_item_ids", "target_item_ids", "label"]
COUNT_COLUMNS = ["objective", "split", "history_item_ids", "target_item_ids", "label"]
BALANCES = ("cost", "rows")
WIDTH_DOUBLING = 90.0  # row_cost: the width in tokens at which a token's time doubles
LM_TOKEN_EXTRA = 1.4  # row_cost: an LM tail token's extra time, in prompt tokens


@dataclass
class Examples:
    """Tokenised examples (lists aligned by example)."""

    tokens: list[list[int]]
    history: list[list[int]]
    item: np.ndarray  # the target item (retrieval) or the impressed item (CTR); -1 where none
    label: np.ndarray  # CTR label; nan for retrieval examples
    lm_target: list[list[int] | None]

    @property
    def retrieval(self) -> np.ndarray:
        return np.isnan(self.label) & (self.item >= 0)

    @property
    def ctr(self) -> np.ndarray:
        return ~np.isnan(self.label)

    def __len__(self) -> int:
        return len(self.tokens)

    def take(self, idx) -> "Examples":
        return Examples(
            [self.tokens[i] for i in idx], [self.history[i] for i in idx], self.item[idx],
            self.label[idx], [self.lm_target[i] for i in idx],
        )

    def lm_lengths(self) -> np.ndarray:
        """LM tail tokens per example (0 where it has no LM target)."""
        return np.array([lm_tail_length(lm) for lm in self.lm_target], dtype=np.int64)

    def lengths(self, lm_lengths: np.ndarray | None = None) -> np.ndarray:
        """Tokens per example, its LM tail included (the collator adds as many more to every row);
        `lm_lengths`, when already computed, spares computing them again."""
        lm = self.lm_lengths() if lm_lengths is None else lm_lengths
        return np.array([len(t) for t in self.tokens], dtype=np.int64) + lm


def shard_ranges(row_counts: list[int], rank: int, world: int) -> list[tuple[int, int, int]]:
    """(file position, first row, row count) of this rank's contiguous share of all rows.

    Ranks split the rows, not the files: files differ in size, and DDP steps every rank
    the same number of batches, so a rank with a small file would cap every other
    rank's epoch at its own size.
    """
    total = sum(row_counts)
    lo, hi = total * rank // world, total * (rank + 1) // world
    out, start = [], 0
    for position, n in enumerate(row_counts):
        a, b = max(lo, start), min(hi, start + n)
        if a < b:
            out.append((position, a - start, b - a))
        start += n
    return out


def content_order(files: list[str]) -> tuple[list[str], list[int]]:
    """The files ordered by what they hold (rows, then the first row's prompt), and their row counts.

    Not by name: writers name part files with random ids, so a rerun on the same rows would
    order them, and so cut the ranks' shares and draw the batches, differently.
    """
    keys = []
    for path in files:
        parquet = pq.ParquetFile(path)
        first = next(parquet.iter_batches(batch_size=1, columns=["prompt_text"]), None)
        prompt = first.column(0)[0].as_py() if first is not None and first.num_rows else None
        keys.append((parquet.metadata.num_rows, prompt or "", path))
    keys.sort()
    return [path for _, _, path in keys], [n for n, _, _ in keys]


def usable_rows(table: pa.Table, split: str, objectives: list[str] | None, known: pa.Array) -> pa.Array:
    """Rows of `split` (and of `objectives`) whose history and target items are all in the catalogue."""
    keep = pc.equal(table["split"], split)
    if objectives:
        keep = pc.and_(keep, pc.is_in(table["objective"], value_set=pa.array(objectives)))
    for column in ("history_item_ids", "target_item_ids"):
        lists = table[column].combine_chunks()
        unknown = pc.invert(pc.is_in(pc.list_flatten(lists), value_set=known))
        rows = pc.list_parent_indices(lists).filter(unknown)
        bad = np.zeros(len(table), dtype=bool)
        bad[rows.to_numpy(zero_copy_only=False)] = True
        keep = pc.and_(keep, pa.array(~bad))
    return pc.fill_null(keep, False)


class ShardStream:
    """One split of this rank's share of the prompt files, as tokenised blocks and batches."""

    def __init__(self, files: list[str], rank: int, world: int, split: str, collator: Collator,
                 index: dict[str, int], lm_tokens: list[list[int]] | None = None,
                 objectives: list[str] | None = None, block_rows: int = 8192):
        self.files, counts = content_order(files)
        self.ranges = shard_ranges(counts, rank, world)
        self.split, self.collator, self.index = split, collator, index
        self.lm_tokens, self.objectives, self.block_rows = lm_tokens, objectives, block_rows
        self.known = pa.array(list(index), type=pa.string())
        self._block_counts: list[tuple[int, int, int]] | None = None

    def _tables(self, columns: list[str]) -> Iterator[pa.Table]:
        """This rank's rows, `block_rows` at a time, each block inside one file."""
        for position, first, n in self.ranges:
            seen = 0
            for batch in pq.ParquetFile(self.files[position]).iter_batches(batch_size=self.block_rows, columns=columns):
                lo, hi = max(first - seen, 0), min(first + n - seen, batch.num_rows)
                seen += batch.num_rows
                if lo < hi:
                    yield pa.Table.from_batches([batch.slice(lo, hi - lo)])
                if seen >= first + n:
                    break

    def _counts(self) -> list[tuple[int, int, int]]:
        """(usable, retrieval, CTR) examples per block (read once, without the prompt text)."""
        if self._block_counts is None:
            self._block_counts = []
            for table in self._tables(COUNT_COLUMNS):
                usable = usable_rows(table, self.split, self.objectives, self.known).to_numpy(zero_copy_only=False)
                ctr = pc.is_valid(table["label"]).combine_chunks().to_numpy(zero_copy_only=False)
                has_target = pc.fill_null(pc.greater(pc.list_value_length(table["target_item_ids"]), 0), False)
                retrieval = has_target.combine_chunks().to_numpy(zero_copy_only=False) & ~ctr
                self._block_counts.append(
                    (int(usable.sum()), int((usable & retrieval).sum()), int((usable & ctr).sum())))
        return self._block_counts

    def block_sizes(self) -> list[int]:
        """Usable examples per block."""
        return [n for n, _, _ in self._counts()]

    def kind_counts(self) -> tuple[int, int]:
        """(retrieval, CTR) examples in this rank's share."""
        counts = self._counts()
        return sum(r for _, r, _ in counts), sum(c for _, _, c in counts)

    def __len__(self) -> int:
        return sum(self.block_sizes())

    def batch_counts(self, batch_size: int) -> list[int]:
        return [batches_for(n, batch_size) for n in self.block_sizes()]

    def blocks(self, first: int = 0) -> Iterator[tuple[int, Examples]]:
        """(block number, tokenised block) in file order, from block `first` on (earlier ones are not tokenised)."""
        for b, table in enumerate(self._tables(COLUMNS)):
            if b >= first:
                yield b, self._encode(table.filter(usable_rows(table, self.split, self.objectives, self.known)))

    def batches(self, batch_size: int, seed: int, start: tuple[int, int] = (0, 0),
                lm_fraction: float = 1.0, balance: str = "rows") -> Iterator[tuple[tuple[int, int], Examples]]:
        """((block, batch) position, examples) of one epoch, from position `start` on.

        `seed` fixes the epoch's order and which examples keep their LM target (each with
        probability `lm_fraction`); the same seed and start give the same batches. A block
        of n examples gives ceil(n / `batch_size`) batches either way; `balance` says how
        they are cut: "cost" (equal estimated cost, so short rows share a batch with more
        of their kind) or "rows" (`batch_size` rows each, the last one short).
        """
        if balance not in BALANCES:
            raise ValueError(f"batch balance must be one of {BALANCES}, got {balance!r}")
        for b, block in self.blocks(start[0]):
            rng = np.random.default_rng([seed, b])
            block.lm_target = lm_sample(block.lm_target, lm_fraction, rng)
            lm_lengths = block.lm_lengths()
            lengths = block.lengths(lm_lengths)
            costs = row_cost(lengths, lm_lengths) if balance == "cost" else None
            order = length_buckets(lengths, batch_size, rng, costs)
            for i in range(start[1] if b == start[0] else 0, len(order)):
                yield (b, i), block.take(order[i])

    def _encode(self, table: pa.Table) -> Examples:
        return encode(table, self.collator, self.index, self.lm_tokens)


def encode(table: pa.Table, collator: Collator, index: dict[str, int],
           lm_tokens: list[list[int]] | None = None) -> Examples:
    """Prompt rows (`COLUMNS`, every item in `index`) as tokenised examples; `lm_tokens` per item index."""
    histories = [[index[i] for i in h] for h in table["history_item_ids"].to_pylist()]
    item = np.array([index[t[0]] if t else -1 for t in table["target_item_ids"].to_pylist()], dtype=np.int64)
    label = table["label"].to_numpy(zero_copy_only=False).astype(np.float64)  # null (retrieval) -> nan
    texts = table["prompt_text"].to_pylist()
    tokens = collator.tokenize(texts) if texts else []
    lm: list[list[int] | None] = [None] * len(texts)
    if lm_tokens is not None:
        lm = [(lm_tokens[i] or None) if i >= 0 and np.isnan(y) else None for i, y in zip(item, label)]
    return Examples(tokens, histories, item, label, lm)


def lm_target_tokens(collator: Collator, lm_texts: list[str]) -> list[list[int]]:
    """Per catalogue index, the token ids the LM head learns (tokenised once, not per example)."""
    return [ids[:MAX_LM_TARGET_TOKENS] for ids in collator.tokenize(list(lm_texts))]


def lm_sample(targets: list, fraction: float, rng: np.random.Generator) -> list:
    """The LM targets, each kept with probability `fraction` (the others None)."""
    if fraction >= 1.0:
        return targets
    keep = rng.random(len(targets)) < fraction
    return [t if k else None for t, k in zip(targets, keep)]


@dataclass(frozen=True)
class RowsPerBatch:
    """A batch's expected rows: in all, and of each loss term (retrieval, CTR, retrieval rows with an LM target).

    Each term's loss is a mean over its rows in the batch. Weighing it by its rows over these
    expectations, and clipping each step's gradient at a norm in proportion to its rows
    (`clip_norm`), makes every row count alike whatever batch it falls in: batches cut to
    equal cost differ in rows (and length buckets in their mix of objectives), and a row in
    a small batch would otherwise count more.
    """

    rows: float
    retrieval: float
    ctr: float
    lm: float

    def weights(self, ex: Examples) -> tuple[float, float, float]:
        """(retrieval, CTR, LM) weights of this batch's loss terms: their rows over the expected rows."""
        lm_rows = sum(t is not None for t in ex.lm_target)
        return tuple(float(n) / expected if expected > 0 else 1.0
                     for n, expected in ((ex.retrieval.sum(), self.retrieval), (ex.ctr.sum(), self.ctr),
                                         (lm_rows, self.lm)))

    def clip_norm(self, step_rows: float, batches: int) -> float:
        """The gradient norm to clip a step of `batches` batches (all ranks') and `step_rows` rows at: 1 for the
        expected rows, in proportion otherwise. The default model's gradient norm is 5-20 on the training tests'
        world, so nearly every step is clipped, and a fixed norm would move the weights as far for a batch of
        few rows as for one of many."""
        return step_rows / (self.rows * batches)


def row_cost(lengths: np.ndarray, lm_lengths: np.ndarray) -> np.ndarray:
    """A row's estimated share of a training step's time, from its tokens (LM tail included) and LM tail tokens.

    Fitted to 60 Office batches timed on one CPU thread (r = 0.98): a token's time grows with
    the row's width (attention; doubling at about `WIDTH_DOUBLING` tokens), and an LM token
    costs `LM_TOKEN_EXTRA` more for its vocabulary-wide head. Only the ratios matter: batches
    are cut to equal sums of it.
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    return lengths * (1.0 + lengths / WIDTH_DOUBLING) + LM_TOKEN_EXTRA * np.asarray(lm_lengths, dtype=np.float64)


def batches_for(rows: int, batch_size: int) -> int:
    """Batches a block of `rows` rows is cut into, however they are cut: ceil(rows / batch_size)."""
    return -(-rows // batch_size)


def equal_cost_cuts(costs: np.ndarray, n_batches: int) -> np.ndarray:
    """Where to cut rows (in order) into `n_batches` non-empty runs of about equal summed cost."""
    n = len(costs)
    share = float(np.sum(costs)) / n_batches
    midpoints = np.cumsum(costs) - np.asarray(costs) / 2.0  # a row goes to the batch its cost's middle falls in
    cuts = np.searchsorted(midpoints, share * np.arange(1, n_batches)).astype(np.int64)
    for j in range(len(cuts)):  # at least one row per batch, on both sides
        cuts[j] = min(max(cuts[j], cuts[j - 1] + 1 if j else 1), n - (n_batches - 1 - j))
    return cuts


def length_buckets(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                   costs: np.ndarray | None = None) -> list[np.ndarray]:
    """ceil(n / batch_size) batches of similar length, in random order: shuffled, sorted by length, cut, shuffled.

    Cut every `batch_size` rows, or with `costs` (per row) into batches of about equal summed cost.
    """
    n = len(lengths)
    if n == 0:
        return []
    shuffled = rng.permutation(n)
    by_length = shuffled[np.argsort(np.asarray(lengths)[shuffled], kind="stable")]
    n_batches = batches_for(n, batch_size)
    if costs is None:
        cuts = np.arange(batch_size, n, batch_size)
    else:
        cuts = equal_cost_cuts(np.asarray(costs, dtype=np.float64)[by_length], n_batches)
    batches = np.split(by_length, cuts)
    return [batches[i] for i in rng.permutation(len(batches))]
