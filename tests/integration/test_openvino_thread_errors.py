"""An unexpected error on the openvino engine's thread (here: its tokenizer failing while
the step's text is decoded) ends the requests in flight with ``error`` instead of leaving
their clients waiting forever, and the engine serves the next request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rtserver.engines.base import ChatMessage, FinishEvent, GenerateRequest, SamplingParams
from tests.fixtures.answers import answer

pytestmark = pytest.mark.model


class _BrokenDecode:
    def __init__(self, tok: Any) -> None:
        self._tok = tok
        self.broken = True

    def decode(self, ids: Any) -> Any:
        if self.broken:
            raise RuntimeError("tokenizer failed")
        return self._tok.decode(ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)


async def _finish(engine: Any, rid: str) -> FinishEvent:
    request = GenerateRequest(rid, (ChatMessage("user", "Say hello."),), SamplingParams(max_tokens=8, temperature=0))
    return (await answer(engine, request))[1]


def test_an_error_on_the_engine_thread_ends_the_request_and_the_engine_goes_on() -> None:
    pytest.importorskip("openvino_genai")
    from rtserver.engines.openvino import OpenVinoEngine

    async def main() -> None:
        engine = OpenVinoEngine("smollm2-135m", capacity=2)
        await engine.start()
        try:
            broken = _BrokenDecode(engine._tok)
            engine._tok = broken
            first = await asyncio.wait_for(_finish(engine, "a"), 60)
            assert first.reason == "error"
            broken.broken = False
            second = await asyncio.wait_for(_finish(engine, "b"), 60)
            assert second.reason in ("stop", "length") and second.completion_tokens > 0
        finally:
            await engine.close()

    asyncio.run(main())
