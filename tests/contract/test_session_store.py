"""The session store contract (sessions/base.py), run against every backend.

Memory runs on an injected clock; Redis runs against a real redis-server with a tiny
TTL and polls until expiry ("expired eventually"), never asserting a duration.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from rtserver.exceptions import SessionExpired, SessionNotFound, StoreError, StoreTimeout, StoreUnavailable
from rtserver.sessions.base import Session, new_resume_token, new_session_id, token_digest
from rtserver.sessions.memory import MemorySessionStore
from rtserver.sessions.redis import RedisSessionStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """Builds stores of one backend and moves its time forward."""

    name = "?"

    def make(self, **kw: Any) -> Any:
        raise NotImplementedError

    async def pass_time(self, seconds: float) -> None:
        raise NotImplementedError

    async def remaining_ttl(self, store: Any, session_id: str) -> float:
        raise NotImplementedError

    async def eventually(self, seconds: float, check: Callable[[], Awaitable[bool]]) -> bool:
        """Let ``seconds`` pass (or poll real time for up to 10x that), until ``check()`` holds."""
        raise NotImplementedError

    async def until_gone(self, store: Any, session_id: str, ttl_s: float) -> bool:
        """Wait until the session's TTL ran out, without reading (and so sliding) it."""
        raise NotImplementedError


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self) -> None:
        self.clock = FakeClock()

    def make(self, **kw: Any) -> MemorySessionStore:
        return MemorySessionStore(clock=self.clock, **kw)

    async def pass_time(self, seconds: float) -> None:
        self.clock.now += seconds

    async def remaining_ttl(self, store: Any, session_id: str) -> float:
        return float(store._data[session_id][0] - self.clock())

    async def eventually(self, seconds: float, check: Callable[[], Awaitable[bool]]) -> bool:
        self.clock.now += seconds + 0.001
        return await check()

    async def until_gone(self, store: Any, session_id: str, ttl_s: float) -> bool:
        self.clock.now += ttl_s + 0.001
        return True


class RedisBackend(Backend):
    name = "redis"

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.stores: list[RedisSessionStore] = []

    def make(self, **kw: Any) -> RedisSessionStore:
        store = RedisSessionStore(self.url, prefix=self.prefix, **kw)
        self.stores.append(store)
        return store

    async def pass_time(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def remaining_ttl(self, store: Any, session_id: str) -> float:
        return float(await store._redis.pttl(store._sess(session_id))) / 1000.0

    async def eventually(self, seconds: float, check: Callable[[], Awaitable[bool]]) -> bool:
        deadline = time.monotonic() + max(10.0, seconds * 10)
        await asyncio.sleep(seconds)
        while time.monotonic() < deadline:
            if await check():
                return True
            await asyncio.sleep(0.1)
        return False

    async def until_gone(self, store: Any, session_id: str, ttl_s: float) -> bool:
        async def gone() -> bool:
            return bool(await store._redis.pttl(store._sess(session_id)) == -2)

        return await self.eventually(ttl_s, gone)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    server = request.getfixturevalue("redis_server")
    b = RedisBackend(server.url, request.getfixturevalue("redis_prefix"))
    yield b
    for s in b.stores:
        await s.close()


def make_session(**kw: Any) -> tuple[Session, str]:
    token = new_resume_token()
    return Session(session_id=new_session_id(), token_digest=token_digest(token), **kw), token


async def expired(store: Any, sid: str) -> bool:
    try:
        await store.load(sid)
    except SessionExpired:
        return True
    return False


# ---------------------------------------------------------------- records
async def test_created_session_loads_with_every_field(backend: Backend) -> None:
    store = backend.make()
    s, token = make_session(
        route={"use_case": "agent", "model_id": "m1"},
        worker="w-1",
        history=[["user", "hi"], ["assistant", "héllo"]],
        request_count=3,
        bypass_count=2,
        context_changes=1,
        active_response="r_x",
        client="test/1",
    )
    await store.create(s)
    got = await store.load(s.session_id)
    assert got.to_dict() | {"last_accessed": 0} == s.to_dict() | {"last_accessed": 0}
    assert got.token_matches(token)
    assert not got.token_matches("another token")


async def test_save_replaces_the_record(backend: Backend) -> None:
    store = backend.make()
    s, _ = make_session()
    await store.create(s)
    s.history.append(["user", "second"])
    s.request_count = 7
    s.worker = "w-2"
    await store.save(s)
    got = await store.load(s.session_id)
    assert got.history == [["user", "second"]]
    assert got.request_count == 7
    assert got.worker == "w-2"


async def test_loaded_copy_is_independent_of_the_store(backend: Backend) -> None:
    store = backend.make()
    s, _ = make_session(history=[["user", "a"]])
    await store.create(s)
    got = await store.load(s.session_id)
    got.history.append(["assistant", "b"])
    assert (await store.load(s.session_id)).history == [["user", "a"]]


async def test_unknown_session_is_not_found(backend: Backend) -> None:
    store = backend.make()
    with pytest.raises(SessionNotFound):
        await store.load(new_session_id())


async def test_deleted_session_is_not_found(backend: Backend) -> None:
    store = backend.make()
    s, _ = make_session()
    await store.create(s)
    await store.append_frames(s.session_id, "r_1", [{"type": "token", "seq": 0, "text": "a"}])
    await store.delete(s.session_id)
    with pytest.raises(SessionNotFound):
        await store.load(s.session_id)
    assert await store.read_frames(s.session_id, "r_1", -1) is None
    await store.delete(s.session_id)  # deleting twice is fine


async def test_touch_of_unknown_session_creates_nothing(backend: Backend) -> None:
    store = backend.make()
    sid = new_session_id()
    await store.touch(sid)
    with pytest.raises(SessionNotFound):
        await store.load(sid)


# ---------------------------------------------------------------- TTL
async def test_idle_session_expires_and_is_told_apart_from_unknown(backend: Backend) -> None:
    store = backend.make(ttl_s=1.0)
    s, _ = make_session()
    await store.create(s)
    assert await backend.until_gone(store, s.session_id, 1.0)  # (a load would slide the TTL)
    assert await expired(store, s.session_id)
    with pytest.raises(SessionExpired):
        await store.load(s.session_id)  # still expired, not "not found"
    with pytest.raises(SessionNotFound):
        await store.load(new_session_id())


async def test_a_late_save_does_not_revive_an_expired_session(backend: Backend) -> None:
    """A gateway's write queued before the session expired and landing after it (a slow writer)
    must not bring the session back: another gateway has been told it expired."""
    store = backend.make(ttl_s=1.0)
    s, _ = make_session()
    await store.create(s)
    assert await backend.until_gone(store, s.session_id, 1.0)
    await store.save(s)
    with pytest.raises(SessionExpired):
        await store.load(s.session_id)


async def test_touch_does_not_revive_an_expired_session(backend: Backend) -> None:
    store = backend.make(ttl_s=1.0)
    s, _ = make_session()
    await store.create(s)
    assert await backend.until_gone(store, s.session_id, 1.0)
    await store.touch(s.session_id)
    with pytest.raises(SessionExpired):
        await store.load(s.session_id)


@pytest.mark.parametrize("slide", ["touch", "save", "load"])
async def test_activity_slides_the_ttl(backend: Backend, slide: str) -> None:
    store = backend.make(ttl_s=30.0)
    s, _ = make_session()
    await store.create(s)
    await backend.pass_time(0.3)
    before = await backend.remaining_ttl(store, s.session_id)
    assert before < 30.0
    if slide == "touch":
        await store.touch(s.session_id)
    elif slide == "save":
        await store.save(s)
    else:
        await store.load(s.session_id)
    assert await backend.remaining_ttl(store, s.session_id) > before


async def test_session_kept_alive_by_touch_outlives_its_ttl_in_memory() -> None:
    clock = FakeClock()
    store = MemorySessionStore(ttl_s=10.0, clock=clock)
    s, _ = make_session()
    await store.create(s)
    for _ in range(5):
        clock.now += 8.0
        await store.touch(s.session_id)
    assert (await store.load(s.session_id)).session_id == s.session_id  # 40 s old, never idle 10 s
    clock.now += 10.1
    assert store.sweep() == 1
    with pytest.raises(SessionExpired):
        await store.load(s.session_id)


# ---------------------------------------------------------------- replay log
def tokens(first: int, n: int, rid: str = "r_1") -> list[dict[str, Any]]:
    return [
        {"type": "token", "response_id": rid, "seq": i, "text": f"t{i} ", "stats": {"gap_ms": 1.5}}
        for i in range(first, first + n)
    ]


async def test_replay_frames_read_back_after_a_seq_in_order(backend: Backend) -> None:
    store = backend.make()
    sid = new_session_id()
    await store.append_frames(sid, "r_1", tokens(0, 5))
    await store.append_frames(sid, "r_1", tokens(5, 5))
    assert await store.read_frames(sid, "r_1", -1) == tokens(0, 10)
    assert [f["seq"] for f in await store.read_frames(sid, "r_1", 6) or []] == [7, 8, 9]
    assert await store.read_frames(sid, "r_1", 9) == []


async def test_done_frame_is_always_returned(backend: Backend) -> None:
    store = backend.make()
    sid = new_session_id()
    done = {"type": "done", "response_id": "r_1", "last_seq": 2, "finish_reason": "stop"}
    await store.append_frames(sid, "r_1", [*tokens(0, 3), done])
    assert await store.read_frames(sid, "r_1", 2) == [done]
    assert await store.read_frames(sid, "r_1", 0) == [*tokens(1, 2), done]


async def test_replay_logs_are_per_response(backend: Backend) -> None:
    store = backend.make()
    sid = new_session_id()
    await store.append_frames(sid, "r_1", tokens(0, 2, "r_1"))
    await store.append_frames(sid, "r_2", tokens(0, 3, "r_2"))
    assert await store.read_frames(sid, "r_1", -1) == tokens(0, 2, "r_1")
    assert await store.read_frames(sid, "r_2", -1) == tokens(0, 3, "r_2")
    assert await store.read_frames(sid, "r_3", -1) is None


async def test_replay_log_keeps_only_the_newest_frames(backend: Backend) -> None:
    store = backend.make(replay_frames=5)
    sid = new_session_id()
    for i in range(0, 12, 3):
        await store.append_frames(sid, "r_1", tokens(i, 3))
    assert await store.read_frames(sid, "r_1", -1) == tokens(7, 5)
    assert await store.read_frames(sid, "r_1", 8) == tokens(9, 3)
    assert await store.read_frames(sid, "r_1", 11) == []


async def test_frames_without_seq_do_not_hide_tokens(backend: Backend) -> None:
    store = backend.make()
    sid = new_session_id()
    notice = {"type": "error", "response_id": "r_1", "code": "attachment_unsupported"}
    await store.append_frames(sid, "r_1", [*tokens(0, 3), notice, *tokens(3, 3)])
    assert await store.read_frames(sid, "r_1", 3) == tokens(4, 2)
    assert await store.read_frames(sid, "r_1", 0) == tokens(1, 5)


async def test_replay_log_expires(backend: Backend) -> None:
    store = backend.make(replay_ttl_s=1.0)
    sid = new_session_id()
    await store.append_frames(sid, "r_1", tokens(0, 2))

    async def gone() -> bool:
        return await store.read_frames(sid, "r_1", -1) is None

    assert not await gone()
    assert await backend.eventually(1.0, gone)


# ---------------------------------------------------------------- concurrency
async def test_concurrent_saves_leave_one_whole_record(backend: Backend) -> None:
    store = backend.make()
    s, _ = make_session()
    await store.create(s)

    def version(i: int) -> Session:
        v = Session.from_dict(s.to_dict())
        v.request_count = i
        v.history = [["user", f"v{i}-{j}"] for j in range(i)]
        return v

    await asyncio.gather(*(store.save(version(i)) for i in range(1, 41)))
    got = await store.load(s.session_id)
    assert 1 <= got.request_count <= 40
    assert got.history == version(got.request_count).history  # never a mix of two saves


async def test_concurrent_appends_lose_no_frame(backend: Backend) -> None:
    store = backend.make()
    sid = new_session_id()
    await asyncio.gather(*(store.append_frames(sid, "r_1", tokens(i * 4, 4)) for i in range(25)))
    frames = await store.read_frames(sid, "r_1", -1) or []
    assert sorted(f["seq"] for f in frames) == list(range(100))
    for i in range(25):  # each batch stays in one piece
        seqs = [f["seq"] for f in frames if f["seq"] // 4 == i]
        assert seqs == [i * 4 + k for k in range(4)]


async def test_two_stores_on_one_backend_see_each_others_writes(backend: Backend) -> None:
    if backend.name == "memory":
        pytest.skip("the memory store lives in one process")
    a, b = backend.make(), backend.make()
    s, token = make_session(history=[["user", "from a"]])
    await a.create(s)
    got = await b.load(s.session_id)
    assert got.history == [["user", "from a"]] and got.token_matches(token)
    await b.append_frames(s.session_id, "r_1", tokens(0, 3))
    assert await a.read_frames(s.session_id, "r_1", 0) == tokens(1, 2)


async def test_save_from_a_superseded_copy_is_ignored(backend: Backend) -> None:
    """A gateway still holding the conversation after the client resumed elsewhere cannot undo that."""
    if backend.name == "memory":
        pytest.skip("one process: there is no other gateway's copy")
    a, b = backend.make(), backend.make()
    s, _ = make_session(history=[["user", "hi"]])
    await a.create(s)
    moved = await b.load(s.session_id)
    new_token = new_resume_token()
    moved.token_digest = token_digest(new_token)  # resumed on b: the token rotates
    await b.save(moved)
    s.history.append(["assistant", "late write from a"])
    await a.save(s)  # a finishes late, with its old copy
    got = await b.load(s.session_id)
    assert got.token_matches(new_token)
    assert got.history == [["user", "hi"]]
    moved.history.append(["user", "more"])
    await b.save(moved)  # the new owner goes on saving
    assert (await a.load(s.session_id)).history == [["user", "hi"], ["user", "more"]]


async def test_token_rotation_is_compare_and_set(backend: Backend) -> None:
    """Two gateways resume one session with one token at once: exactly one rotation wins,
    and the old token's digest is retired (a late save carrying it is ignored)."""
    a, b = backend.make(), backend.make()
    if backend.name == "memory":
        b = a  # one process, one store
    s, _ = make_session(history=[["user", "hi"]])
    await a.create(s)
    old = s.token_digest
    copies = [await a.load(s.session_id), await b.load(s.session_id)]
    tokens = [new_resume_token(), new_resume_token()]
    for copy, token in zip(copies, tokens, strict=True):
        copy.token_digest = token_digest(token)
    won = await asyncio.gather(a.rotate(copies[0], old), b.rotate(copies[1], old))
    assert sorted(won) == [False, True]
    winner = tokens[won.index(True)]
    assert (await a.load(s.session_id)).token_matches(winner)
    assert (await b.load(s.session_id)).token_matches(winner)
    assert not await a.rotate(copies[won.index(False)], old)  # the old token stays spent
    s.history.append(["assistant", "late write with the old token"])
    await a.save(s)
    got = await b.load(s.session_id)
    assert got.token_matches(winner) and got.history == [["user", "hi"]]


async def test_rotation_of_a_session_whose_creation_is_still_queued(backend: Backend) -> None:
    """A gateway rotates before its queued create reached the store: the rotation
    writes the record, and the queued create (old digest) no longer lands."""
    store = backend.make()
    s, _ = make_session()
    old = s.token_digest
    rotated = Session.from_dict(s.to_dict())
    token = new_resume_token()
    rotated.token_digest = token_digest(token)
    assert await store.rotate(rotated, old)
    await store.create(s)  # the queued write arrives late
    assert (await store.load(s.session_id)).token_matches(token)


async def test_a_burst_of_calls_is_served(backend: Backend) -> None:
    store = backend.make(**({"max_connections": 4} if backend.name == "redis" else {}))
    sessions = [make_session()[0] for _ in range(200)]
    await asyncio.gather(*(store.create(s) for s in sessions))
    loaded = await asyncio.gather(*(store.load(s.session_id) for s in sessions))
    assert [s.session_id for s in loaded] == [s.session_id for s in sessions]


async def test_healthy(backend: Backend) -> None:
    assert await backend.make().healthy()


async def test_a_store_that_answers_is_available(backend: Backend) -> None:
    store = backend.make()
    assert store.available
    s, _ = make_session()
    await store.create(s)
    await store.load(s.session_id)
    assert store.available and await store.healthy() and store.available


# ---------------------------------------------------------------- redis failures
@pytest.mark.redis
async def test_redis_down_raises_store_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisSessionStore(f"redis://127.0.0.1:{port}/0", op_timeout_s=0.5)
    try:
        assert not await store.healthy()
        assert not store.available
        with pytest.raises(StoreUnavailable):
            await store.load(new_session_id())
        s, _ = make_session()
        with pytest.raises(StoreError):
            await store.save(s)
        with pytest.raises(StoreError):
            await store.append_frames(s.session_id, "r_1", tokens(0, 1))
    finally:
        await store.close()


@pytest.mark.redis
async def test_silent_redis_raises_store_timeout() -> None:
    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        store = RedisSessionStore(f"redis://127.0.0.1:{port}/0", op_timeout_s=0.3)
        try:
            with pytest.raises(StoreTimeout):
                await store.load(new_session_id())
            assert not await store.healthy()
        finally:
            await store.close()


@pytest.mark.redis
async def test_store_recovers_when_redis_comes_back(redis_factory: Any) -> None:
    server = redis_factory()
    store = RedisSessionStore(server.url, op_timeout_s=0.5)
    try:
        s, _ = make_session()
        await store.create(s)
        assert store.available
        server.kill()
        with pytest.raises(StoreError):
            await store.load(s.session_id)
        assert not store.available  # readiness reads this: unavailable while redis is down
        assert not await store.healthy()
        assert not store.available
        server.start()
        assert await store.healthy()
        assert store.available  # and available again once it answers
        await store.save(s)
        assert (await store.load(s.session_id)).session_id == s.session_id
        server.kill()
        assert not await store.healthy() and not store.available  # a probe alone notices the outage too
        server.start()
        await store.save(s)  # so does a call that succeeds again
        assert store.available
    finally:
        await store.close()
