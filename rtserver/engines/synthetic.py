"""The synthetic engine: a load-testing tool, not a model.

It emits words from a fixed list at a configured rate and length, so the gateway,
its IPC and its encoders can be measured without model cost. Its output means
nothing; never configure it for users.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from rtserver.engines.base import (
    EngineEvent,
    EngineFinish,
    EngineInfo,
    EngineLoad,
    FinishEvent,
    GenerateRequest,
    TokenEvent,
)

_WORDS = ("lorem ", "ipsum ", "dolor ", "sit ", "amet ", "consectetur ", "adipiscing ", "elit ")


#: The one source of the synthetic engine's defaults (gateway settings, worker flags, registry).
DEFAULT_TOKENS_PER_S = 200.0
DEFAULT_TOKENS = 32


class SyntheticEngine:
    def __init__(
        self,
        *,
        model_id: str = "synthetic",
        tokens_per_s: float = DEFAULT_TOKENS_PER_S,
        tokens: int = DEFAULT_TOKENS,
        first_token_ms: float = 0.0,
        capacity: int = 1024,
    ) -> None:
        """``tokens_per_s`` <= 0 emits as fast as the consumer reads."""
        self.info = EngineInfo(engine="synthetic", model_id=model_id, capacity=capacity, continues=True)
        self._interval = 1.0 / tokens_per_s if tokens_per_s > 0 else 0.0
        self._tokens = tokens
        self._first = first_token_ms / 1000.0
        self._active = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def load(self) -> EngineLoad:
        return EngineLoad(active=self._active, waiting=0, capacity=self.info.capacity)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]:
        # A prefix of k words continues the same deterministic word stream at word k.
        skip = len(request.prefix.split())
        n = max(0, min(self._tokens - skip, request.params.max_tokens))
        prompt = sum(len(m.content) for m in request.messages) // 4 + 1
        self._active += 1
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            if self._first:
                await asyncio.sleep(self._first)
            for i in range(n):
                if self._interval:
                    # Pace against the schedule, not the previous wake-up, so the rate holds.
                    delay = start + self._first + i * self._interval - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                elif i % 64 == 63:
                    await asyncio.sleep(0)
                yield TokenEvent(_WORDS[(skip + i) % len(_WORDS)], 1, 0.0 if i == 0 else None)
            reason: EngineFinish = "length" if n == request.params.max_tokens else "stop"
            yield FinishEvent(reason=reason, prompt_tokens=prompt, completion_tokens=n)
        finally:
            self._active -= 1
