"""The Engine contract (rtserver/engines/base.py), one suite for every backend.

* synthetic: always.
* openvino: the real embedded SmolLM2-135M (marker ``model``).
* transformers: a tiny randomly initialised Llama on CPU (skipped without torch/transformers).
* gpu: a tiny Llama (larger random weights) on the gpu engine's eager CPU path (skipped without torch/transformers).
* openai: a REAL third-party OpenAI-compatible server, llama-cpp-python's
  ``llama_cpp.server`` serving the SmolLM2 GGUF (skipped when llama_cpp is not installed:
  ``pip install 'llama-cpp-python[server]==0.3.36'``, a ~10 minute CPU build).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from rtserver.engines.base import (
    ChatMessage,
    Engine,
    EngineEvent,
    FinishEvent,
    GenerateRequest,
    SamplingParams,
    TokenEvent,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

ENGINES = [
    "synthetic",
    pytest.param("openvino", marks=pytest.mark.model),
    "transformers",
    "gpu",
    "openai",
]
PROMPT = "Write a long story about a dragon who learns to bake bread."


@pytest.fixture(scope="module")
def llama_server_url() -> Iterator[str]:
    from tests.fixtures.llama_server import llama_server

    with llama_server() as base:
        yield base


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="the transformers engine needs torch (the 'gpu' extra)")
    pytest.importorskip("transformers", reason="the transformers engine needs transformers (the 'gpu' extra)")
    from tests.fixtures.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny_varied_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with larger random weights and untied embeddings: its greedy answer is words, not <unk>
    (the gpu engine's greedy is exact argmax, as transformers' ``generate``)."""
    pytest.importorskip("torch", reason="the gpu engine needs torch (the 'gpu' extra)")
    pytest.importorskip("transformers", reason="the gpu engine needs transformers (the 'gpu' extra)")
    from tests.fixtures.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-varied"), initializer_range=0.2, tie_word_embeddings=False)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=ENGINES)
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    name: str = request.param
    eng: Any
    if name == "synthetic":
        from rtserver.engines.synthetic import SyntheticEngine

        eng = SyntheticEngine(tokens=64, tokens_per_s=200.0, capacity=8)
    elif name == "openvino":
        pytest.importorskip("openvino_genai")
        from rtserver.engines.openvino import OpenVinoEngine

        eng = OpenVinoEngine("smollm2-135m", capacity=4, threads=1)
    elif name == "transformers":
        from rtserver.engines.transformers import TransformersEngine

        eng = TransformersEngine(
            str(request.getfixturevalue("tiny_model_dir")), model_id="tiny", capacity=4, device="cpu"
        )
    elif name == "gpu":
        from rtserver.engines.gpu.engine import GpuEngine

        eng = GpuEngine(str(request.getfixturevalue("tiny_varied_model_dir")), model_id="tiny", capacity=4, device="cpu",
                        max_len=512)
    else:
        pytest.importorskip("aiohttp", reason="the openai engine needs aiohttp (the 'openai' extra)")
        from rtserver.engines.openai import OpenAIEngine

        eng = OpenAIEngine("smollm2", base_url=request.getfixturevalue("llama_server_url"), capacity=4)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.close()


def _req(max_tokens: int = 16, temperature: float = 0.7, rid: str = "r") -> GenerateRequest:
    return GenerateRequest(
        rid, (ChatMessage("user", PROMPT),), SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=7)
    )


async def _collect(engine: Engine, request: GenerateRequest) -> list[EngineEvent]:
    return [ev async for ev in engine.generate(request)]


async def _until_idle(engine: Engine, within_s: float = 30.0) -> None:
    """Wait for load().active == 0; engines with a decode thread free the slot at their next step."""
    deadline = time.monotonic() + within_s
    while engine.load().active and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def _check_stream(events: list[EngineEvent], max_tokens: int) -> FinishEvent:
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    finishes = [e for e in events if isinstance(e, FinishEvent)]
    assert tokens, f"no TokenEvent before the finish: {events}"
    assert len(finishes) == 1 and events[-1] is finishes[0], "exactly one FinishEvent, last"
    finish = finishes[0]
    assert finish.reason in ("stop", "length"), finish
    assert finish.error is None
    assert 1 <= finish.completion_tokens <= max_tokens
    assert finish.prompt_tokens >= 1
    assert tokens[0].queue_ms is not None and tokens[0].queue_ms >= 0.0
    assert "".join(t.text for t in tokens).strip(), "the text is not empty"
    return finish


async def test_streams_tokens_then_one_finish(engine: Engine) -> None:
    events = await _collect(engine, _req(16))
    _check_stream(events, 16)


async def test_max_tokens_gives_length(engine: Engine) -> None:
    events = await _collect(engine, _req(3, temperature=0.0))
    finish = _check_stream(events, 3)
    assert finish.reason == "length"
    assert finish.completion_tokens == 3


async def test_closing_after_two_tokens_frees_the_slot(engine: Engine) -> None:
    stream = engine.generate(_req(200, rid="cancel-me"))
    seen = 0
    async for ev in stream:
        assert isinstance(ev, TokenEvent), "the generation ended before 2 tokens"
        seen += 1
        if seen == 2:
            break
    assert engine.load().active >= 1
    await stream.aclose()  # type: ignore[attr-defined]
    await _until_idle(engine)
    assert engine.load().active == 0
    assert engine.load().waiting == 0
    _check_stream(await _collect(engine, _req(4, rid="after")), 4)  # and the engine still serves


async def test_four_concurrent_requests_all_finish(engine: Engine) -> None:
    results = await asyncio.gather(*(_collect(engine, _req(8, rid=f"c{i}")) for i in range(4)))
    for events in results:
        _check_stream(events, 8)
    await _until_idle(engine)
    assert engine.load().active == 0


async def test_load_is_sane(engine: Engine) -> None:
    idle = engine.load()
    assert (idle.active, idle.waiting) == (0, 0)
    assert idle.capacity == engine.info.capacity >= 1
    stream = engine.generate(_req(64, rid="busy"))
    first = await stream.__anext__()  # type: ignore[attr-defined]
    assert isinstance(first, TokenEvent)
    busy = engine.load()
    assert busy.active == 1 and busy.waiting == 0 and busy.capacity == idle.capacity
    await stream.aclose()  # type: ignore[attr-defined]
    await _until_idle(engine)
    assert engine.load().active == 0
    assert engine.info.engine in ("synthetic", "openvino", "transformers", "gpu", "openai")
    assert "text" in engine.info.modalities


async def test_openai_engine_sends_images_as_data_url_parts_only_when_declared() -> None:
    pytest.importorskip("aiohttp", reason="the openai engine needs aiohttp (the 'openai' extra)")
    from rtserver.engines.base import MediaPart
    from rtserver.engines.openai import OpenAIEngine

    request = GenerateRequest(
        "img",
        (ChatMessage("system", "be brief"), ChatMessage("user", "what is this?")),
        SamplingParams(max_tokens=5, seed=3),
        (MediaPart("image", "image/png", b"\x89PNG"),),
    )
    vision = OpenAIEngine("m", modalities="text,image")._body(request)
    assert vision["stream"] is True and vision["stream_options"] == {"include_usage": True}
    assert vision["max_tokens"] == 5 and vision["seed"] == 3
    assert vision["messages"][0] == {"role": "system", "content": "be brief"}
    assert vision["messages"][1]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
    ]
    text_only = OpenAIEngine("m")._body(request)
    assert text_only["messages"][1] == {"role": "user", "content": "what is this?"}


async def test_an_engine_that_continues_goes_on_from_a_prefix(engine: Engine) -> None:
    if not engine.info.continues:
        pytest.skip(f"{engine.info.engine} does not continue answers (info.continues is False)")
    base = _req(8, temperature=0.0, rid="prefix")
    events = await _collect(engine, dataclasses.replace(base, prefix="Once upon a time, a dragon"))
    _check_stream(events, 8)


# ------------------------------------------------------------------ openai engine edge cases, scripted server
def _sse(*chunks: dict[str, Any] | str) -> bytes:
    """An SSE body: dicts become ``data: {json}``, strings are sent as they are."""
    import json

    parts = [c if isinstance(c, str) else f"data: {json.dumps(c)}\r\n\r\n" for c in chunks]
    return "".join(parts).encode()


async def _scripted_server(status: int, body: bytes, *, close_after: bool) -> tuple[asyncio.Server, str]:
    """A raw HTTP/1.1 server that answers every POST with ``status`` and ``body`` (chunked)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = next(
                (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0
            )
            await reader.readexactly(length)
            if head.startswith(b"GET"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            else:
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" % status
                )
                writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                if close_after:  # no "connection: close": the client's pooled connection goes stale
                    await writer.drain()
                    break
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"


def _delta(text: str | None = None, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}


async def _run_scripted(
    status: int, body: bytes, *, close_after: bool = False, requests: int = 1
) -> list[list[EngineEvent]]:
    pytest.importorskip("aiohttp", reason="the openai engine needs aiohttp (the 'openai' extra)")
    from rtserver.engines.openai import OpenAIEngine

    server, base = await _scripted_server(status, body, close_after=close_after)
    engine = OpenAIEngine("m", base_url=base, capacity=2)
    try:
        await engine.start()
        return [await _collect(engine, _req(8, rid=f"s{i}")) for i in range(requests)]
    finally:
        await engine.close()
        server.close()


async def test_openai_engine_reads_usage_and_survives_a_server_that_drops_idle_connections() -> None:
    body = _sse(
        ": keep-alive comment\r\n\r\n",
        _delta("Hel"),
        _delta("lo"),
        _delta(finish="stop"),
        {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2}},
        "data: [DONE]\r\n\r\n",
    )
    for events in await _run_scripted(200, body, close_after=True, requests=3):
        assert [e.text for e in events if isinstance(e, TokenEvent)] == ["Hel", "lo"]
        assert events[-1] == FinishEvent("stop", 11, 2, events[-1].queue_ms)  # type: ignore[union-attr]


async def test_openai_engine_reports_a_busy_server_as_overloaded_and_a_cut_stream_as_error() -> None:
    (busy,) = await _run_scripted(429, b'{"error": "slow down"}')
    assert isinstance(busy[-1], FinishEvent) and busy[-1].reason == "error" and busy[-1].error == "overloaded"
    (cut,) = await _run_scripted(200, _sse(_delta("Hi"), "data: [DONE]\r\n\r\n"))
    finish = cut[-1]
    assert isinstance(finish, FinishEvent) and finish.reason == "error" and "finish reason" in (finish.error or "")
