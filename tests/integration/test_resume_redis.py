"""Resume from any gateway: two real gateway processes sharing one real Redis.

Each gateway runs its own embedded synthetic worker (60 tokens at 50 tokens/s), whose
output is deterministic, so a resumed stream can be compared with an uninterrupted one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from rtserver.client import Client
from rtserver.sessions.redis import RedisSessionStore
from tests.redis_server import GatewayProcess, RedisServer, gateway_factory, redis_prefix, redis_server

pytestmark = [pytest.mark.redis]
__all__ = ["gateway_factory", "redis_prefix", "redis_server"]

TOKENS = 60
SERVE = (
    "--embedded-engine",
    "synthetic",
    "--model-id",
    "synthetic",
    "--synthetic-rate",
    "50",
    "--synthetic-tokens",
    str(TOKENS),
)
EXPECTED_TEXT = "".join(
    ("lorem ", "ipsum ", "dolor ", "sit ", "amet ", "consectetur ", "adipiscing ", "elit ")[i % 8]
    for i in range(TOKENS)
)


@pytest.fixture
def pair(
    redis_server: RedisServer, redis_prefix: str, gateway_factory: Callable[..., GatewayProcess]
) -> tuple[GatewayProcess, GatewayProcess]:
    args = ("--redis", redis_server.url, "--key-prefix", redis_prefix, *SERVE)
    return gateway_factory(*args), gateway_factory(*args)


def resume_hello(session: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"session_id": session["session_id"], "resume_token": session["resume_token"], **extra}


async def frames_until_done(client: Client, timeout: float = 30.0) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = await client.recv(timeout)
        frames.append(frame)
        if frame["type"] == "done":
            return frames


async def reference_prompt_tokens(gw: GatewayProcess, texts: list[str]) -> list[int]:
    """prompt_tokens of each turn of one uninterrupted conversation (they grow with the history)."""
    async with await Client.connect(gw.ws) as c:
        return [(await c.ask(t)).done["usage"]["prompt_tokens"] for t in texts]  # type: ignore[index]


async def test_conversation_continues_on_another_gateway(pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = pair
    async with await Client.connect(a.ws) as c:
        first = await c.ask("hello, how are you today?")
        assert c.session is not None
        session = c.session
    assert first.text == EXPECTED_TEXT
    assert first.route is not None and first.route["decision"] == "full"

    async with await Client.connect(b.ws, hello=resume_hello(session)) as c2:
        assert c2.session is not None
        assert c2.session["resumed"] is True
        assert c2.session["session_id"] == session["session_id"]
        assert c2.session["resume_token"] != session["resume_token"]  # rotated
        assert c2.session["route"]["use_case"] == first.route["use_case"]
        assert c2.session["route"]["model"] == "synthetic"
        second = await c2.ask("and what else?")
    assert second.route is not None and second.route["decision"] == "bypass"
    assert second.text == EXPECTED_TEXT
    # the history came along: the prompt is as long as in a conversation that never moved
    reference = await reference_prompt_tokens(a, ["hello, how are you today?", "and what else?"])
    assert [first.done["usage"]["prompt_tokens"], second.done["usage"]["prompt_tokens"]] == reference  # type: ignore[index]


@pytest.mark.parametrize("where", ["other", "same"])
async def test_stream_cut_mid_response_resumes_exactly_once(
    pair: tuple[GatewayProcess, GatewayProcess], where: str
) -> None:
    a, b = pair
    target = b if where == "other" else a
    c = await Client.connect(a.ws)
    assert c.session is not None
    session = c.session
    await c.send_message("tell me a long story")
    got: list[dict[str, Any]] = []
    response_id = None
    while len(got) < 10:
        frame = await c.recv(10)
        if frame["type"] == "route":
            response_id = frame["response_id"]
        elif frame["type"] == "token":
            got.append(frame)
    assert response_id is not None
    c.ws.transport.abort()  # the network drops: no close frame
    last_seq = got[-1]["seq"]

    hello = resume_hello(session, response_id=response_id, last_seq=last_seq)
    async with await Client.connect(target.ws, hello=hello) as c2:
        assert c2.session is not None and c2.session["resumed"] is True
        rest = await frames_until_done(c2)
        errors = [f for f in rest if f["type"] == "error"]
        assert errors == []
        tokens = got + [f for f in rest if f["type"] == "token"]
        assert [t["seq"] for t in tokens] == list(range(TOKENS))  # contiguous, no duplicate
        assert "".join(t["text"] for t in tokens) == EXPECTED_TEXT
        assert rest[-1]["response_id"] == response_id and rest[-1]["last_seq"] == TOKENS - 1
        # the resumed conversation goes on, with the streamed answer in its history
        nxt = await c2.ask("and then?")
    assert nxt.route is not None and nxt.route["decision"] == "bypass"
    reference = await reference_prompt_tokens(a, ["tell me a long story", "and then?"])
    assert nxt.done["usage"]["prompt_tokens"] == reference[1]  # type: ignore[index]


async def test_wrong_or_stale_resume_token_is_refused(pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = pair
    async with await Client.connect(a.ws) as c:
        await c.ask("hi")
        assert c.session is not None
        session = c.session
    async with await Client.connect(b.ws, hello={**resume_hello(session), "resume_token": "not-the-token"}) as bad:
        assert bad.session is not None and bad.session["resumed"] is False
        assert bad.session["session_id"] != session["session_id"]
        assert [f["code"] for f in bad.pending if f["type"] == "error"] == ["unauthorized"]
    async with await Client.connect(b.ws, hello=resume_hello(session)) as good:
        assert good.session is not None and good.session["resumed"] is True
    for gw in (a, b):  # the token rotated on that resume: the old one is refused everywhere
        async with await Client.connect(gw.ws, hello=resume_hello(session)) as stale:
            assert stale.session is not None and stale.session["resumed"] is False
            assert [f["code"] for f in stale.pending if f["type"] == "error"] == ["unauthorized"]


async def test_unknown_session_is_not_found(pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    _, b = pair
    hello = {"session_id": "s_" + "x" * 24, "resume_token": "whatever"}
    async with await Client.connect(b.ws, hello=hello) as c:
        assert c.session is not None and c.session["resumed"] is False
        assert [f["code"] for f in c.pending if f["type"] == "error"] == ["session_not_found"]


async def test_idle_session_expires(
    redis_server: RedisServer, redis_prefix: str, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    args = ("--redis", redis_server.url, "--key-prefix", redis_prefix, "--session-ttl-s", "1", *SERVE)
    a, b = gateway_factory(*args), gateway_factory(*args)
    async with await Client.connect(a.ws) as c:
        await c.ask("hi")
        assert c.session is not None
        session = c.session
    r = aioredis.Redis.from_url(redis_server.url)
    try:  # wait (without touching it) until Redis has let the session go
        for _ in range(300):
            if not await r.exists(f"{redis_prefix}:sess:{{{session['session_id']}}}"):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the session never expired")
    finally:
        await r.aclose()
    async with await Client.connect(b.ws, hello=resume_hello(session)) as c2:
        assert c2.session is not None and c2.session["resumed"] is False
        assert [f["code"] for f in c2.pending if f["type"] == "error"] == ["session_expired"]


async def test_old_gateway_finishing_late_does_not_undo_a_move(
    pair: tuple[GatewayProcess, GatewayProcess], redis_server: RedisServer, redis_prefix: str
) -> None:
    """The client moves to B while A still streams to the old socket; A's last save must not win."""
    a, b = pair
    old = await Client.connect(a.ws)
    assert old.session is not None
    session = old.session
    await old.send_message("tell me a long story")
    response_id = None
    while response_id is None:
        frame = await old.recv(10)
        if frame["type"] == "route":
            response_id = frame["response_id"]
    async with await Client.connect(b.ws, hello=resume_hello(session)) as moved:
        assert moved.session is not None and moved.session["resumed"] is True
        newest = moved.session
        await frames_until_done(old)  # A finished the response on its (still open) socket
        store = RedisSessionStore(redis_server.url, prefix=redis_prefix)
        try:  # A logs done after its final session save: once done is in the log, that save was made
            for _ in range(200):
                log = await store.read_frames(session["session_id"], response_id, -1) or []
                if log and log[-1]["type"] == "done":
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("A never logged its done frame")
            assert (await store.load(session["session_id"])).token_matches(newest["resume_token"])
        finally:
            await store.close()
    await old.close()
    async with await Client.connect(a.ws, hello=resume_hello(newest)) as back:
        assert back.session is not None and back.session["resumed"] is True
        assert back.pending == []
