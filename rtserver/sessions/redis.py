"""Redis session store: gateways keep no state of their own, any of them can resume.

Keys (``{…}`` is a Redis Cluster hash tag, so one session's keys share a slot)::

    {prefix}:sess:{sid}          hash: data = msgpack Session.to_dict(), digest = its token digest;
                                 PX = ttl (sliding)
    {prefix}:seen:{sid}          tombstone "1", PX = ttl + tombstone: expired vs never-existed
    {prefix}:retired:{sid}       set of token digests a resume replaced, PX = ttl + tombstone
    {prefix}:frames:{sid}:{rid}  list of msgpack frames of one response, capped, PX = replay ttl
    {prefix}:resp:{sid}          set of response ids with a frame log (to delete them with the session)

Contract as in ``sessions/base.py``. Every call is bounded by ``op_timeout_s`` and
raises ``StoreTimeout`` (slow) or ``StoreUnavailable`` (refused, reset, protocol
error); nothing else escapes. ``load``, ``save`` and ``rotate`` are Lua scripts, ``touch``,
``delete`` and ``append_frames`` MULTI/EXEC transactions: each is atomic.

Stale writers: a save that changes the token digest (a resume rotated the token)
retires the previous digest, and a later save still carrying a retired digest is
ignored. So a gateway that lost the conversation to another one (the client
resumed elsewhere while the old socket looked alive, or while a response was still
finishing there) cannot overwrite the newer record and lock the client out.
``available`` is the outcome of the last call (``healthy()`` refreshes it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rtserver.exceptions import SessionExpired, SessionNotFound, StoreTimeout, StoreUnavailable
from rtserver.sessions.base import Session

T = TypeVar("T")
log = logging.getLogger("rtserver.sessions")

# KEYS: sess, seen.  ARGV: ttl_ms, seen_ms.  → {1, data} | {2} (expired) | {0} (not found)
_LOAD = """
local v = redis.call('HGET', KEYS[1], 'data')
if v then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return {1, v}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {2} end
return {0}
"""

# KEYS: sess, seen, retired.  ARGV: data, digest, ttl_ms, seen_ms.
# → 1 saved | 0 stale writer, ignored | 2 expired (gone, its tombstone stands), ignored
_SAVE = """
if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
local prev = redis.call('HGET', KEYS[1], 'digest')
if prev and prev ~= ARGV[2] then
  redis.call('SADD', KEYS[3], prev)
end
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'digest', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
return 1
"""


# KEYS: sess, seen, retired.  ARGV: data, new digest, old digest, ttl_ms, seen_ms.
# → 1 rotated | 0 refused (the old digest is retired, or the stored one is another)
_ROTATE = """
if redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 1 then return 0 end
local cur = redis.call('HGET', KEYS[1], 'digest')
if cur and cur ~= ARGV[3] then return 0 end
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'digest', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return 1
"""


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _unpack(data: bytes | str) -> Any:
    return msgpack.unpackb(data, raw=False)


def _continues(frame: dict[str, Any], after: int) -> bool:
    """True when ``frame`` is the one right after seq ``after`` (the next token, or done)."""
    if frame.get("type") == "done":
        return bool(frame.get("last_seq", after) == after)
    return bool(frame.get("seq") == after + 1)


class RedisSessionStore:
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "rt",
        ttl_s: float = 1800.0,
        replay_frames: int = 2048,
        replay_ttl_s: float = 300.0,
        tombstone_s: float = 86400.0,
        op_timeout_s: float = 1.0,
        max_connections: int = 64,
        client: aioredis.Redis | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._seen_ms = self._ttl_ms + int(tombstone_s * 1000)
        self._replay_cap = replay_frames
        self._replay_ms = max(1, int(replay_ttl_s * 1000))
        self._timeout = op_timeout_s
        # A blocking pool: a burst of calls (every client resuming after a gateway restart)
        # waits for one of ``max_connections`` connections instead of failing.
        self._redis: aioredis.Redis = client or aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=op_timeout_s,
                socket_timeout=op_timeout_s,
                socket_connect_timeout=op_timeout_s,
                health_check_interval=30,
            )
        )
        self._load_script = self._redis.register_script(_LOAD)
        self._save_script = self._redis.register_script(_SAVE)
        self._rotate_script = self._redis.register_script(_ROTATE)
        self.stale_saves = 0  # saves ignored because their token digest was retired
        self.available = True

    # ------------------------------------------------------------------ keys
    def _sess(self, sid: str) -> str:
        return f"{self.prefix}:sess:{{{sid}}}"

    def _seen(self, sid: str) -> str:
        return f"{self.prefix}:seen:{{{sid}}}"

    def _frames(self, sid: str, rid: str) -> str:
        return f"{self.prefix}:frames:{{{sid}}}:{rid}"

    def _retired(self, sid: str) -> str:
        return f"{self.prefix}:retired:{{{sid}}}"

    def _resp(self, sid: str) -> str:
        return f"{self.prefix}:resp:{{{sid}}}"

    # ------------------------------------------------------------------ calls
    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one store operation under the timeout, mapping failures to ``StoreError``."""
        try:
            async with asyncio.timeout(self._timeout):
                result = await fn()
        except (TimeoutError, RedisTimeoutError):
            self.available = False
            raise StoreTimeout(f"redis {what} took longer than {self._timeout:g} s") from None
        except (RedisError, OSError) as exc:
            self.available = False
            raise StoreUnavailable(f"redis {what} failed: {exc}") from None
        self.available = True
        return result

    async def create(self, session: Session) -> None:
        await self.save(session)

    async def load(self, session_id: str) -> Session:
        sid = session_id
        reply = await self._call(
            "load",
            lambda: self._load_script(keys=[self._sess(sid), self._seen(sid)], args=[self._ttl_ms, self._seen_ms]),
        )
        kind = int(reply[0])
        if kind == 1:
            return Session.from_dict(_unpack(reply[1]))
        if kind == 2:
            raise SessionExpired(session_id)
        raise SessionNotFound(session_id)

    async def save(self, session: Session) -> None:
        sid = session.session_id
        data = _pack(session.to_dict())

        keys = [self._sess(sid), self._seen(sid), self._retired(sid)]
        args: list[bytes | str | int] = [data, session.token_digest, self._ttl_ms, self._seen_ms]
        saved = int(await self._call("save", lambda: self._save_script(keys=keys, args=args)))
        if saved == 0:
            self.stale_saves += 1
            log.info("ignored a stale save of session %s (resumed elsewhere since)", sid[:8])
        elif saved == 2:
            log.info("ignored a late save of session %s (it expired)", sid[:8])

    async def rotate(self, session: Session, old_digest: str) -> bool:
        sid = session.session_id
        keys = [self._sess(sid), self._seen(sid), self._retired(sid)]
        args: list[bytes | str | int] = [_pack(session.to_dict()), session.token_digest, old_digest,
                                         self._ttl_ms, self._seen_ms]
        return bool(int(await self._call("rotate", lambda: self._rotate_script(keys=keys, args=args))))

    async def touch(self, session_id: str) -> None:
        sid = session_id

        async def op() -> None:
            async with self._redis.pipeline(transaction=True) as p:
                p.pexpire(self._sess(sid), self._ttl_ms)
                p.pexpire(self._seen(sid), self._seen_ms)
                await p.execute()

        await self._call("touch", op)

    async def delete(self, session_id: str) -> None:
        sid = session_id

        async def op() -> None:
            rids = await self._redis.smembers(self._resp(sid))
            keys = [self._sess(sid), self._seen(sid), self._retired(sid), self._resp(sid)]
            keys += [self._frames(sid, r.decode() if isinstance(r, bytes) else str(r)) for r in rids]
            await self._redis.delete(*keys)

        await self._call("delete", op)

    async def append_frames(self, session_id: str, response_id: str, frames: list[dict[str, Any]]) -> None:
        if not frames:
            return
        key = self._frames(session_id, response_id)
        packed = [_pack(f) for f in frames]

        async def op() -> None:
            async with self._redis.pipeline(transaction=True) as p:
                p.rpush(key, *packed)
                p.ltrim(key, -self._replay_cap, -1)
                p.pexpire(key, self._replay_ms)
                p.sadd(self._resp(session_id), response_id)
                p.pexpire(self._resp(session_id), self._replay_ms)
                await p.execute()

        await self._call("append_frames", op)

    async def read_frames(self, session_id: str, response_id: str, after: int) -> list[dict[str, Any]] | None:
        key = self._frames(session_id, response_id)

        async def op() -> list[dict[str, Any]] | None:
            # Token frames are logged in seq order, so the list index of seq n is n - (first seq):
            # read only the tail a follower has not seen, and the whole log if that guess misses.
            # (A trim between the two reads shifts the list left: caught by the check on frames[0].)
            head = await self._redis.lindex(key, 0)
            if head is None:
                return None  # never written (append needs >= 1 frame), expired or deleted
            first = _unpack(head).get("seq")
            start = after + 1 - first if isinstance(first, int) and after + 1 > first else 0
            frames = [_unpack(b) for b in await self._redis.lrange(key, start, -1)]
            if start and frames and not _continues(frames[0], after):
                frames = [_unpack(b) for b in await self._redis.lrange(key, 0, -1)]
            return frames

        frames = await self._call("read_frames", op)
        if frames is None:
            return None
        return [f for f in frames if f.get("seq", -1) > after or f.get("type") == "done"]

    async def healthy(self) -> bool:
        try:
            await self._call("ping", self._redis.ping)
        except (StoreTimeout, StoreUnavailable):
            return False
        return True

    async def close(self) -> None:
        await self._redis.aclose()
