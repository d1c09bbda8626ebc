"""Issue 18 item 2: a response cut by a cancel or by the SIGTERM drain deadline keeps
its whole replay log. Two real gateway processes share one real Redis; each runs an
embedded synthetic worker at 10 tokens/s, a rate at which the gateway writes the log
in pairs of tokens, so a cut after an odd number of tokens finds one not yet written.

What a user notices: after a resume on the other gateway, every token after
``last_seq`` arrives, and then ``done`` (whose ``last_seq`` is the last token sent)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from rtserver.client import Client
from rtserver.sessions.redis import RedisSessionStore
from tests.redis_server import GatewayProcess, RedisServer, gateway_factory, redis_prefix, redis_server

pytestmark = [pytest.mark.redis]
__all__ = ["gateway_factory", "redis_prefix", "redis_server"]

SERVE = ("--embedded-engine", "synthetic", "--model-id", "synthetic", "--synthetic-rate", "10",
         "--synthetic-tokens", "200", "--max-tokens", "200", "--shutdown-grace-s", "1")


@pytest.fixture
def pair(
    redis_server: RedisServer, redis_prefix: str, gateway_factory: Callable[..., GatewayProcess]
) -> tuple[GatewayProcess, GatewayProcess]:
    args = ("--redis", redis_server.url, "--key-prefix", redis_prefix, *SERVE)
    return gateway_factory(*args), gateway_factory(*args)


async def logged(redis_server: RedisServer, prefix: str, sid: str, rid: str) -> list[dict[str, Any]]:
    """The response's replay log once its ``done`` is in it (bounded wait)."""
    store = RedisSessionStore(redis_server.url, prefix=prefix)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            frames = await store.read_frames(sid, rid, -1) or []
            if frames and frames[-1]["type"] == "done":
                return frames
            await asyncio.sleep(0.1)
        pytest.fail(f"no done in the replay log of {rid}")
    finally:
        await store.close()


def assert_whole(frames: list[dict[str, Any]]) -> int:
    """Tokens 0..done.last_seq, each once, then done; returns last_seq."""
    last = frames[-1]["last_seq"]
    assert [f["seq"] for f in frames if f["type"] == "token"] == list(range(last + 1))
    return int(last)


async def resume_rest(gw: GatewayProcess, session: dict[str, Any], rid: str, last_seq: int) -> list[dict[str, Any]]:
    hello = {"session_id": session["session_id"], "resume_token": session["resume_token"],
             "response_id": rid, "last_seq": last_seq}
    async with await Client.connect(gw.ws, hello=hello) as c:
        assert c.session is not None and c.session["resumed"] is True
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(await c.recv(40))
        return frames


async def test_a_cancelled_response_keeps_its_last_tokens_for_a_resume_elsewhere(
    pair: tuple[GatewayProcess, GatewayProcess], redis_server: RedisServer, redis_prefix: str
) -> None:
    a, b = pair
    async with await Client.connect(a.ws) as c:
        assert c.session is not None
        session = c.session
        await c.send_message("tell me a long story")
        seen: list[dict[str, Any]] = []
        while len(seen) < 5:  # odd: the gateway logs tokens in pairs at this rate
            f = await c.recv(15)
            if f["type"] == "token":
                seen.append(f)
        rid = seen[0]["response_id"]
        await c.cancel(rid)  # the user presses Stop
        while (f := await c.recv(15))["type"] != "done":
            seen.append(f)
        assert f["finish_reason"] == "cancelled"
        last = f["last_seq"]
        assert [t["seq"] for t in seen] == list(range(last + 1))
    assert assert_whole(await logged(redis_server, redis_prefix, session["session_id"], rid)) == last
    # a client that saw only the first token gets the rest, and done, on the other gateway
    rest = await resume_rest(b, session, rid, 0)
    assert [f["type"] for f in rest if f["type"] == "error"] == []
    assert [f["seq"] for f in rest if f["type"] == "token"] == list(range(1, last + 1))
    assert rest[-1]["type"] == "done" and rest[-1]["last_seq"] == last


async def test_a_response_cut_at_the_drain_deadline_can_be_finished_elsewhere(
    pair: tuple[GatewayProcess, GatewayProcess], redis_server: RedisServer, redis_prefix: str
) -> None:
    a, b = pair
    c = await Client.connect(a.ws)
    assert c.session is not None
    session = c.session
    await c.send_message("tell me a long story")
    seen: list[dict[str, Any]] = []
    while len(seen) < 3:
        f = await c.recv(15)
        if f["type"] == "token":
            seen.append(f)
    rid = seen[0]["response_id"]
    assert a.proc is not None
    a.proc.terminate()  # SIGTERM: the answer (20 s) outlasts the 1 s grace
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(30):
            while True:
                f = await c.recv()
                if f["type"] == "token":
                    seen.append(f)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1012
    last_seen = seen[-1]["seq"]
    assert [t["seq"] for t in seen] == list(range(last_seen + 1))
    last = assert_whole(await logged(redis_server, redis_prefix, session["session_id"], rid))
    assert last >= last_seen  # every token the client saw is in the log
    rest = await resume_rest(b, session, rid, last_seen)  # the client saw everything sent to it
    assert [f["type"] for f in rest if f["type"] == "error"] == []
    assert [f["seq"] for f in rest if f["type"] == "token"] == list(range(last_seen + 1, last + 1))
    assert rest[-1]["type"] == "done" and rest[-1]["finish_reason"] == "cancelled"


async def test_a_log_that_ends_short_of_done_is_reported_not_skipped(
    redis_server: RedisServer, redis_prefix: str, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    """Should a log still lack tokens before its ``done`` (e.g. frames dropped during a
    long store outage), a follower says ``recovery_impossible``: never a silent gap."""
    gw = gateway_factory("--redis", redis_server.url, "--key-prefix", redis_prefix, *SERVE)
    async with await Client.connect(gw.ws) as c:
        assert c.session is not None
        session = c.session
    rid = "r_elsewhere"
    store = RedisSessionStore(redis_server.url, prefix=redis_prefix)
    try:
        tokens = [{"type": "token", "response_id": rid, "seq": i, "text": f"t{i} ", "stats": {}} for i in range(3)]
        done = {"type": "done", "response_id": rid, "finish_reason": "stop", "last_seq": 5,
                "usage": {"prompt_tokens": 1, "completion_tokens": 6}, "stats": {}}
        await store.append_frames(session["session_id"], rid, [*tokens, done])  # tokens 3..5 missing
    finally:
        await store.close()
    rest = await resume_rest(gw, session, rid, 0)
    assert [f["seq"] for f in rest if f["type"] == "token"] == [1, 2]
    assert rest[-1]["type"] == "error" and rest[-1]["code"] == "recovery_impossible"
