"""The model's control tokens, and the one function that keeps outside text from forging them.

Prompt text rendered from the catalogue, profiles or queries passes through `neutralize`,
which rewrites anything shaped like a control token (`<|name|>`) into plain text
(`<name>`), so only the renderer itself can place an item slot, query or LM marker.
"""

from __future__ import annotations

import re

ITEM_SLOT = "<|item|>"
QUERY_TOKEN = "<|um|>"
LM_TOKEN = "<|lm|>"
BOS = "<|bos|>"
EOS = "<|eos|>"
PAD = "<|pad|>"
UNK = "<|unk|>"
CONTROL_TOKENS = (PAD, UNK, BOS, EOS, ITEM_SLOT, QUERY_TOKEN, LM_TOKEN)

CONTROL_PATTERN = r"<\s*\|+\s*([^<>|]*?)\s*\|+\s*>"
"""Regex (Java and Python compatible) for anything shaped like `<|name|>`, spaced or not."""

_CONTROL = re.compile(CONTROL_PATTERN)


def neutralize(text: str | None, max_chars: int | None = None) -> str:
    """Outside text made safe for a prompt: control-token shapes defused, length bounded."""
    if text is None:
        return ""
    if max_chars is not None:
        text = text[:max_chars]
    return _CONTROL.sub(r"<\1>", text)
