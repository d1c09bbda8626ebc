"""Redis goes away under a running gateway and comes back on the same port.

Conversations go on from the gateway's memory, /readyz says "degraded" meanwhile and
"ready" again afterwards, queued writes reach Redis once it is back, and what was
written before the outage is still there (the test's Redis keeps an fsync'ed AOF).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from rtserver.client import Client
from rtserver.exceptions import SessionError, StoreError
from rtserver.sessions.base import Session
from rtserver.sessions.redis import RedisSessionStore
from tests.redis_server import GatewayProcess, RedisServer, gateway_factory, redis_factory, redis_prefix

pytestmark = [pytest.mark.redis]
__all__ = ["gateway_factory", "redis_factory", "redis_prefix"]

SERVE = (
    "--embedded-engine",
    "synthetic",
    "--model-id",
    "synthetic",
    "--synthetic-rate",
    "200",
    "--synthetic-tokens",
    "20",
)


async def readyz_becomes(gw: GatewayProcess, status: str, within: float = 20.0) -> dict[str, object]:
    report: dict[str, object] = {}
    for _ in range(int(within / 0.1)):
        code, report = await asyncio.to_thread(gw.get, "/readyz")
        if report.get("status") == status:
            assert code == 200  # degraded still takes traffic
            return report
        await asyncio.sleep(0.1)
    pytest.fail(f"/readyz never said {status!r}; last: {report}")


async def stored(store: RedisSessionStore, session_id: str, turns: int, within: float = 20.0) -> Session:
    """The stored session once it holds ``turns`` user+assistant pairs."""
    last: object = None
    for _ in range(int(within / 0.1)):
        try:
            s = await store.load(session_id)
            if len(s.history) >= 2 * turns:
                return s
            last = s.history
        except (StoreError, SessionError) as exc:
            last = exc
        await asyncio.sleep(0.1)
    pytest.fail(f"session {session_id[:8]} never reached {turns} turns in the store; last: {last!r}")


async def test_gateway_rides_out_a_redis_restart(
    redis_factory: Callable[..., RedisServer], redis_prefix: str, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    redis = redis_factory(persistent=True)
    gw = gateway_factory("--redis", redis.url, "--key-prefix", redis_prefix, *SERVE)
    store = RedisSessionStore(redis.url, prefix=redis_prefix, op_timeout_s=0.5)
    try:
        await readyz_becomes(gw, "ready")
        async with await Client.connect(gw.ws) as before:  # a conversation that ends before the outage
            await before.ask("remember this")
            assert before.session is not None
            kept = before.session
        await stored(store, kept["session_id"], 1)

        async with await Client.connect(gw.ws) as c:
            first = await c.ask("one")
            redis.kill()
            during = await c.ask("two")  # served from the gateway's memory
            assert during.done is not None and during.done["finish_reason"] == "stop"
            assert during.text == first.text
            assert during.route is not None and during.route["decision"] == "bypass"
            report = await readyz_becomes(gw, "degraded")
            assert report["store"] == {
                "backend": "redis",
                "ok": False,
                "pending_writes": report["store"]["pending_writes"],
            }  # type: ignore[index]
            async with await Client.connect(gw.ws) as newcomer:  # new conversations still open
                assert (await newcomer.ask("hi")).text == first.text
            assert gw.proc is not None and gw.proc.poll() is None

            redis.start()
            await readyz_becomes(gw, "ready")
            after = await c.ask("three")
            assert after.route is not None and after.route["decision"] == "bypass"
            assert c.session is not None
            live_id = c.session["session_id"]
        # the writes made during the outage reached Redis, and the old session survived it
        assert len((await stored(store, live_id, 3)).history) == 6
        old = await store.load(kept["session_id"])
        assert old.token_matches(kept["resume_token"])
        assert [role for role, _ in old.history] == ["user", "assistant"]
        async with await Client.connect(
            gw.ws, hello={"session_id": kept["session_id"], "resume_token": kept["resume_token"]}
        ) as back:
            assert back.session is not None and back.session["resumed"] is True
    finally:
        await store.close()


async def test_gateway_starts_while_redis_is_down(
    tmp_path: Path, redis_prefix: str, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    redis = RedisServer(tmp_path / "late-redis")  # its port is chosen, nothing listens yet
    gw = gateway_factory("--redis", redis.url, "--key-prefix", redis_prefix, *SERVE)
    try:
        await readyz_becomes(gw, "degraded")
        async with await Client.connect(gw.ws) as c:
            assert (await c.ask("hello")).done is not None
            redis.start()
            await readyz_becomes(gw, "ready")
            assert c.session is not None
            sid = c.session["session_id"]
        store = RedisSessionStore(redis.url, prefix=redis_prefix)
        try:  # the conversation held while Redis was missing is written once it appears
            assert [role for role, _ in (await stored(store, sid, 1)).history] == ["user", "assistant"]
        finally:
            await store.close()
    finally:
        redis.stop()
