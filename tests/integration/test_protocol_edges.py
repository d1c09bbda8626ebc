"""Defects of issue 18 at the protocol edge, each on a real ``rtserver serve`` process
with its embedded synthetic worker: a cancel before ``route`` (item 4), the idle timer
during a long answer (5), a refused cross-user resume (6), the coalesced-tokens metric
(7), rate limiting against the invalid-frame budget (10), invalid UTF-8 (12).

Expected codes come from docs/protocol.md."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rtserver.auth import issue
from rtserver.client import Client
from tests.integration.logged_gateway import LoggedGateway, logged_gateway

__all__ = ["logged_gateway"]

Start = Callable[..., LoggedGateway]
SYNTH = ("--embedded-engine", "synthetic", "--model-id", "synthetic")
PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def documented_close_codes() -> set[int]:
    text = PROTOCOL_MD.read_text()
    table = text.split("## Close codes", 1)[1].split("\n## ", 1)[0]
    return {int(m) for m in re.findall(r"^\| (\d{4}) \|", table, flags=re.M)}


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_cancel_before_route_gets_exactly_one_done(logged_gateway: Start) -> None:
    gw = logged_gateway(*SYNTH, "--synthetic-rate", "50", "--synthetic-tokens", "40")
    async with await Client.connect(gw.ws) as c:
        for _ in range(3):
            # message and cancel back to back: the cancel arrives while the message is routed
            await c.send({"type": "message", "id": "m", "text": "please write me a poem about the sea"})
            await c.send({"type": "cancel"})
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1]["type"] != "done":
                frames.append(await c.recv(15))
            assert frames[-1]["finish_reason"] == "cancelled"
            assert [f["type"] for f in frames if f["type"] == "error"] == []
            await c.send({"type": "ping", "t": 1})
            later: list[dict[str, Any]] = []
            while not later or later[-1]["type"] != "pong":
                later.append(await c.recv(10))
            assert [f for f in later if f["type"] == "done"] == []  # exactly one done
        turn = await c.ask("and now answer")  # the socket is not stuck in 'busy'
        assert turn.done is not None and turn.done["finish_reason"] == "stop" and turn.errors == []


async def test_a_streaming_answer_longer_than_the_idle_timeout_is_not_cut(logged_gateway: Start) -> None:
    gw = logged_gateway(*SYNTH, "--synthetic-rate", "10", "--synthetic-tokens", "30", "--idle-timeout-s", "1")
    async with await Client.connect(gw.ws) as c:
        turn = await c.ask("a long answer please", timeout=30)
        assert turn.done is not None and turn.done["finish_reason"] == "stop"
        assert [t["seq"] for t in turn.tokens] == list(range(30))
        with pytest.raises(ConnectionClosed) as info:  # idle afterwards: closed as documented
            await c.recv(30)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4003


async def test_a_refused_cross_user_resume_leaves_no_session_behind(logged_gateway: Start) -> None:
    secret = "edge-secret"
    gw = logged_gateway(*SYNTH, "--auth-secret", secret, "--resume-grace-s", "0.2")

    def conversations_gone() -> bool:
        return bool(gw.get("/readyz")[1]["conversations"] == 0)

    async with await Client.connect(f"{gw.ws}?token={issue(secret, 'alice')}") as alice:
        assert alice.session is not None
        session = alice.session
    await until(conversations_gone, 15, "alice's conversation to be forgotten")
    hello = {"session_id": session["session_id"], "resume_token": session["resume_token"]}
    async with await Client.connect(f"{gw.ws}?token={issue(secret, 'bob')}", hello=hello) as bob:
        assert bob.session is not None and bob.session["resumed"] is False
        assert [f["code"] for f in bob.pending if f["type"] == "error"] == ["unauthorized"]
    await until(conversations_gone, 15, "no conversation left after bob's refused resume")


async def test_merged_tokens_are_counted(logged_gateway: Start) -> None:
    gw = logged_gateway(*SYNTH, "--synthetic-rate", "0", "--synthetic-tokens", "200000", "--max-tokens", "200000",
                        "--outbox-frames", "64", "--slow-consumer-timeout-s", "300")
    ws = await connect(gw.ws, max_queue=1, open_timeout=10)
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await ws.send(orjson.dumps({"type": "message", "id": "m", "text": "go"}).decode())
    # not reading: the outbox backs up and merges tokens
    await until(lambda: gw.metric("rtserver_coalesced_tokens_total") > 0, 60, "tokens to be merged and counted")
    await ws.send(orjson.dumps({"type": "cancel"}).decode())
    merged = 0
    async with asyncio.timeout(120):
        while True:
            frame = orjson.loads(await ws.recv())
            if frame["type"] == "token":
                merged += frame.get("seq_last", frame["seq"]) - frame["seq"]
            if frame["type"] == "done":
                break
    await ws.close()
    assert merged > 0
    assert gw.metric("rtserver_coalesced_tokens_total") == merged  # a count of events, one socket


async def test_rate_limited_frames_do_not_close_a_valid_client(logged_gateway: Start) -> None:
    gw = logged_gateway(*SYNTH, "--messages-per-second", "2", "--message-burst", "2", "--max-errors", "3")
    async with await Client.connect(gw.ws) as c:
        for i in range(10):
            await c.send({"type": "ping", "t": i})
        answers: list[dict[str, Any]] = [await c.recv(10) for _ in range(10)]
        assert {f["type"] for f in answers} == {"pong", "error"}
        assert {f["code"] for f in answers if f["type"] == "error"} == {"rate_limited"}
        pong = None
        async with asyncio.timeout(20):
            while pong is None:  # once the bucket refills, the same socket is served
                await asyncio.sleep(0.6)
                await c.send({"type": "ping", "t": "again"})
                f = await c.recv(10)
                pong = f if f["type"] == "pong" else None
        assert pong["t"] == "again"


async def test_invalid_utf8_closes_with_a_documented_code(logged_gateway: Start) -> None:
    gw = logged_gateway(*SYNTH)
    async with connect(gw.ws, open_timeout=10) as ws:
        await ws.send(b'{"type": "ping", "t": "\xff\xfe"}', text=True)
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1007
    assert info.value.rcvd.code in documented_close_codes()
