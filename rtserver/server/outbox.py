"""A bounded per-connection outbox, so token producers never wait on a slow browser.

Frames are plain dicts, encoded by the writer task. ``put`` never blocks: when the
queue already holds ``coalesce_at`` frames, a token frame is merged into the last
queued token frame of the same response (its ``text`` grows, up to
``max_merge_chars``, and ``seq_last`` marks the range), so a socket that is a little
behind loses nothing. When ``limit`` frames are queued ``put`` returns False: the
caller must then close the socket with ``CloseCode.SLOW_CONSUMER`` (it must also do
so when the writer makes no progress for too long: see ``Connection.send``).

Credit (flow control to the worker): ``charge(credit)`` right after queueing a token
frame makes that frame owe one acknowledgement to its worker stream, paid
(``credit.ack``) when the writer takes the frame, or at once if it was not queued.
A merged frame carries the debts of everything merged into it; ``forgive()`` pays all
debts of frames that will never be written (the socket is gone; the replay log has them).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol


class Ack(Protocol):
    def ack(self, n: int = 1) -> None: ...


class Outbox:
    __slots__ = ("_coalesce_at", "_limit", "_max_merge", "_owed", "_q", "_waiter", "closed", "coalesced")

    def __init__(self, limit: int, *, max_merge_chars: int = 65536) -> None:
        self._q: deque[dict[str, Any]] = deque()
        self._max_merge = max_merge_chars
        self._limit = limit
        self._coalesce_at = max(1, limit // 2)
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.coalesced = 0
        self._owed: dict[int, list[Ack]] = {}  # id(queued frame) → credits it pays when taken

    def __len__(self) -> int:
        return len(self._q)

    @property
    def backed_up(self) -> bool:
        """True once the writer lags far enough that tokens are being merged."""
        return len(self._q) >= self._coalesce_at

    def put(self, frame: dict[str, Any]) -> bool:
        """Queue ``frame``; False when the outbox is full (the consumer is too slow)."""
        if self.closed:
            return True
        q = self._q
        if len(q) >= self._coalesce_at and frame.get("type") == "token" and q:
            last = q[-1]
            if (last.get("type") == "token" and last["response_id"] == frame["response_id"]
                    and len(last["text"]) < self._max_merge):
                old = q[-1]
                last = q[-1] = dict(old)  # a copy: the replay log keeps the frames as sent
                if (owed := self._owed.pop(id(old), None)) is not None:
                    self._owed[id(last)] = owed
                last["text"] += frame["text"]
                last["seq_last"] = frame["seq"]
                last["stats"] = frame["stats"]
                self.coalesced += 1
                return True
        if len(q) >= self._limit:
            return False
        q.append(frame)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        return True

    def put_control(self, frame: dict[str, Any]) -> None:
        """Queue a control record past every limit (used once, to close after what is queued)."""
        self._q.append(frame)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def charge(self, credit: Ack) -> None:
        """The frame just ``put`` owes ``credit`` one acknowledgement, paid when it is taken."""
        if self.closed or not self._q:
            credit.ack(1)
            return
        self._owed.setdefault(id(self._q[-1]), []).append(credit)

    def forgive(self) -> None:
        """Pay every debt now: the queued frames will not be written (the socket is gone)."""
        owed, self._owed = self._owed, {}
        for credits in owed.values():
            for credit in credits:
                credit.ack(1)

    async def get(self) -> dict[str, Any]:
        while not self._q:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        return self._take()

    def take_nowait(self, most: int) -> list[dict[str, Any]]:
        """Up to ``most`` queued frames, oldest first, without waiting (the writer's batch)."""
        return [self._take() for _ in range(min(most, len(self._q)))]

    def _take(self) -> dict[str, Any]:
        """The oldest frame; the credit it owes is paid now, since the writer has it."""
        frame = self._q.popleft()
        if self._owed and (owed := self._owed.pop(id(frame), None)) is not None:
            for credit in owed:
                credit.ack(1)
        return frame

    def drain_nowait(self) -> list[dict[str, Any]]:
        out = list(self._q)
        self._q.clear()
        self.forgive()
        return out
