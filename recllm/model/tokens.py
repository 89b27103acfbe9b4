"""The model's control tokens, and the one function that keeps outside text from forging them.

Prompt text rendered from the catalogue, profiles or queries passes through `neutralize`,
which rewrites anything shaped like a control token (`<|name|>`) into plain text
(`<name>`), so only the renderer itself can place an item slot, query or LM marker.
"""

from __future__ import annotations

import re
import unicodedata

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

BLANK_CHARACTER = r"[\p{IsWhite_Space}\p{Cc}\p{Cf}]"
"""Java regex for a character that shows nothing: Unicode white space (tab, no-break space, ideographic
space ...), control and format characters (zero-width space, byte-order mark ...). Text made only of
these is blank, wherever it is judged: `is_blank` here, the same class in Spark (ingest, prompts)."""

BLANK_ENDS = rf"\A{BLANK_CHARACTER}+|{BLANK_CHARACTER}+\z"
"""Java regex for the blank characters at either end of a text (`strip_blank`'s Spark twin)."""


def _shows_nothing(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf")


def is_blank(text: str | None) -> bool:
    """True for None and for text made only of characters that show nothing (see `BLANK_CHARACTER`)."""
    return text is None or all(_shows_nothing(ch) for ch in text)


def strip_blank(text: str) -> str:
    """`text` without the characters that show nothing at either end."""
    start, end = 0, len(text)
    while start < end and _shows_nothing(text[start]):
        start += 1
    while end > start and _shows_nothing(text[end - 1]):
        end -= 1
    return text[start:end]


def neutralize(text: str | None, max_chars: int | None = None) -> str:
    """Outside text made safe for a prompt: control-token shapes defused, length bounded, blank ends removed
    (blank text becomes "")."""
    if text is None:
        return ""
    if max_chars is not None:
        text = text[:max_chars]
    return strip_blank(_CONTROL.sub(r"<\1>", text))
