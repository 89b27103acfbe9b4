"""Prompt tokenisation and batching: text with item slots -> a right-padded `Batch`.

Rows are right-padded, so with a causal backbone no real token ever attends to padding
and the query tokens' states are read by position. A prompt longer than the model's
budget loses its OLDEST tokens, and with them the matching oldest history items, so slot
k always holds the k-th surviving history item.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from recllm.model.tokens import ITEM_SLOT
from recllm.model.urm import Batch, URMConfig

MAX_LM_TARGET_TOKENS = 16


def lm_tail_length(target: list[int] | None) -> int:
    """Tokens an LM target adds to its row: the `<|lm|>` marker, the (capped) target and EOS."""
    return len(target[:MAX_LM_TARGET_TOKENS]) + 2 if target else 0


@dataclass
class Collator:
    tokenizer: PreTrainedTokenizerBase
    config: URMConfig

    def __post_init__(self) -> None:
        t = self.tokenizer
        self.bos_id = t.bos_token_id if t.bos_token_id is not None else t.cls_token_id
        self.eos_id = t.eos_token_id if t.eos_token_id is not None else t.sep_token_id
        probe = t("a " + ITEM_SLOT, add_special_tokens=False)["input_ids"]
        before = probe[-2] if len(probe) >= 2 else None
        self.blank_before_slot = before if before is not None and not t.decode([before]).strip() else None

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each prompt, without special tokens (slots are special tokens).

        An ID-only model (`URMConfig.id_only`) reads no text: a prompt becomes its item slots.
        A byte-level tokenizer reads the space before a slot as a token of its own; it carries
        nothing, so it is dropped (the slot's own embedding replaces its token anyway).
        """
        if self.config.id_only:
            return [[self.config.item_slot_id] * text.count(ITEM_SLOT) for text in texts]
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        blank, slot = self.blank_before_slot, self.config.item_slot_id
        if blank is None:
            return ids
        return [[t for t, after in zip(row, row[1:] + [-1]) if t != blank or after != slot] for row in ids]

    def __call__(
        self,
        tokens: list[list[int]],
        histories: list[list[int]],
        lm_targets: list[list[int] | None] | None = None,
    ) -> Batch:
        c = self.config
        m = c.n_query_tokens
        rows, labels, slot_rows, slot_cols, slot_items, query_cols = [], [], [], [], [], []
        for b, (ids, history) in enumerate(zip(tokens, histories)):
            target = (lm_targets[b] if lm_targets else None) or []
            target = target[:MAX_LM_TARGET_TOKENS]
            lm_len = lm_tail_length(target)
            head = [self.bos_id] if self.bos_id is not None else []
            budget = c.max_tokens - m - lm_len - len(head)
            if budget < 1:
                raise ValueError(f"model.max_tokens={c.max_tokens} leaves no room for the prompt")
            ids = ids[-budget:]
            n_slots = sum(1 for t in ids if t == c.item_slot_id)
            if n_slots > len(history):
                raise ValueError(f"prompt {b} has {n_slots} item slots but {len(history)} history items")
            kept = history[len(history) - n_slots:] if n_slots else []
            seq = head + ids
            k = 0
            for pos, t in enumerate(seq):
                if t == c.item_slot_id:
                    slot_rows.append(b)
                    slot_cols.append(pos)
                    slot_items.append(kept[k])
                    k += 1
            query_cols.append(list(range(len(seq), len(seq) + m)))
            seq = seq + [c.query_token_id] * m
            label = [-100] * len(seq)
            if target:
                tail = [c.lm_token_id] + target + [self.eos_id]
                seq = seq + tail
                label = label + tail[1:] + [-100]
            rows.append(seq)
            labels.append(label)
        width = max(len(r) for r in rows)
        pad = c.pad_token_id
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
        lm = None
        if lm_targets is not None:
            lm = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels], dtype=torch.long)
        return Batch(
            input_ids=input_ids,
            attention_mask=mask,
            slot_rows=torch.tensor(slot_rows, dtype=torch.long),
            slot_cols=torch.tensor(slot_cols, dtype=torch.long),
            slot_items=torch.tensor(slot_items, dtype=torch.long),
            query_cols=torch.tensor(query_cols, dtype=torch.long),
            lm_labels=lm,
        )
