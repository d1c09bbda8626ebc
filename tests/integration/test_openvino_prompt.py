"""The openvino engine tokenises each prompt once and hands the pipeline those ids: the
answer must be the one openvino gives for the prompt as text (its own tokenisation), and
the prompt's token count in ``done`` must count what the model read."""

from __future__ import annotations

import asyncio

import pytest

from rtserver.engines.base import ChatMessage, GenerateRequest, SamplingParams
from tests.fixtures.answers import answer

pytestmark = pytest.mark.model

CASES = [
    ((ChatMessage("user", "Name three colours."),), ""),
    ((ChatMessage("system", "You answer in French."), ChatMessage("user", "Où est la gare ? Réponds en une phrase.")), ""),
    ((ChatMessage("user", "Write a Python function that adds two numbers."),), "def add(a, b):\n    "),
]


def test_the_engine_answers_as_the_pipeline_does_for_the_prompt_text() -> None:
    pytest.importorskip("openvino_genai")
    from rtserver.engines.openvino import OpenVinoEngine, generation_config

    async def main() -> None:
        engine = OpenVinoEngine("smollm2-135m", capacity=2)
        await engine.start()
        try:
            for i, (messages, prefix) in enumerate(CASES):
                request = GenerateRequest(f"r{i}", messages, SamplingParams(max_tokens=24, temperature=0), prefix=prefix)
                text, done = await asyncio.wait_for(answer(engine, request), 60)
                tok = engine._tok
                prompt = tok.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                                 add_generation_prompt=True) + prefix
                # openvino's own path: the templated prompt as text, tokenised inside the pipeline
                [expected] = engine._pipe.generate([prompt], [generation_config(SamplingParams(max_tokens=24,
                                                                                               temperature=0))])
                assert text == expected.m_generation_ids[0], (text, expected.m_generation_ids[0])
                assert done.prompt_tokens == int(tok.encode(prompt).input_ids.get_shape()[-1])
                assert done.completion_tokens == 24 or done.reason == "stop"
        finally:
            await engine.close()

    asyncio.run(main())
