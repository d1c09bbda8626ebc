"""Write-through of live sessions and replay frames to the store, off the token path.

The gateway owns each live session in memory. ``save(session)`` and
``frames(session_id, response_id, frames)`` queue a write and return at once; one
background task performs them in the order they were queued (a save is skipped when
a newer save of the same session is already queued, so the latest state wins and
order holds). A failing store loses nothing: the write is retried with backoff,
and ``degraded`` is True until a write succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from rtserver.exceptions import StoreError
from rtserver.metrics import Metrics
from rtserver.sessions.base import Session, SessionStore

log = logging.getLogger("rtserver.sessions")


class SessionWriter:
    def __init__(self, store: SessionStore, metrics: Metrics, *, max_pending: int = 100_000) -> None:
        self.store = store
        self.metrics = metrics
        self._ops: deque[tuple[str, Any]] = deque()
        self._latest_save: dict[str, int] = {}
        self._seq = 0
        self._max_pending = max_pending
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.degraded = False
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="session-writer")

    def _push(self, op: tuple[str, Any]) -> None:
        if len(self._ops) >= self._max_pending:
            # Bounded even during a long outage: drop the oldest replay frames first.
            for i, (kind, _) in enumerate(self._ops):
                if kind == "frames":
                    del self._ops[i]
                    self.dropped += 1
                    break
        self._ops.append(op)
        self._idle.clear()
        self._wake.set()

    def save(self, session: Session) -> None:
        self._seq += 1
        self._latest_save[session.session_id] = self._seq
        self._push(("save", (self._seq, session.session_id, session.to_dict())))

    def frames(self, session_id: str, response_id: str, frames: list[dict[str, Any]]) -> None:
        if frames:
            self._push(("frames", (session_id, response_id, frames)))

    @property
    def pending(self) -> int:
        return len(self._ops)

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is written (or ``timeout``); True if it was."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 2.0) -> None:
        await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _perform(self, kind: str, arg: Any) -> None:
        if kind == "save":
            seq, sid, data = arg
            if self._latest_save.get(sid) != seq:
                return  # a newer save of this session is queued
            await self.store.save(Session.from_dict(data))
            if self._latest_save.get(sid) == seq:
                del self._latest_save[sid]
        else:
            sid, rid, frames = arg
            await self.store.append_frames(sid, rid, frames)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ops:
                op = self._ops[0]
                kind, arg = op
                t0 = time.perf_counter()
                try:
                    await self._perform(kind, arg)
                except (StoreError, OSError) as exc:
                    self.metrics.store_errors.labels(kind).inc()
                    if not self.degraded:
                        log.warning("session store write failed, will retry: %s", exc)
                    self.degraded = True
                    self.metrics.store_up.set(0)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                if self._ops and self._ops[0] is op:
                    self._ops.popleft()
                self.metrics.store_seconds.labels(kind).observe(time.perf_counter() - t0)
                if self.degraded:
                    log.info("session store writes recovered")
                self.degraded = False
                self.metrics.store_up.set(1)
                backoff = 0.1
            self._idle.set()
