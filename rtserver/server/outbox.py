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
(``credit.ack``) once the frame has left for the peer, or at once if it was not queued.
A merged frame carries the debts of everything merged into it; ``forgive()`` pays all
debts of frames that will never be written (the socket is gone; the replay log has them).

"Left for the peer": without a ``backlog`` probe, when the writer takes the frame. With
one (``socket_backlog(transport)``: the transport's buffer plus the kernel's unsent
send queue, in bytes), debts of taken frames are held while that backlog is above
``low_water`` and paid when it drops under it: re-checked at each take and every
``RECHECK_S`` while any are held. A client that stops reading is then paused at its
worker after about ``low_water`` bytes in the socket, not after the kernel's whole
send buffer (megabytes on loopback), so it stops costing the gateway tokens early.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import struct
import termios
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

LOW_WATER = 64 * 1024  # bytes handed to a socket and not yet sent, above which credit is held
RECHECK_S = 0.02  # how often held credit is re-checked while the writer has nothing to take


class Ack(Protocol):
    def ack(self, n: int = 1) -> None: ...


def socket_backlog(transport: Any) -> Callable[[], int] | None:
    """Bytes given to ``transport`` that its peer has not taken yet: the transport's write
    buffer plus the socket's kernel send queue (``TIOCOUTQ``; 0 where the OS has no such
    query). None when there is no transport to ask."""
    if transport is None or not hasattr(transport, "get_write_buffer_size"):  # uvloop's are no WriteTransport
        return None
    sock = transport.get_extra_info("socket")
    fd = sock.fileno() if sock is not None else -1
    probe_kernel = fd >= 0 and hasattr(termios, "TIOCOUTQ")
    zero = b"\0\0\0\0"

    def backlog() -> int:
        nonlocal probe_kernel
        if transport.is_closing():  # its fd may belong to another socket by now
            return 0
        n: int = transport.get_write_buffer_size()
        if probe_kernel:
            try:
                n += struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, zero))[0]
            except OSError:
                probe_kernel = False
        return n

    return backlog


class Outbox:
    __slots__ = ("_backlog", "_coalesce_at", "_held", "_limit", "_low_water", "_max_merge", "_owed", "_q",
                 "_recheck", "_waiter", "closed", "coalesced")

    def __init__(self, limit: int, *, max_merge_chars: int = 65536, backlog: Callable[[], int] | None = None,
                 low_water: int = LOW_WATER) -> None:
        """``backlog``: bytes handed to the socket and not yet sent (``socket_backlog``); with it,
        credit of taken frames is paid only while that is at most ``low_water``."""
        self._q: deque[dict[str, Any]] = deque()
        self._max_merge = max_merge_chars
        self._limit = limit
        self._coalesce_at = max(1, limit // 2)
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.coalesced = 0
        self._owed: dict[int, list[Ack]] = {}  # id(queued frame) → credits it pays when taken
        self._backlog = backlog
        self._low_water = low_water
        self._held: list[Ack] = []  # credits of frames taken, held while the socket is backed up
        self._recheck: asyncio.TimerHandle | None = None

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
        held, self._held = self._held, []
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        for credits in [*owed.values(), held]:
            for credit in credits:
                credit.ack(1)

    async def get(self) -> dict[str, Any]:
        while not self._q:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        frame = self._take()
        self._settle()
        return frame

    def take_nowait(self, most: int) -> list[dict[str, Any]]:
        """Up to ``most`` queued frames, oldest first, without waiting (the writer's batch)."""
        frames = [self._take() for _ in range(min(most, len(self._q)))]
        self._settle()
        return frames

    def _take(self) -> dict[str, Any]:
        """The oldest frame; the credit it owes is now owed by the socket (see ``_settle``)."""
        frame = self._q.popleft()
        if self._owed and (owed := self._owed.pop(id(frame), None)) is not None:
            self._held += owed
        return frame

    def _settle(self) -> None:
        """Pay the held credit unless the socket is backed up; then look again in ``RECHECK_S``."""
        self._recheck = None
        if not self._held:
            return
        if self._backlog is not None and not self.closed:
            with contextlib.suppress(Exception):  # a probe that fails holds nothing back
                if self._backlog() > self._low_water:
                    self._recheck = asyncio.get_running_loop().call_later(RECHECK_S, self._settle)
                    return
        held, self._held = self._held, []
        for credit in held:
            credit.ack(1)

    def drain_nowait(self) -> list[dict[str, Any]]:
        out = list(self._q)
        self._q.clear()
        self.forgive()
        return out
