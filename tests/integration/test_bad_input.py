"""Every bad-input class over a real socket: a documented error frame, and the
connection still serves a valid message afterwards."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rtserver.client import Client
from rtserver.config import load_settings
from rtserver.server.app import Gateway


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    settings = load_settings(env={}, overrides=dict(
        port=0, embedded_engine="synthetic", embedded_mode="inproc", model_id="synthetic",
        synthetic_tokens=4, synthetic_rate=0, max_text_chars=200, max_attachment_bytes=1024,
        max_attachments=2, max_frame_bytes=8192, messages_per_second=1000, message_burst=1000,
    ))
    gateway = Gateway(settings)
    async with gateway.lifespan():
        yield gateway


def j(obj: Any) -> str:
    return orjson.dumps(obj).decode()


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
JSON_CASES: list[tuple[str | bytes, str]] = [
    ("{oops", "malformed_frame"),
    ("[]", "malformed_frame"),
    (b'{"type": "ping"}', "wrong_frame_kind"),
    (j({"type": "subscribe"}), "unknown_type"),
    (j({"type": "message", "id": "m1"}), "missing_field"),
    (j({"type": "message", "id": "m1", "text": 42}), "invalid_field"),
    (j({"type": "message", "id": "m1", "text": "x" * 201}), "text_too_long"),
    (j({"type": "message", "id": "m1", "text": "see", "attachments": [
        {"kind": "image", "mime": "image/png", "data": base64.b64encode(b"x" * 1025).decode()}]}),
     "attachment_too_large"),
    (j({"type": "message", "id": "m1", "text": "see", "attachments": [
        {"kind": "image", "mime": "image/png", "data": PNG}] * 3}), "too_many_attachments"),
    (j({"type": "message", "id": "m1", "text": "see", "attachments": [
        {"kind": "image", "mime": "image/png", "data": "%%%"}]}), "invalid_base64"),
    (j({"type": "message", "id": "m1", "text": "x" * 9000}), "frame_too_large"),
    (j({"type": "message", "id": "m1", "text": "hi", "context": {"use_case": "poetry"}}), "invalid_route_override"),
    (j({"type": "cancel"}), "nothing_to_cancel"),
]


@pytest.mark.parametrize(("data", "code"), JSON_CASES, ids=[c for _, c in JSON_CASES])
async def test_json_bad_input_then_a_valid_message(gw: Gateway, data: str | bytes, code: str) -> None:
    async with await Client.connect(f"ws://127.0.0.1:{gw.port}/ws") as c:
        await c.send_raw(data)
        frame = await c.recv(5)
        while frame["type"] != "error":  # an accepted frame's route/done may come first
            frame = await c.recv(5)
        assert frame["code"] == code and frame["fatal"] is False
        assert isinstance(frame["status"], int) and frame["message"]
        turn = await c.ask("hello there")
        assert turn.done is not None and turn.done["finish_reason"] in ("stop", "length")
        assert turn.text


MSGPACK_CASES: list[tuple[str | bytes, str]] = [
    (b"\xc1", "malformed_frame"),
    (b"\x91" * 3000 + b"\xc0", "malformed_frame"),
    (b"\xa3\xff\xfe\xfd", "malformed_frame"),
    ('{"type": "ping"}', "wrong_frame_kind"),
    (msgpack.packb({"type": "message", "id": "m1", "text": "a", "attachments": [
        {"kind": "image", "mime": "image/png", "data": b"x" * 1025}]}), "attachment_too_large"),
    (msgpack.packb({"type": "message", "id": "m1", "text": b"bytes"}), "invalid_field"),
]


@pytest.mark.parametrize(("data", "code"), MSGPACK_CASES, ids=[c for _, c in MSGPACK_CASES])
async def test_msgpack_bad_input_then_a_valid_message(gw: Gateway, data: str | bytes, code: str) -> None:
    async with await Client.connect(f"ws://127.0.0.1:{gw.port}/ws", encoding="msgpack") as c:
        await c.send_raw(data)
        frame = await c.recv(5)
        assert frame["type"] == "error" and frame["code"] == code
        turn = await c.ask("hello there")
        assert turn.done is not None and turn.text


async def test_first_frame_rejected_means_no_session_yet(gw: Gateway) -> None:
    async with await Client.connect(f"ws://127.0.0.1:{gw.port}/ws", hello=False) as c:
        await c.send_raw("nope")
        assert (await c.recv(5))["code"] == "malformed_frame"
        await c.send({"type": "ping", "t": 7})
        assert (await c.recv(5))["type"] == "session"
        assert await c.recv(5) == {"type": "pong", "t": 7}


async def test_absurd_frame_closes_with_1009(gw: Gateway) -> None:
    async with connect(f"ws://127.0.0.1:{gw.port}/ws", max_size=None) as ws:
        await ws.send("x" * (8192 * 2 + 2048))
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_too_many_errors_close_the_socket(gw: Gateway) -> None:
    async with await Client.connect(f"ws://127.0.0.1:{gw.port}/ws") as c:
        with pytest.raises(ConnectionClosed) as info:
            for _ in range(gw.settings.max_errors + 5):
                await c.send_raw("garbage")
            while True:
                await c.recv(5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4009
