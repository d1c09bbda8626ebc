"""Authentication on a live gateway (real sockets): unauthenticated input, identity
provider tokens through a JWKS on loopback, token refresh and expiry.

Codes and frames are the documented ones (docs/protocol.md: "Connection tokens",
"Token refresh", close codes 4001 and 4005).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from rtserver.auth import issue
from rtserver.client import Client
from rtserver.config import load_settings
from rtserver.server.app import Gateway
from tests.jwks_server import JwksServer

SECRET = "refresh-test-secret-of-32-bytes-or-more"


async def start(**overrides: Any) -> Gateway:
    base = dict(port=0, embedded_engine="synthetic", embedded_mode="inproc", model_id="synthetic",
                synthetic_tokens=20, synthetic_rate=200, auth_secret=SECRET, auth_leeway_s=0)
    return Gateway(load_settings(env={}, overrides={**base, **overrides}))


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    gateway = await start(auth_expiry_warning_s=1.0)
    async with gateway.lifespan():
        yield gateway


async def frames_until_close(ws: ClientConnection, timeout: float = 15.0) -> tuple[list[dict[str, Any]], int]:
    """Every frame the server sends until it closes; and the close code."""
    import asyncio

    out: list[dict[str, Any]] = []
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                out.append(orjson.loads(await ws.recv()))
    assert info.value.rcvd is not None
    return out, info.value.rcvd.code


async def next_of(c: Client, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    while True:
        frame = await c.recv(timeout)
        if frame["type"] == kind:
            return frame


# ------------------------------------------------------------------ issue 18 item 11
async def test_unauthenticated_garbage_gets_one_answer(gw: Gateway) -> None:
    """46 frames before authenticating (malformed, unknown, invalid, then a ping): one fatal
    ``unauthorized`` answers them all, then close 4001; none of them is parsed into a reply."""
    async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
        for i in range(45):
            await ws.send(["{not json", '{"type": "nope"}', '{"type": "message"}'][i % 3])
        await ws.send(orjson.dumps({"type": "ping", "t": 1}).decode())
        frames, code = await frames_until_close(ws)
    assert [(f["type"], f.get("code"), f.get("fatal")) for f in frames] == [("error", "unauthorized", True)]
    assert code == 4001


async def test_hello_with_a_token_is_still_the_way_in(gw: Gateway) -> None:
    async with await Client.connect(f"ws://127.0.0.1:{gw.port}/ws", hello={"auth": issue(SECRET, "alice")}) as c:
        assert (await c.ask("hi")).done is not None


# ---------------------------------------------------------------------- refresh
async def test_a_refresh_keeps_the_socket_past_the_first_tokens_expiry(gw: Gateway) -> None:
    url = f"ws://127.0.0.1:{gw.port}/ws"
    first = issue(SECRET, "alice", ttl_s=3)
    async with await Client.connect(url, hello={"auth": first}) as c:
        warning = await next_of(c, "token_expiring")
        assert warning["expires_at"] == jwt.decode(first, options={"verify_signature": False})["exp"]
        fresh = issue(SECRET, "alice", ttl_s=120)
        await c.send({"type": "refresh", "auth": fresh})
        refreshed = await next_of(c, "refreshed")
        assert refreshed["expires_at"] == jwt.decode(fresh, options={"verify_signature": False})["exp"]
        while time.time() < warning["expires_at"] + 1.5:  # past the first token's exp
            turn = await c.ask("still there?")
            assert turn.done is not None and turn.done["finish_reason"] == "stop"


async def test_a_token_that_expires_without_refresh_closes_4005_after_a_warning(gw: Gateway) -> None:
    async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
        await ws.send(orjson.dumps({"type": "hello", "auth": issue(SECRET, "alice", ttl_s=2)}).decode())
        frames, code = await frames_until_close(ws)
    kinds = [f["type"] for f in frames]
    assert kinds == ["session", "token_expiring", "error"]
    assert frames[-1]["code"] == "token_expired" and frames[-1]["status"] == 1106 and frames[-1]["fatal"] is True
    assert code == 4005


async def test_a_refresh_for_another_user_closes_4001(gw: Gateway) -> None:
    async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
        await ws.send(orjson.dumps({"type": "hello", "auth": issue(SECRET, "alice")}).decode())
        assert orjson.loads(await ws.recv())["type"] == "session"
        await ws.send(orjson.dumps({"type": "refresh", "auth": issue(SECRET, "mallory")}).decode())
        frames, code = await frames_until_close(ws)
    assert [(f["code"], f["fatal"]) for f in frames] == [("unauthorized", True)] and code == 4001


async def test_a_bad_refresh_is_refused_and_the_socket_stays(gw: Gateway) -> None:
    url = f"ws://127.0.0.1:{gw.port}/ws"
    async with await Client.connect(url, hello={"auth": issue(SECRET, "alice")}) as c:
        for bad in ("garbage", issue("another-secret-of-thirty-two-bytes", "alice"),
                    issue(SECRET, "alice", now=1000.0)):
            await c.send({"type": "refresh", "auth": bad})
            err = await next_of(c, "error")
            assert err["code"] == "unauthorized" and err["fatal"] is False
        await c.send({"type": "refresh"})
        assert (await next_of(c, "error"))["code"] == "missing_field"
        assert (await c.ask("hi")).done is not None


# --------------------------------------------------------------- identity provider
@pytest.fixture
def idp() -> Iterator[tuple[JwksServer, rsa.RSAPrivateKey]]:
    server = JwksServer()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server.add(key, "k1", "RS256")
    yield server, key
    server.close()


def idp_token(key: Any, *, kid: str = "k1", aud: str = "rt", iss: str = "https://idp.test/", ttl: int = 60,
              sub: str = "user-1") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "aud": aud, "iss": iss, "iat": now, "exp": now + ttl}, key, algorithm="RS256",
                      headers={"kid": kid})


async def test_identity_provider_tokens_over_a_socket(idp: tuple[JwksServer, rsa.RSAPrivateKey]) -> None:
    server, key = idp
    gateway = await start(auth_secret="", auth_jwks_url=server.url, auth_audience="rt",
                          auth_issuer="https://idp.test/")
    async with gateway.lifespan():
        url = f"ws://127.0.0.1:{gateway.port}/ws"
        async with await Client.connect(f"{url}?token={idp_token(key)}") as c:
            assert (await c.ask("hi")).done is not None
        refusals = {
            "wrong aud": (idp_token(key, aud="other"), "token has the wrong audience"),
            "wrong iss": (idp_token(key, iss="https://evil.test/"), "token has the wrong issuer"),
            "expired": (idp_token(key, ttl=-30), "token expired"),
            "unknown kid": (idp_token(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid="k9"),
                            "unknown signing key id"),
            "hs with server secret": (issue(SECRET, "user-1"), "unsupported token algorithm"),
        }
        for name, (token, doc) in refusals.items():
            async with connect(url) as ws:
                await ws.send(orjson.dumps({"type": "hello", "auth": token}).decode())
                frames, code = await frames_until_close(ws)
            assert len(frames) == 1 and frames[0]["code"] == "unauthorized", name
            assert frames[0]["message"].startswith(doc) and code == 4001, name


async def test_an_unreachable_identity_provider_closes_1013(idp: tuple[JwksServer, rsa.RSAPrivateKey]) -> None:
    server, key = idp
    server.fail = True
    gateway = await start(auth_secret="", auth_jwks_url=server.url, auth_audience="rt")
    async with gateway.lifespan():
        async with connect(f"ws://127.0.0.1:{gateway.port}/ws?token={idp_token(key)}") as ws:
            frames, code = await frames_until_close(ws)
    assert [(f["code"], f["retryable"], f["fatal"]) for f in frames] == [("auth_unavailable", True, True)]
    assert code == 1013


async def test_refreshing_with_the_same_token_gets_no_second_warning(gw: Gateway) -> None:
    """A client re-sending its cached token is not warned again (no refresh loop); the socket
    still closes 4005 at the token's expiry."""
    token = issue(SECRET, "alice", ttl_s=2)
    async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
        await ws.send(orjson.dumps({"type": "hello", "auth": token}).decode())
        assert orjson.loads(await ws.recv())["type"] == "session"
        assert orjson.loads(await ws.recv())["type"] == "token_expiring"
        await ws.send(orjson.dumps({"type": "refresh", "auth": token}).decode())
        frames, code = await frames_until_close(ws)
    assert [f["type"] for f in frames] == ["refreshed", "error"]
    assert frames[-1]["code"] == "token_expired" and code == 4005
