"""``rtserver worker --engine gpu`` as a real process (tiny random Llama on CPU), spoken to over the
worker wire on a real socket: a conversation's second turn reuses its retained KV (``done.cached``),
another conversation does not, and the worker's /metrics counts the hit and the retained tokens."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from rtserver.workers.wire import FrameReader, pack
from tests.integration.test_worker_metrics import free_port
from tests.integration.test_workers import start_worker

pytestmark = pytest.mark.asyncio


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def _turn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, decoder: FrameReader, wire_id: int,
                messages: list[list[str]], conv: str | None) -> tuple[str, dict[str, Any]]:
    frame: dict[str, Any] = {"t": "gen", "id": wire_id, "rid": f"r{wire_id}", "messages": messages,
                             "params": {"max_tokens": 6, "temperature": 0.0, "top_p": 1.0,
                                        "repetition_penalty": 1.0, "seed": 1}}
    if conv:
        frame["conv"] = conv
    writer.write(pack(frame))
    text = []
    while True:
        data = await asyncio.wait_for(reader.read(65536), 60)
        assert data, "the worker closed the connection"
        for f in decoder.feed(data):
            if f.get("id") != wire_id:
                continue
            if f["t"] == "tok":
                text.append(f["text"])
            elif f["t"] == "done":
                return "".join(text), f


async def test_a_second_turn_reuses_the_conversations_kv_on_a_gpu_worker(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the gpu engine needs torch (the 'gpu' extra)")
    pytest.importorskip("transformers", reason="the gpu engine needs transformers (the 'gpu' extra)")
    from tests.fixtures.tiny_model import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny", initializer_range=0.2, tie_word_embeddings=False)
    port = free_port()
    w = start_worker("gpu-0", tmp_path, "--engine", "gpu", "--model", str(folder), "--model-id", "tiny",
                     "--capacity", "2", "--device", "cpu", "--metrics-port", str(port))
    try:
        host, _, p = w.address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(p))
        decoder = FrameReader()
        ready = next(iter(decoder.feed(await reader.read(65536))))
        assert ready["t"] == "ready" and ready["engine"] == "gpu" and ready["continues"] is True
        history = [["user", "Tell me a story about a dragon."]]
        answer, first = await _turn(reader, writer, decoder, 1, history, "sess-a")
        assert first["reason"] == "length" and "cached" not in first
        history += [["assistant", answer], ["user", "And then?"]]
        _, second = await _turn(reader, writer, decoder, 2, history, "sess-a")
        assert second["reason"] == "length"
        assert second["cached"] == first["prompt"] + first["completion"] - 1 < second["prompt"]
        _, other = await _turn(reader, writer, decoder, 3, history, "sess-b")
        assert "cached" not in other and other["prompt"] == second["prompt"]
        writer.close()
        body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        values = {line.split()[0]: float(line.split()[1]) for line in body.splitlines()
                  if line.startswith("rtserver_worker_kv_")}
        assert values["rtserver_worker_kv_hits_total"] == 1
        assert values["rtserver_worker_kv_misses_total"] == 2  # sess-a's first turn, sess-b
        assert values["rtserver_worker_kv_retained_conversations"] == 2
        assert values["rtserver_worker_kv_retained_tokens"] >= second["prompt"] + other["prompt"]
        assert values["rtserver_worker_kv_reused_tokens_total"] == second["cached"]
    finally:
        w.stop()


async def test_through_a_gateway_the_second_turn_reports_the_prefix_it_reused(tmp_path: Path) -> None:
    """What a client sees: ``done.usage.cached_tokens`` (docs/protocol.md) is 0 on a conversation's first
    turn and counts the reused prompt tokens on its second, pinned turn."""
    pytest.importorskip("torch", reason="the gpu engine needs torch (the 'gpu' extra)")
    pytest.importorskip("transformers", reason="the gpu engine needs transformers (the 'gpu' extra)")
    from rtserver.client import Client
    from tests.fixtures.tiny_model import build_tiny_model
    from tests.procs import gateway

    folder = build_tiny_model(tmp_path / "tiny", initializer_range=0.2, tie_word_embeddings=False)
    w = start_worker("gpu-0", tmp_path, "--engine", "gpu", "--model", str(folder), "--model-id", "tiny",
                     "--capacity", "2", "--device", "cpu")
    try:
        with gateway("--worker", w.address, "--model-id", "tiny", "--max-tokens", "6", "--temperature", "0") as gw:
            async with await Client.connect(gw.url) as c:
                first = await c.ask("Tell me a story about a dragon.")
                second = await c.ask("And then?")
        assert first.done is not None and second.done is not None
        assert first.done["usage"]["cached_tokens"] == 0
        cached = second.done["usage"]["cached_tokens"]
        assert 0 < cached < second.done["usage"]["prompt_tokens"]
    finally:
        w.stop()
