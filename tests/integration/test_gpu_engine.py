"""The gpu engine on CPU (eager forward, float32) with tiny random Llama and Qwen2 models built here.

Greedy output must be token-for-token what transformers' ``model.generate`` gives, for
prompts of mixed lengths decoded in one batch, and for a second turn served from the
KV retained for its conversation. The tokenizer is word-level (``t<id>`` per token),
so the text is the token ids.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

pytest.importorskip("torch", reason="the gpu engine needs torch (the 'gpu' extra)")
pytest.importorskip("transformers", reason="the gpu engine needs transformers (the 'gpu' extra)")

import torch

from rtserver.engines.base import ChatMessage, EngineEvent, FinishEvent, GenerateRequest, SamplingParams, TokenEvent
from rtserver.engines.gpu.engine import GpuEngine
from tests.fixtures.answers import answer
from tests.fixtures.tiny_model import SPECIALS, build_tokenizer, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="module")
VOCAB = 512


def _model(kind: str) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(kind, VOCAB, initializer_range=0.2), dtype=torch.float32)
    with torch.no_grad():  # specials get logit 0, so answers rarely end early
        model.get_output_embeddings().weight[: len(SPECIALS)].zero_()
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 3
    return model.eval()


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def reference(request: pytest.FixtureRequest) -> Any:
    return _model(request.param)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(reference: Any) -> AsyncIterator[GpuEngine]:
    eng = GpuEngine.from_objects(_model(reference.config.model_type), build_tokenizer(VOCAB), model_id="tiny",
                                 capacity=4, slots=6, max_len=256, prefill_chunk=8)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.close()


def _request(words: int, *, start: int, rid: str, key: str | None = None, max_tokens: int = 12,
             penalty: float = 1.0) -> GenerateRequest:
    text = " ".join(f"t{len(SPECIALS) + (start + 13 * j) % (VOCAB - len(SPECIALS))}" for j in range(words))
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, repetition_penalty=penalty)
    return GenerateRequest(rid, (ChatMessage("user", text),), params, conversation=key)


async def _run(engine: GpuEngine, request: GenerateRequest) -> tuple[str, FinishEvent]:
    text, finish = await answer(engine, request)
    assert finish.error is None, finish
    return text, finish


def _expected(reference: Any, engine: GpuEngine, request: GenerateRequest) -> tuple[str, int]:
    ids = engine._encode(request)
    with torch.no_grad():
        out = reference.generate(torch.tensor([ids]), max_new_tokens=request.params.max_tokens, do_sample=False,
                                 repetition_penalty=request.params.repetition_penalty)[0, len(ids):].tolist()
    if 2 in out:
        out = out[: out.index(2) + 1]
    return " ".join(f"t{i}" for i in out if i >= len(SPECIALS)), len(out)


async def test_greedy_matches_transformers_for_mixed_lengths_in_one_batch(engine: GpuEngine, reference: Any) -> None:
    requests = [_request(n, start=7 * i, rid=f"mix{i}") for i, n in enumerate((2, 19, 40, 71))]
    requests.append(_request(30, start=3, rid="pen", penalty=1.3))  # waits for a slot, then joins the batch
    results = await asyncio.gather(*(_run(engine, r) for r in requests))
    distinct = set()
    for request, (text, finish) in zip(requests, results, strict=True):
        want, count = _expected(reference, engine, request)
        assert text.split() == want.split(), request.request_id
        assert finish.completion_tokens == count
        distinct |= set(want.split())
    assert len(distinct) > 10, "the reference model should not just repeat one token"


async def test_bucketed_kv_lengths_mask_what_earlier_sequences_left_in_a_slot(reference: Any) -> None:
    """The GPU path attends over a KV length rounded up to a bucket (its CUDA graphs are per bucket):
    positions past a row's own are stale KV of earlier occupants and must not leak in."""
    eng = GpuEngine.from_objects(_model(reference.config.model_type), build_tokenizer(VOCAB), model_id="tiny",
                                 capacity=2, slots=2, max_len=512, prefill_chunk=8)
    await eng.start()
    try:
        assert eng.runner is not None
        eng.runner.bucket_lengths = True
        requests = [_request(n, start=5 * i, rid=f"b{i}", max_tokens=10) for i, n in enumerate((120, 7, 60, 3))]
        for pair in (requests[:2], requests[2:]):  # the second pair reuses slots full of the first's KV
            results = await asyncio.gather(*(_run(eng, r) for r in pair))
            for request, (text, _) in zip(pair, results, strict=True):
                assert text.split() == _expected(reference, eng, request)[0].split(), request.request_id
    finally:
        await eng.close()


async def test_turn_two_reuses_the_retained_kv_and_still_matches(engine: GpuEngine, reference: Any) -> None:
    first = _request(50, start=11, rid="turn1", key="conv-1", max_tokens=10)
    answer, finish1 = await _run(engine, first)
    assert finish1.cached_tokens == 0 and finish1.reason == "length"
    assert engine.kv_stats().retained_tokens >= finish1.prompt_tokens + 9
    second = dataclasses.replace(first, request_id="turn2", messages=(
        *first.messages, ChatMessage("assistant", answer), ChatMessage("user", "t100 t101 t102")))
    hits = engine.kv_stats().hits
    text, finish2 = await _run(engine, second)
    # KV exists for turn 1's prompt and all but its last generated token
    assert finish2.cached_tokens == finish1.prompt_tokens + finish1.completion_tokens - 1
    assert engine.kv_stats().hits == hits + 1
    want, _ = _expected(reference, engine, second)
    assert text.split() == want.split()
    other = dataclasses.replace(second, request_id="turn2-elsewhere", conversation="conv-2")
    text_cold, cold = await _run(engine, other)
    assert cold.cached_tokens == 0 and text_cold == text


async def test_cancel_mid_prefill_frees_the_slot(engine: GpuEngine) -> None:
    request = _request(200, start=5, rid="long", max_tokens=4)  # 25 prefill chunks of 8
    seen: list[EngineEvent] = []

    async def consume() -> None:
        async for event in engine.generate(request):
            seen.append(event)

    task = asyncio.create_task(consume())
    while engine.load().active == 0:
        await asyncio.sleep(0.001)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not seen, "the cancel came after the prefill ended"
    await _until_idle(engine)
    assert (engine.load().active, engine.load().waiting) == (0, 0)
    _, finish = await _run(engine, _request(3, start=1, rid="after-prefill-cancel", max_tokens=3))
    assert finish.completion_tokens == 3


async def test_cancel_mid_decode_frees_the_slot(engine: GpuEngine) -> None:
    stream = engine.generate(_request(5, start=2, rid="dec", max_tokens=200))
    got = 0
    async for event in stream:
        assert isinstance(event, TokenEvent)
        got += event.tokens
        if got >= 3:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    await _until_idle(engine)
    assert (engine.load().active, engine.load().waiting) == (0, 0)


async def test_capacity_bounds_running_sequences_and_the_rest_queue(engine: GpuEngine) -> None:
    requests = [_request(6, start=i, rid=f"q{i}", max_tokens=16) for i in range(10)]
    peak_active, peak_waiting = 0, 0
    tasks = [asyncio.create_task(_run(engine, r)) for r in requests]
    while not all(t.done() for t in tasks):
        load = engine.load()
        peak_active, peak_waiting = max(peak_active, load.active), max(peak_waiting, load.waiting)
        await asyncio.sleep(0.002)
    results = [t.result() for t in tasks]
    assert peak_active == engine.info.capacity == 4
    assert peak_waiting >= 1
    assert all(f.completion_tokens == 16 for _, f in results)
    assert max(f.queue_ms for _, f in results) > min(f.queue_ms for _, f in results)


async def test_a_prompt_longer_than_the_context_is_an_error_not_a_hang(engine: GpuEngine) -> None:
    events = [e async for e in engine.generate(_request(300, start=0, rid="too-long"))]
    assert len(events) == 1 and isinstance(events[0], FinishEvent)
    assert events[0].reason == "error" and "does not fit" in (events[0].error or "")


async def test_max_tokens_below_one_is_an_error(engine: GpuEngine) -> None:
    request = dataclasses.replace(_request(3, start=0, rid="zero"), params=SamplingParams(max_tokens=0))
    events = [e async for e in engine.generate(request)]
    assert len(events) == 1 and isinstance(events[0], FinishEvent) and events[0].reason == "error"
    assert engine.load().active == 0


async def test_seeded_sampling_repeats(engine: GpuEngine) -> None:
    base = _request(9, start=4, rid="seeded", max_tokens=12)
    seeded = dataclasses.replace(base, params=SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=42))
    a, _ = await _run(engine, seeded)
    b, _ = await _run(engine, seeded)
    c, _ = await _run(engine, dataclasses.replace(seeded, params=dataclasses.replace(seeded.params, seed=43)))
    assert a == b and a != c


async def _until_idle(engine: GpuEngine) -> None:
    for _ in range(3000):
        if engine.load().active == 0:
            return
        await asyncio.sleep(0.01)
