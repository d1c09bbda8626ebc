"""Incremental detokenisation: O(window) work per token, not a decode of the whole answer.

The text of new tokens is the difference between decoding a short window that ends
with them and the same window without them (so tokenizers that merge spaces or bytes
across tokens still come out right). The window's decoded text is kept, so a token
costs one decode of at most ``2 × WINDOW`` tokens (the window start moves forward in
jumps). A text ending in U+FFFD (an incomplete UTF-8 character) is held back until the
next token completes it. The Rust tokenizer is called directly when there is one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

WINDOW = 8  # tokens of context kept before the unsent ones


class Detokenizer:
    __slots__ = ("_decode", "_done", "_ids", "_prefix", "_read")

    def __init__(self, tokenizer: Any) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            self._decode: Callable[[list[int]], str] = lambda ids: str(backend.decode(ids, skip_special_tokens=True))
        else:
            self._decode = lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True))
        self._ids: list[int] = []
        self._prefix = 0  # start of the context window
        self._read = 0  # ids before this one have been turned into text
        self._done = ""  # decode(ids[prefix:read])

    def push(self, token: int) -> str:
        """The text ``token`` completes (may be empty: a special token or half a character)."""
        self._ids.append(token)
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(self._done) or text.endswith("\ufffd") or not text.startswith(self._done):
            return ""
        new = text[len(self._done) :]
        self._read = len(self._ids)
        if self._read - self._prefix > 2 * WINDOW:  # move the window start; one extra decode per WINDOW tokens
            self._prefix = self._read - WINDOW
            text = self._decode(self._ids[self._prefix : self._read])
        self._done = text
        return new

    def flush(self) -> str:
        """Whatever is still held back (the answer has ended)."""
        text = self._decode(self._ids[self._prefix :])
        self._read = len(self._ids)
        new = text[len(self._done) :] if text.startswith(self._done) else ""
        self._done = text
        return new
