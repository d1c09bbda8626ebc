"""``ResilientClient`` against live ``rtserver serve`` processes: the Python twin of
clients/js/test/client.test.mjs (same scenarios, same expectations).

The embedded synthetic engine's answers are deterministic, so a resumed answer can be
compared with the whole one.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rtserver.auth import issue
from rtserver.client import ClientError, Reply, ResilientClient, backoff_delay
from tests.procs import Proc, gateway
from tests.redis_server import GatewayProcess, RedisServer, gateway_factory, redis_prefix, redis_server

__all__ = ["gateway_factory", "redis_prefix", "redis_server"]

N = 40
SYNTHETIC = ("--embedded-engine", "synthetic", "--embedded-mode", "inproc", "--model-id", "synthetic")
WORDS = ("lorem ", "ipsum ", "dolor ", "sit ", "amet ", "consectetur ", "adipiscing ", "elit ")
SECRET = "python-client-test-secret-32-bytes!"


def expected(n: int) -> str:
    return "".join(WORDS[i % len(WORDS)] for i in range(n))


def seqs(reply: Reply) -> list[int]:
    return [s for t in reply.tokens for s in range(t["seq"], int(t.get("seq_last", t["seq"])) + 1)]


class Tapped(ResilientClient):
    """Records every token frame as received, before the client's own de-duplication."""

    raw: list[int]

    async def _on_frame(self, f: dict[str, Any]) -> None:
        if f.get("type") == "token":
            self.raw = [*getattr(self, "raw", []), f["seq"]]
        await super()._on_frame(f)


@pytest.fixture(scope="module")
def gw() -> Iterator[Proc]:
    with gateway(*SYNTHETIC, "--synthetic-tokens", str(N), "--synthetic-rate", "100") as p:
        yield p


@pytest.fixture(scope="module")
def authed() -> Iterator[Proc]:
    with gateway(*SYNTHETIC, "--auth-secret", SECRET, "--auth-expiry-warning-s", "1", "--auth-leeway-s", "0",
                 "--synthetic-tokens", "10", "--synthetic-rate", "100") as p:
        yield p


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    assert backoff_delay(0, 0.1, 1.0, rand=0) == pytest.approx(0.05)
    assert backoff_delay(3, 0.1, 1.0, rand=1) == pytest.approx(0.8)
    assert backoff_delay(10, 0.1, 1.0, rand=1) == pytest.approx(1.0)


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_a_conversation(gw: Proc, encoding: str) -> None:
    async with ResilientClient(gw.url, encoding=encoding) as c:
        decisions = []
        for text in ("hello there", "and a second turn"):
            reply = await c.send(text, context={"app": "test"})
            tokens = [t async for t in reply]
            done = await reply.wait()
            assert "".join(t["text"] for t in tokens) == expected(N)
            assert seqs(reply) == list(range(N)) and done["last_seq"] == N - 1
            assert done["finish_reason"] == "stop" and isinstance(tokens[0]["stats"]["ttft_ms"], float)
            assert reply.route is not None
            decisions.append(reply.route["decision"])
        assert decisions[1] == "bypass"


async def test_cancel(gw: Proc) -> None:
    async with ResilientClient(gw.url) as c:
        reply = await c.send("a long answer please")
        async for _ in reply:
            if len(reply.tokens) == 3:
                await c.cancel()
        done = await reply.wait()
        assert done["finish_reason"] == "cancelled" and done["last_seq"] < N - 1
        early = await c.send("stop right away")
        await c.cancel()  # before its route: sent once the route names the response
        assert (await early.wait())["finish_reason"] == "cancelled"
        assert (await (await c.send("next")).wait())["finish_reason"] == "stop"


async def test_a_socket_killed_mid_answer_is_resumed_once(gw: Proc) -> None:
    c = Tapped(gw.url, backoff_base_s=0.1, backoff_cap_s=1.0)
    async with c:
        reply = await c.send("tell me a long story")
        async for _ in reply:
            if len(reply.tokens) == 10:
                assert c.ws is not None and c.ws.transport is not None
                c.ws.transport.abort()  # the network drops: no close frame
        done = await reply.wait()
        assert c.reconnects == 1
        assert seqs(reply) == list(range(N)) and reply.text == expected(N) and done["last_seq"] == N - 1
        assert len(set(c.raw)) == len(c.raw), "the server sent no token twice"


async def test_cancel_while_the_socket_is_down_is_sent_after_the_resume(gw: Proc) -> None:
    async with ResilientClient(gw.url, backoff_base_s=0.1, backoff_cap_s=1.0) as c:
        reply = await c.send("a story to stop")
        async for t in reply:
            if t["seq"] == 4:
                assert c.ws is not None and c.ws.transport is not None
                c.ws.transport.abort()
                await c.cancel()
        assert (await reply.wait())["finish_reason"] == "cancelled" and c.reconnects == 1


async def test_a_gateway_restart_moves_the_client_to_the_other_gateway(
    redis_server: RedisServer, redis_prefix: str, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    args = ("--redis", redis_server.url, "--key-prefix", redis_prefix, *SYNTHETIC, "--synthetic-tokens", "60",
            "--synthetic-rate", "40", "--shutdown-grace-s", "10")
    a, b = gateway_factory(*args), gateway_factory(*args)
    async with ResilientClient([a.ws, b.ws], backoff_base_s=0.1, backoff_cap_s=1.0) as c:
        reply = await c.send("tell me about restarts")
        async for _ in reply:
            if len(reply.tokens) == 5:
                assert a.proc is not None
                a.proc.send_signal(signal.SIGTERM)
        assert seqs(reply) == list(range(60)) and (await reply.wait())["finish_reason"] == "stop"
        async with asyncio.timeout(30):
            while c.state != "open" or c.url != b.ws:
                await asyncio.sleep(0.05)
        assert c.closes[-1] == 1012 and c.reconnects == 1
        nxt = await c.send("and after the restart?")
        assert (await nxt.wait())["finish_reason"] == "stop" and nxt.text == expected(60)
        assert nxt.route is not None and nxt.route["decision"] == "bypass"  # the conversation came along
    assert a.proc is not None and a.proc.wait(20) == 0


async def test_get_token_refreshes_the_socket_without_reconnecting(authed: Proc) -> None:
    calls = 0

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        return issue(SECRET, "alice", ttl_s=3)

    async with ResilientClient(authed.url, get_token=get_token) as c:
        start = time.monotonic()
        while time.monotonic() - start < 7:  # more than two token lifetimes
            assert (await (await c.send("still here?")).wait())["finish_reason"] == "stop"
            await asyncio.sleep(0.5)
        assert c.closes == [] and c.reconnects == 0
        assert c.refreshes >= 2 and calls >= 3


async def test_an_auth_close_calls_get_token_again(authed: Proc) -> None:
    tokens = [issue(SECRET, "bob", ttl_s=60, now=time.time() - 120), issue(SECRET, "bob", ttl_s=60)]
    calls = 0

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        return tokens[min(calls - 1, 1)]

    async with ResilientClient(authed.url, get_token=get_token, backoff_base_s=0.1) as c:
        assert c.closes == [4001] and calls == 2
        assert (await (await c.send("hi")).wait())["finish_reason"] == "stop"


async def test_a_token_always_refused_fails_the_connection(authed: Proc) -> None:
    async def get_token() -> str:
        return issue(SECRET, "eve", ttl_s=60, now=time.time() - 120)

    c = ResilientClient(authed.url, get_token=get_token, backoff_base_s=0.1)
    with pytest.raises(ClientError) as info:
        await c.connect()
    assert info.value.code == "unauthorized" and c.state == "failed"
    await c.close()
