"""What the gateway's parts see of the ``Gateway`` (server/app.py): a Protocol, so that
the modules it is wired from type-check against it without importing app.py (no
import cycle, even for type checking)."""

from __future__ import annotations

import asyncio
import ipaddress
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rtserver.auth import TokenVerifier
from rtserver.config import Settings
from rtserver.metrics import Metrics
from rtserver.protocol.frames import Hello, Limits, Message
from rtserver.routing.contract import GatewayRouter
from rtserver.sessions.base import Session, SessionStore
from rtserver.sessions.writer import SessionWriter
from rtserver.workers.pool import WorkerPool

if TYPE_CHECKING:
    from rtserver.server.connection import Connection
    from rtserver.server.live import LiveSession


class GatewayContext(Protocol):
    settings: Settings
    limits: Limits
    metrics: Metrics
    web_root: Path
    pool: WorkerPool
    store: SessionStore | None
    router: GatewayRouter | None
    writer: SessionWriter | None
    verifier: TokenVerifier | None
    live: dict[str, LiveSession]
    conns: set[Connection]
    ip_counts: dict[str, int]
    proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    draining: bool
    embedded: Any
    executor: ThreadPoolExecutor | None

    def track(self, task: asyncio.Task[Any]) -> None: ...

    def readiness(self) -> dict[str, Any]: ...

    def register(self, session: Session) -> LiveSession: ...

    def forget(self, live: LiveSession) -> None: ...

    def expire_live(self, live: LiveSession) -> None: ...

    def detach(self, conn: Connection) -> None: ...

    async def open_session(self, conn: Connection, hello: Hello | None) -> LiveSession: ...

    async def start_response(self, conn: Connection, msg: Message, received: float) -> None: ...

    def cancel_response(self, conn: Connection) -> None: ...
