"""Incremental detokenisation: O(window) work per token, not a decode of the whole answer.

The text of new tokens is the difference between decoding a short window that ends
with them and the same window without them (so tokenizers that merge spaces or bytes
across tokens still come out right). A text ending in U+FFFD (an incomplete UTF-8
character) is held back until the next token completes it.
"""

from __future__ import annotations

from typing import Any

_WINDOW = 6  # tokens of context kept before the unsent ones


class Detokenizer:
    __slots__ = ("_ids", "_prefix", "_read", "_tok")

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the context window
        self._read = 0  # ids before this one have been turned into text

    def _decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))

    def push(self, token: int) -> str:
        """The text ``token`` completes (may be empty: a special token or half a character)."""
        self._ids.append(token)
        done = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(done) or text.endswith("\ufffd"):
            return ""
        self._prefix = max(self._prefix, self._read - _WINDOW)
        self._read = len(self._ids)
        return text[len(done) :]

    def flush(self) -> str:
        """Whatever is still held back (the answer has ended)."""
        done = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        self._read = len(self._ids)
        return text[len(done) :] if text.startswith(done) else ""
