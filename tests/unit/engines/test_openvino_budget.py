"""The openvino engine's tokens per step (docs/architecture.md, "Prefill chunk"): the
configured chunk, but never so few that a full batch of decoding sequences would not all
get their token in a step with room left for a prompt."""

from __future__ import annotations

from rtserver.config import PREFILL_CHUNK
from rtserver.engines.openvino import MIN_PROMPT_TOKENS, step_budget


def test_the_default_chunk_is_the_budget_at_the_default_capacity() -> None:
    assert step_budget(16, PREFILL_CHUNK) == PREFILL_CHUNK


def test_a_chunk_below_the_capacity_is_raised_to_fit_every_decode_and_some_prompt() -> None:
    assert step_budget(64, 32) == 64 + MIN_PROMPT_TOKENS
    assert step_budget(4, 1) == 4 + MIN_PROMPT_TOKENS


def test_a_large_chunk_is_kept() -> None:
    assert step_budget(16, 256) == 256
