"""Batched socket writes: a fast stream goes out several frames per write, complete and in order."""

from __future__ import annotations

import asyncio
import re

import pytest

from rtserver.client import Client
from rtserver.config import load_settings
from rtserver.server.app import Gateway


def _write_histogram(text: str) -> tuple[float, float]:
    count = float(re.search(r"^rtserver_socket_write_frames_count (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    total = float(re.search(r"^rtserver_socket_write_frames_sum (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    return count, total


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_a_fast_stream_is_written_in_batches_without_loss_or_reordering(encoding: str) -> None:
    gw = Gateway(load_settings(env={}, overrides=dict(
        port=0, embedded_engine="synthetic", embedded_mode="inproc", model_id="synthetic",
        synthetic_tokens=400, synthetic_rate=0, max_tokens=400, write_delay_ms=20, write_batch_frames=16,
    )))
    async with gw.lifespan():
        async with await Client.connect(f"ws://127.0.0.1:{gw.port}/ws", encoding=encoding) as client:
            for turn in range(2):
                mid = await client.send_message(f"stream {turn}")
                frames = []
                async with asyncio.timeout(60):
                    async for f in client.stream(mid):
                        frames.append(f)
                tokens = [f for f in frames if f["type"] == "token"]
                expected = 0
                for t in tokens:
                    assert t["seq"] == expected
                    expected = t.get("seq_last", t["seq"]) + 1
                done = frames[-1]
                assert done["type"] == "done" and done["finish_reason"] == "length"
                assert expected == done["usage"]["completion_tokens"] == 400
        writes, frames_written = _write_histogram(gw.metrics.render().decode())
        assert frames_written > writes  # some writes carried several frames
        assert frames_written / writes <= 16


async def test_without_a_delay_paced_tokens_are_not_held_back() -> None:
    gw = Gateway(load_settings(env={}, overrides=dict(
        port=0, embedded_engine="synthetic", embedded_mode="inproc", model_id="synthetic",
        synthetic_tokens=3, synthetic_rate=5, max_tokens=3,
    )))
    async with gw.lifespan():
        async with await Client.connect(f"ws://127.0.0.1:{gw.port}/ws") as client:
            mid = await client.send_message("hi")
            async with asyncio.timeout(30):
                frames = [f async for f in client.stream(mid)]
        assert [f["type"] for f in frames][-1] == "done"
        writes, _ = _write_histogram(gw.metrics.render().decode())
        assert writes >= 3  # the three paced tokens were not held back to share a write
