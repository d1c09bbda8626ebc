"""In-memory session store: the embedded default. Same semantics as Redis, one process.

Expiry is checked on access and by a sweeper task (``start()``); expired ids leave a
tombstone for ``tombstone_s`` so ``load`` can tell "expired" from "never existed".
The clock is injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from rtserver.exceptions import SessionExpired, SessionNotFound
from rtserver.sessions.base import Session


class MemorySessionStore:
    name = "memory"
    available = True  # one process: the store is there whenever the gateway is

    def __init__(
        self,
        *,
        ttl_s: float = 1800.0,
        replay_frames: int = 2048,
        replay_ttl_s: float = 300.0,
        tombstone_s: float = 86400.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._replay_cap = replay_frames
        self._replay_ttl = replay_ttl_s
        self._tombstone_s = tombstone_s
        self._clock = clock
        self._data: dict[str, tuple[float, dict[str, Any]]] = {}
        self._tombstones: dict[str, float] = {}
        self._retired: dict[str, set[str]] = {}  # token digests a rotation replaced
        self._frames: dict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def start(self, interval_s: float = 30.0) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(interval_s))

    async def _sweep_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.sweep()

    def sweep(self) -> int:
        """Drop expired sessions and replay logs; returns how many sessions went."""
        now = self._clock()
        gone = [sid for sid, (exp, _) in self._data.items() if exp <= now]
        for sid in gone:
            del self._data[sid]
            self._tombstones[sid] = now + self._tombstone_s
        for key in [k for k, (exp, _) in self._frames.items() if exp <= now]:
            del self._frames[key]
        for sid in [s for s, exp in self._tombstones.items() if exp <= now]:
            del self._tombstones[sid]
            self._retired.pop(sid, None)
        return len(gone)

    def __len__(self) -> int:
        return len(self._data)

    async def create(self, session: Session) -> None:
        await self.save(session)

    async def load(self, session_id: str) -> Session:
        entry = self._data.get(session_id)
        now = self._clock()
        if entry is not None and entry[0] <= now:
            del self._data[session_id]
            self._tombstones[session_id] = now + self._tombstone_s
            entry = None
        if entry is None:
            if session_id in self._tombstones:
                raise SessionExpired(session_id)
            raise SessionNotFound(session_id)
        self._data[session_id] = (now + self._ttl, entry[1])
        return Session.from_dict(entry[1])

    async def save(self, session: Session) -> None:
        sid = session.session_id
        if session.token_digest in self._retired.get(sid, ()):
            return  # a superseded copy (its token was rotated since): ignored
        entry = self._data.get(sid)
        now = self._clock()
        if entry is not None and entry[0] <= now:
            del self._data[sid]
            self._tombstones[sid] = now + self._tombstone_s
            entry = None
        if entry is None and sid in self._tombstones:
            return  # expired: a late write does not revive it
        if entry is not None and entry[1]["token_digest"] != session.token_digest:
            self._retired.setdefault(sid, set()).add(entry[1]["token_digest"])
        self._data[sid] = (self._clock() + self._ttl, session.to_dict())

    async def rotate(self, session: Session, old_digest: str) -> bool:
        sid = session.session_id
        if old_digest in self._retired.get(sid, ()):
            return False
        entry = self._data.get(sid)
        if entry is not None and entry[0] > self._clock() and entry[1]["token_digest"] != old_digest:
            return False
        self._retired.setdefault(sid, set()).add(old_digest)
        self._data[sid] = (self._clock() + self._ttl, session.to_dict())
        return True

    async def touch(self, session_id: str) -> None:
        entry = self._data.get(session_id)
        if entry is not None and entry[0] > self._clock():  # an expired session stays expired
            self._data[session_id] = (self._clock() + self._ttl, entry[1])

    async def delete(self, session_id: str) -> None:
        self._data.pop(session_id, None)
        self._retired.pop(session_id, None)
        for key in [k for k in self._frames if k[0] == session_id]:
            del self._frames[key]

    async def append_frames(self, session_id: str, response_id: str, frames: list[dict[str, Any]]) -> None:
        key = (session_id, response_id)
        _, log = self._frames.get(key, (0.0, []))
        log.extend(frames)
        if len(log) > self._replay_cap:
            del log[: len(log) - self._replay_cap]
        self._frames[key] = (self._clock() + self._replay_ttl, log)

    async def read_frames(self, session_id: str, response_id: str, after: int) -> list[dict[str, Any]] | None:
        entry = self._frames.get((session_id, response_id))
        if entry is None or entry[0] <= self._clock():
            return None
        return [f for f in entry[1] if f.get("seq", -1) > after or f.get("type") == "done"]

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
