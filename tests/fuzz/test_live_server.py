"""Hostile frames at a live gateway over real sockets: every one is answered with the
error the codec predicts, in order; the server never crashes or hangs and still
serves a conversation afterwards."""

from __future__ import annotations

import asyncio

import pytest

from rtserver.client import Client
from rtserver.config import load_settings
from rtserver.exceptions import ProtocolError
from rtserver.protocol.codec import decode_client_frame
from rtserver.server.app import Gateway
from tests.fuzz.frames import hostile_frames

N_FRAMES = 20_000


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_live_gateway_answers_every_hostile_frame(encoding: str) -> None:
    settings = load_settings(env={}, overrides=dict(
        port=0, embedded_engine="synthetic", embedded_mode="inproc", model_id="synthetic", synthetic_tokens=3,
        synthetic_rate=0, messages_per_second=0, max_errors=10**9, max_frame_bytes=16 * 1024, max_text_chars=4000,
        # the client reads nothing until all frames are sent, so the server's keepalive ping would
        # wait behind the answers and time out on a slow machine; keepalive has its own tests
        ping_interval_s=0,
    ))
    gw = Gateway(settings)
    async with gw.lifespan():
        async with await Client.connect(f"ws://127.0.0.1:{gw.port}/ws", encoding=encoding) as c:
            sent = 0
            expected: list[str] = []
            for payload, enc in hostile_frames(N_FRAMES * 3, seed=99):
                if enc != encoding or len(payload) > gw.limits.max_frame_bytes * 2:
                    continue  # far over the limit the WebSocket layer closes (test_bad_input covers it)
                try:
                    decode_client_frame(payload, encoding, gw.limits)  # type: ignore[arg-type]
                    continue  # a valid frame: not what this test sends
                except ProtocolError as exc:
                    expected.append(exc.code.wire)
                await c.send_raw(payload)
                sent += 1
                if sent % 200 == 0:
                    await c.send({"type": "ping", "t": sent})
                    expected.append(f"pong:{sent}")
                if sent >= N_FRAMES:
                    break
            got: list[str] = []
            async with asyncio.timeout(120):
                while len(got) < len(expected):
                    f = await c.recv()
                    got.append(f"pong:{f['t']}" if f["type"] == "pong" else f["code"])
            assert got == expected
            turn = await c.ask("still there?")
            assert turn.done is not None and turn.done["finish_reason"] in ("stop", "length")
