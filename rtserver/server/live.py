"""A conversation as the gateway holds it while a socket (or its response) is alive.

The gateway that owns a ``LiveSession`` is the only writer of its session. The
active response belongs to the session, not to the socket: when the socket drops
mid-response, generation goes on for ``resume_grace_s`` so a resuming client can
pick up the stream; frames of the response are kept (``frames``) for replay.

Flow control: a response whose worker stream has a window (``ActiveResponse.credit``)
gets credit back as its token frames leave the socket's outbox (``Outbox.charge``), at
once while no socket is attached, and for every queued frame when the socket goes. A
stream paused by a socket that takes nothing for ``slow_consumer_timeout_s`` is closed
with 4008 (the last resort, as for a full outbox).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rtserver.codes import CloseCode
from rtserver.sessions.base import Session

if TYPE_CHECKING:
    from rtserver.server.connection import Connection
    from rtserver.workers.client import Credit


@dataclass(slots=True)
class ActiveResponse:
    response_id: str
    message_id: str
    task: asyncio.Task[None] | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    routed: bool = False
    next_seq: int = 0
    unlogged: list[dict[str, Any]] = field(default_factory=list)  # token frames sent, not yet in the replay log
    credit: Credit | None = None  # the worker stream's window, when it has one
    watching: bool = False  # a stall watch is armed for a paused stream


@dataclass(slots=True)
class LiveSession:
    session: Session
    route: Any = None  # rtserver.routing.router.RouteState | None
    _conn: Connection | None = None
    response: ActiveResponse | None = None
    responses: dict[str, ActiveResponse] = field(default_factory=dict)  # recent, for replay
    detach_timer: asyncio.TimerHandle | None = None

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @property
    def conn(self) -> Connection | None:
        return self._conn

    @conn.setter
    def conn(self, conn: Connection | None) -> None:
        old = self._conn
        self._conn = conn
        if old is not None and old is not conn:
            old.outbox.forgive()  # what it still holds is never written; resume replays it

    def emit(self, frame: dict[str, Any]) -> None:
        """Record a frame of the active response and send it to the attached socket."""
        resp = self.response
        credit = None
        if resp is not None and frame.get("response_id") == resp.response_id:
            resp.frames.append(frame)
            if frame.get("type") == "token":
                credit = resp.credit
        conn = self._conn
        if conn is not None:
            conn.send(frame)
            if credit is not None:
                conn.outbox.charge(credit)
                if credit.paused and resp is not None and not resp.watching:
                    _watch_stall(conn, resp, credit)
        elif credit is not None:
            credit.ack(1)


def _watch_stall(conn: Connection, resp: ActiveResponse, credit: Credit) -> None:
    """Close ``conn`` with 4008 if ``credit`` stays paused with no progress for the slow-consumer timeout."""
    timeout = conn.gw.settings.slow_consumer_timeout_s
    mark = credit.acked
    resp.watching = True
    loop = asyncio.get_running_loop()

    def check() -> None:
        nonlocal mark
        if resp.finished or resp.credit is not credit or not credit.paused:
            resp.watching = False
            return
        if credit.acked == mark:
            resp.watching = False
            conn.close(CloseCode.SLOW_CONSUMER, "client is not reading fast enough")
            return
        mark = credit.acked
        loop.call_later(timeout, check)

    loop.call_later(timeout, check)
