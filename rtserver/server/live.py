"""A conversation as the gateway holds it while a socket (or its response) is alive.

The gateway that owns a ``LiveSession`` is the only writer of its session. The
active response belongs to the session, not to the socket: when the socket drops
mid-response, generation goes on for ``resume_grace_s`` so a resuming client can
pick up the stream; frames of the response are kept (``frames``) for replay.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rtserver.sessions.base import Session

if TYPE_CHECKING:
    from rtserver.server.connection import Connection


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


@dataclass(slots=True)
class LiveSession:
    session: Session
    route: Any = None  # rtserver.routing.router.RouteState | None
    conn: Connection | None = None
    response: ActiveResponse | None = None
    responses: dict[str, ActiveResponse] = field(default_factory=dict)  # recent, for replay
    detach_timer: asyncio.TimerHandle | None = None

    @property
    def session_id(self) -> str:
        return self.session.session_id

    def emit(self, frame: dict[str, Any]) -> None:
        """Record a frame of the active response and send it to the attached socket."""
        resp = self.response
        if resp is not None and frame.get("response_id") == resp.response_id:
            resp.frames.append(frame)
        conn = self.conn
        if conn is not None:
            conn.send(frame)
