"""Which slot of the KV cache holds what: live sequences and retained conversations.

Pure bookkeeping (no torch). A slot is *free*, *busy* (a generation runs in it) or
*retained*: a finished turn of a conversation whose KV stays in the slot, keyed by the
conversation, with the token ids whose KV is valid (positions ``0 … len-1``).

``acquire(key, prompt)`` picks the slot for a new generation:

1. the conversation's retained slot, reusing the longest common prefix of its tokens
   and ``prompt`` (a *hit*; at most ``len(prompt) - 1`` tokens, so one is left to
   prefill and produce logits);
2. else the lowest free slot (decode batches cover slots ``0 … B-1``: low slots keep
   them small);
3. else the least recently used retained slot, whose KV is dropped (an *eviction*);
4. else None: every slot is busy, the request waits.

``release(slot, key, tokens)`` ends a generation: with a key the slot is retained
(replacing an older retention of the same key), else it is freed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class KvStats:
    retained_tokens: int
    retained_conversations: int
    hits: int
    misses: int
    evictions: int
    reused_tokens: int


@dataclass(slots=True)
class _Slot:
    busy: bool = False
    key: str | None = None
    tokens: list[int] = field(default_factory=list)
    used: int = 0  # LRU clock


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SlotTable:
    def __init__(self, slots: int) -> None:
        self._slots = [_Slot() for _ in range(slots)]
        self._by_key: dict[str, int] = {}
        self._clock = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def busy(self) -> int:
        return sum(s.busy for s in self._slots)

    def acquire(self, key: str | None, prompt: list[int]) -> tuple[int, int] | None:
        """(slot, tokens of KV to reuse), or None when every slot is busy."""
        self._clock += 1
        if key is not None and (index := self._by_key.get(key)) is not None and not self._slots[index].busy:
            slot = self._slots[index]
            reuse = min(common_prefix(slot.tokens, prompt), len(prompt) - 1)
            del self._by_key[key]
            slot.busy, slot.key, slot.tokens, slot.used = True, None, [], self._clock
            self.hits += 1
            self.reused_tokens += reuse
            return index, reuse
        if key is not None:
            self.misses += 1
        index = next((i for i, s in enumerate(self._slots) if not s.busy and s.key is None), None)
        if index is None:
            retained = [(s.used, i) for i, s in enumerate(self._slots) if not s.busy and s.key is not None]
            if not retained:
                return None
            index = min(retained)[1]
            self._drop(index)
            self.evictions += 1
        slot = self._slots[index]
        slot.busy, slot.used = True, self._clock
        return index, 0

    def release(self, index: int, key: str | None, tokens: list[int]) -> None:
        """End the generation in ``index``; keep its KV (``tokens``) for ``key`` if given."""
        self._clock += 1
        slot = self._slots[index]
        slot.busy = False
        if key is None or not tokens:
            slot.key, slot.tokens = None, []
            return
        if (old := self._by_key.get(key)) is not None and old != index:
            self._drop(old)  # an older turn of the same conversation: the new one supersedes it
        slot.key, slot.tokens, slot.used = key, tokens, self._clock
        self._by_key[key] = index

    def _drop(self, index: int) -> None:
        slot = self._slots[index]
        if slot.key is not None:
            self._by_key.pop(slot.key, None)
        slot.key, slot.tokens = None, []

    def retained(self, key: str) -> int:
        """Tokens of KV retained for ``key`` (0: none)."""
        index = self._by_key.get(key)
        return len(self._slots[index].tokens) if index is not None else 0

    def stats(self) -> KvStats:
        kept = [s for s in self._slots if s.key is not None]
        return KvStats(
            retained_tokens=sum(len(s.tokens) for s in kept), retained_conversations=len(kept),
            hits=self.hits, misses=self.misses, evictions=self.evictions, reused_tokens=self.reused_tokens,
        )
