"""A conversation as the gateway holds it while a socket (or its response) is alive.

A ``LiveSession`` pairs the pure ``ConversationMachine`` (the session record, the
responses' frames, the turn rules) with what only the running gateway has: the
attached socket, the task generating the active response, its worker stream's
credit, and the grace timer of a detached session.

The gateway that owns a ``LiveSession`` is the only writer of its session. The
active response belongs to the session, not to the socket: when the socket drops
mid-response, generation goes on for ``resume_grace_s`` so a resuming client can
pick up the stream from the frames the machine keeps.

Flow control: a response whose worker stream has a window (``credit``) gets credit
back as its token frames leave the socket's outbox and the socket holds at most 64 KiB
unsent (``Outbox.charge``; server/outbox.py), at once while no socket is attached, and
for every queued frame when the socket goes. A stream
paused by a socket that takes nothing for ``slow_consumer_timeout_s`` is closed with
4008 (the last resort, as for a full outbox).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rtserver.codes import CloseCode
from rtserver.protocol.machine import ConversationMachine
from rtserver.sessions.base import Session

if TYPE_CHECKING:
    from rtserver.server.connection import Connection
    from rtserver.workers.client import Credit


@dataclass(slots=True)
class LiveSession:
    machine: ConversationMachine
    route: Any = None  # rtserver.routing.router.RouteState | None
    _conn: Connection | None = None
    task: asyncio.Task[None] | None = None  # generating the active response
    credit: Credit | None = None  # the active response's worker-stream window, when it has one
    watching: bool = False  # a stall watch is armed for a paused stream
    detach_timer: asyncio.TimerHandle | None = None

    @property
    def session(self) -> Session:
        return self.machine.session

    @property
    def session_id(self) -> str:
        return self.machine.session.session_id

    @property
    def streaming(self) -> bool:
        return self.machine.active is not None

    @property
    def conn(self) -> Connection | None:
        return self._conn

    @conn.setter
    def conn(self, conn: Connection | None) -> None:
        old = self._conn
        self._conn = conn
        if old is not None and old is not conn:
            old.outbox.forgive()  # what it still holds is never written; resume replays it

    def emit(self, frame: dict[str, Any], *, token: bool = False) -> None:
        """Send a frame to the attached socket; a token frame charges the stream's credit."""
        credit = self.credit if token else None
        conn = self._conn
        if conn is not None:
            conn.send(frame)
            if credit is not None:
                conn.outbox.charge(credit)
                if credit.paused and not self.watching:
                    _watch_stall(conn, self, credit)
        elif credit is not None:
            credit.ack(1)

    def clear_stream(self) -> None:
        """The active response ended: its task and credit go."""
        self.task = None
        self.credit = None


def _watch_stall(conn: Connection, live: LiveSession, credit: Credit) -> None:
    """Close ``conn`` with 4008 if ``credit`` stays paused with no progress for the slow-consumer timeout."""
    timeout = conn.gw.settings.slow_consumer_timeout_s
    mark = credit.acked
    live.watching = True
    loop = asyncio.get_running_loop()

    def check() -> None:
        nonlocal mark
        if live.credit is not credit or not credit.paused:
            live.watching = False
            return
        if credit.acked == mark:
            live.watching = False
            conn.close(CloseCode.SLOW_CONSUMER, "client is not reading fast enough")
            return
        mark = credit.acked
        loop.call_later(timeout, check)

    loop.call_later(timeout, check)
