"""Issue 18 item 3: one resume token is accepted once. Two real gateway processes share
one real Redis; two sockets present the same session id and token at the same moment,
one to each gateway. Exactly one resumes; the other is refused with ``unauthorized``
(docs/protocol.md, Resume) and gets a new conversation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from rtserver.client import Client
from rtserver.sessions.redis import RedisSessionStore
from tests.redis_server import GatewayProcess, RedisServer, gateway_factory, redis_prefix, redis_server

pytestmark = [pytest.mark.redis]
__all__ = ["gateway_factory", "redis_prefix", "redis_server"]

SERVE = ("--embedded-engine", "synthetic", "--model-id", "synthetic", "--synthetic-rate", "0",
         "--synthetic-tokens", "5")
TRIALS = 8


@pytest.fixture
def pair(
    redis_server: RedisServer, redis_prefix: str, gateway_factory: Callable[..., GatewayProcess]
) -> tuple[GatewayProcess, GatewayProcess]:
    args = ("--redis", redis_server.url, "--key-prefix", redis_prefix, *SERVE)
    return gateway_factory(*args), gateway_factory(*args)


async def test_two_concurrent_resumes_with_one_token_let_exactly_one_in(
    pair: tuple[GatewayProcess, GatewayProcess], redis_server: RedisServer, redis_prefix: str
) -> None:
    a, b = pair
    async with await Client.connect(a.ws) as c:
        assert (await c.ask("hello")).done is not None
        assert c.session is not None
        session: dict[str, Any] = c.session
    sid = session["session_id"]
    for trial in range(TRIALS):
        hello = {"session_id": sid, "resume_token": session["resume_token"]}
        first, second = (a, b) if trial % 2 == 0 else (b, a)
        clients = await asyncio.gather(Client.connect(first.ws, hello=hello), Client.connect(second.ws, hello=hello))
        try:
            winners = [c for c in clients if c.session is not None and c.session["resumed"]]
            losers = [c for c in clients if c not in winners]
            assert len(winners) == 1, f"trial {trial}: {len(winners)} sockets resumed with one token"
            [loser] = losers
            assert loser.session is not None and loser.session["session_id"] != sid
            assert [f["code"] for f in loser.pending if f["type"] == "error"] == ["unauthorized"]
            [winner] = winners
            assert (await winner.ask(f"turn {trial}")).done is not None  # the winner goes on
            assert winner.session is not None
            session = winner.session
        finally:
            for c in clients:
                await c.close()
    # every winner's turn is in the stored conversation: no branch was dropped
    store = RedisSessionStore(redis_server.url, prefix=redis_prefix)
    try:
        for _ in range(100):
            stored = await store.load(sid)
            if sum(1 for role, _ in stored.history if role == "user") == TRIALS + 1:
                break
            await asyncio.sleep(0.1)
        users = [text for role, text in stored.history if role == "user"]
        assert users == ["hello"] + [f"turn {t}" for t in range(TRIALS)]
    finally:
        await store.close()
