"""Refusal paths over real sockets: tokens, origins, per-address limits, session binding,
and that one client cannot touch another's conversation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rtserver.auth import issue
from rtserver.client import Client
from rtserver.config import load_settings
from rtserver.server.app import Gateway

SECRET = "test-secret"


async def start(**overrides: Any) -> Gateway:
    base = dict(port=0, embedded_engine="synthetic", embedded_mode="inproc", model_id="synthetic",
                synthetic_tokens=40, synthetic_rate=200)
    return Gateway(load_settings(env={}, overrides={**base, **overrides}))


@pytest.fixture
async def authed() -> AsyncIterator[Gateway]:
    gw = await start(auth_secret=SECRET)
    async with gw.lifespan():
        yield gw


async def refused(url: str, first: dict[str, Any] | None, **kw: Any) -> tuple[dict[str, Any], int]:
    """Send ``first`` (if any); return the error frame and the close code."""
    import orjson

    async with connect(url, **kw) as ws:
        if first is not None:
            await ws.send(orjson.dumps(first).decode())
        error = orjson.loads(await ws.recv())
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None
        return error, info.value.rcvd.code


async def test_no_token_is_refused(authed: Gateway) -> None:
    error, code = await refused(f"ws://127.0.0.1:{authed.port}/ws", {"type": "message", "id": "m", "text": "hi"})
    assert error["code"] == "unauthorized" and error["fatal"] is True and code == 4001


@pytest.mark.parametrize("token", ["garbage", issue("wrong-secret", "eve"), issue(SECRET, "bob", now=1000.0)],
                         ids=["malformed", "forged", "expired"])
async def test_bad_tokens_are_refused(authed: Gateway, token: str) -> None:
    error, code = await refused(f"ws://127.0.0.1:{authed.port}/ws?token={token}", None)
    assert error["code"] == "unauthorized" and code == 4001
    error, code = await refused(f"ws://127.0.0.1:{authed.port}/ws", {"type": "hello", "auth": token})
    assert error["code"] == "unauthorized" and code == 4001


async def test_valid_tokens_by_query_or_hello(authed: Gateway) -> None:
    async with await Client.connect(f"ws://127.0.0.1:{authed.port}/ws?token={issue(SECRET, 'alice')}") as c:
        assert (await c.ask("hi")).done is not None
    async with await Client.connect(f"ws://127.0.0.1:{authed.port}/ws",
                                    hello={"auth": issue(SECRET, "alice")}) as c:
        assert (await c.ask("hi")).done is not None


async def test_a_session_cannot_be_resumed_by_another_user(authed: Gateway) -> None:
    url = f"ws://127.0.0.1:{authed.port}/ws"
    async with await Client.connect(url, hello={"auth": issue(SECRET, "alice")}) as alice:
        await alice.ask("hi")
        assert alice.session is not None
        sid, tok = alice.session["session_id"], alice.session["resume_token"]
    async with await Client.connect(url, hello={"auth": issue(SECRET, "mallory"), "session_id": sid,
                                                "resume_token": tok}) as mallory:
        assert mallory.pending and mallory.pending[0]["code"] == "unauthorized"
        assert mallory.session is not None and mallory.session["resumed"] is False
        assert mallory.session["session_id"] != sid


async def test_origin_allow_list() -> None:
    gw = await start(allowed_origins=["https://chat.example"])
    async with gw.lifespan():
        url = f"ws://127.0.0.1:{gw.port}/ws"
        error, code = await refused(url, None, origin="https://evil.example")
        assert error["code"] == "origin_not_allowed" and code == 4004
        async with await Client.connect(url, headers={"Origin": "https://chat.example"}) as c:
            assert (await c.ask("hi")).done is not None


async def test_connections_per_address_are_capped() -> None:
    gw = await start(max_connections_per_ip=2)
    async with gw.lifespan():
        url = f"ws://127.0.0.1:{gw.port}/ws"
        async with await Client.connect(url), await Client.connect(url):
            error, code = await refused(url, None)
            assert error["code"] == "rate_limited" and code == 4029
        async with await Client.connect(url) as c:  # freed again
            assert (await c.ask("hi")).done is not None


async def test_one_client_cannot_cancel_anothers_response() -> None:
    gw = await start()
    async with gw.lifespan():
        url = f"ws://127.0.0.1:{gw.port}/ws"
        async with await Client.connect(url) as a, await Client.connect(url) as b:
            mid = await a.send_message("tell me a story")
            first = await a.recv(5)
            assert first["type"] == "route"
            await b.cancel(first["response_id"])
            err = await b.recv(5)
            assert err["code"] == "nothing_to_cancel"
            frames = [f async for f in a.stream(mid)]
            assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "stop"  # not cancelled


async def test_message_rate_limit() -> None:
    gw = await start(messages_per_second=1, message_burst=3)
    async with gw.lifespan():
        async with await Client.connect(f"ws://127.0.0.1:{gw.port}/ws") as c:
            for _ in range(4):
                await c.send({"type": "ping"})
            codes = [(await c.recv(5)).get("code") for _ in range(4)]
            assert codes.count("rate_limited") >= 1


async def test_per_address_cap_behind_a_trusted_proxy() -> None:
    gw = await start(max_connections_per_ip=1, trusted_proxies=["127.0.0.0/8"])
    async with gw.lifespan():
        url = f"ws://127.0.0.1:{gw.port}/ws"
        async with await Client.connect(url, headers={"X-Real-IP": "203.0.113.7"}):
            # another client behind the same proxy is not counted against the first
            async with await Client.connect(url, headers={"X-Real-IP": "203.0.113.8"}) as other:
                assert (await other.ask("hi")).done is not None
            error, code = await refused(url, None, additional_headers={"X-Forwarded-For": "10.0.0.1, 203.0.113.7"})
            assert error["code"] == "rate_limited" and code == 4029
