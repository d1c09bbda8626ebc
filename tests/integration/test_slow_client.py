"""A client that stops reading is closed with 4008 within a bounded time and counted;
a conversation beside it streams on, complete and in order."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rtserver.client import Client
from rtserver.config import load_settings
from rtserver.server.app import Gateway


async def test_a_client_that_stops_reading_is_closed_and_others_are_unaffected() -> None:
    gw = Gateway(load_settings(env={}, overrides=dict(
        port=0, embedded_engine="synthetic", embedded_mode="inproc", model_id="synthetic",
        synthetic_tokens=200_000, synthetic_rate=0, max_tokens=200_000, outbox_frames=64,
        slow_consumer_timeout_s=1.0,
    )))
    async with gw.lifespan():
        url = f"ws://127.0.0.1:{gw.port}/ws"
        # The slow client: tiny receive buffer, reads nothing after sending its message.
        slow = await connect(url, max_queue=1, open_timeout=5)
        sock = slow.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await slow.send(orjson.dumps({"type": "message", "id": "s", "text": "go"}).decode())
        await asyncio.sleep(0.2)
        # A normal conversation beside it, on a fresh gateway socket.
        async with await Client.connect(url) as ok:
            mid = await ok.send_message("hello")
            frames = []
            cancelled = False
            async with asyncio.timeout(60):
                async for f in ok.stream(mid):
                    frames.append(f)
                    if f["type"] == "token" and f["seq"] >= 200 and not cancelled:
                        await ok.cancel(f["response_id"])
                        cancelled = True
            tokens = [f for f in frames if f["type"] == "token"]
            expected = 0
            for t in tokens:
                assert t["seq"] == expected
                expected = t.get("seq_last", t["seq"]) + 1
            assert frames[-1]["type"] == "done"
        # The slow one was cut off with 4008 (or its TCP dropped after the close attempt).
        async with asyncio.timeout(30):
            while gw.metrics.outbox_drops._value.get() < 1:
                await asyncio.sleep(0.1)
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(30):
                while True:
                    await slow.recv()
        rcvd = info.value.rcvd
        assert rcvd is None or rcvd.code == 4008
        assert 'reason="slow_consumer"' in gw.metrics.render().decode()


async def test_a_client_that_lags_then_catches_up_gets_every_token_in_order() -> None:
    # Its socket backs up (nothing read for a while: both kernel buffers fill), so its stream
    # is paused at the worker (a worker process: flow control is on its wire); reading again
    # must resume it, with no token lost or repeated.
    gw = Gateway(load_settings(env={}, overrides=dict(
        port=0, embedded_engine="synthetic", embedded_mode="process", model_id="synthetic",
        synthetic_tokens=20_000, synthetic_rate=0, max_tokens=20_000, slow_consumer_timeout_s=30.0,
    )))
    async with gw.lifespan():
        ws = await connect(f"ws://127.0.0.1:{gw.port}/ws", max_queue=1, open_timeout=5, ping_interval=None)
        await ws.send(orjson.dumps({"type": "message", "id": "m", "text": "go"}).decode())
        await asyncio.sleep(1.5)  # not reading
        text, expected, done = [], 0, None
        async with asyncio.timeout(120):
            while done is None:
                f = orjson.loads(await ws.recv())
                if f["type"] == "token":
                    assert f["seq"] == expected
                    expected = f.get("seq_last", f["seq"]) + 1
                    text.append(f["text"])
                elif f["type"] == "done":
                    done = f
                elif f["type"] == "error":
                    raise AssertionError(f)
        await ws.close()
        assert done["finish_reason"] == "length"
        assert expected == done["usage"]["completion_tokens"] == 20_000
