"""The gateway: one lifespan that opens and closes every resource, and the registry
of the conversations it holds.

Path of a message: ``Connection`` decodes and admits it → ``turn.start_response`` →
router (bypass in µs, classifier off the loop) → pool picks the pinned worker →
``WorkerClient.generate`` → each worker event fed to the conversation's
``ConversationMachine`` → its actions carried out: frames to ``LiveSession.emit`` →
bounded outbox → socket; session and replay-log writes to the store off that path
(``SessionWriter``).

Modules, one job each: sockets.py (accepting a socket), connection.py (one socket),
resume.py (new session or resume), follow.py (replay), turn.py (one response),
resources.py (what the lifespan opens), live.py (a conversation held here).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection
from websockets.http11 import Request, Response

from rtserver.auth import TokenVerifier
from rtserver.codes import CloseCode
from rtserver.config import Settings
from rtserver.metrics import Metrics
from rtserver.protocol import events as ev
from rtserver.protocol.codec import SUBPROTOCOLS
from rtserver.protocol.frames import Hello, Message
from rtserver.protocol.machine import ConversationMachine, Policy
from rtserver.routing.contract import GatewayRouter
from rtserver.server import resources, resume, sockets, turn
from rtserver.server.connection import Connection
from rtserver.server.http import serve_http
from rtserver.server.live import LiveSession
from rtserver.sessions.base import Session, SessionStore
from rtserver.sessions.writer import SessionWriter
from rtserver.workers.pool import WorkerPool

log = logging.getLogger("rtserver.gateway")

WEB_ROOT = Path(__file__).resolve().parent.parent.parent / "web"


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        pool: WorkerPool | None = None,
        store: SessionStore | None = None,
        router: GatewayRouter | None = None,
    ) -> None:
        self.settings = settings
        self.limits = settings.limits()
        self.policy = Policy.from_settings(settings)
        self.metrics = Metrics()
        self.web_root = Path(settings.web_root) if settings.web_root else WEB_ROOT
        self.pool = pool or WorkerPool()
        self.store: SessionStore | None = store
        self.router: GatewayRouter | None = router
        self.writer: SessionWriter | None = None
        self.live: dict[str, LiveSession] = {}
        self.server: Server | None = None
        self.port = settings.port
        self.draining = False
        self.ready = False
        self.embedded: Any = None  # the embedded worker (server/embedded.py), when there is one
        self.executor: ThreadPoolExecutor | None = None  # the classifier's threads
        self.conns: set[Connection] = set()
        self.ip_counts: dict[str, int] = {}
        self.verifier = TokenVerifier.from_settings(settings)  # None: auth off
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]
        self._tasks: set[asyncio.Task[Any]] = set()

    # ================================================================= lifespan
    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[Gateway]:
        """Open store, router, workers and the listening socket; close them in reverse."""
        async with contextlib.AsyncExitStack() as stack:
            if self.store is None:
                self.store = await resources.open_store(self)
            stack.push_async_callback(self.store.close)
            self.writer = SessionWriter(self.store, self.metrics)
            self.writer.start()
            stack.push_async_callback(self.writer.close)
            if self.router is None:
                self.router = resources.open_router(self)
            if not self.pool.workers:
                await resources.open_workers(self, stack)
            else:
                await self.pool.start(wait=False)
            stack.push_async_callback(self.pool.close)
            self._watch_discovery()
            self.server = await self._listen()
            self.port = self.server.sockets[0].getsockname()[1] if self.settings.port == 0 else self.settings.port
            self.ready = True
            self.track(asyncio.create_task(resources.watch(self)))
            try:
                yield self
            finally:
                self.ready = False
                for t in self._tasks:
                    t.cancel()
                await self.shutdown(deadline_s=0.0)

    def _watch_discovery(self) -> None:
        s = self.settings
        if s.redis:  # remote workers register themselves in Redis (rtserver worker --redis)
            from rtserver.workers.discovery import DiscoveryWatcher

            watcher = DiscoveryWatcher(s.redis, self.pool, prefix=s.key_prefix,
                                       heartbeat_timeout_s=s.heartbeat_timeout_s)
            self.track(asyncio.create_task(watcher.run(), name="discovery"))

    async def _listen(self) -> Server:
        s = self.settings
        return await websockets.serve(
            self._handle,
            s.host,
            s.port,
            subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            process_request=self._process_request,
            select_subprotocol=sockets.select_subprotocol,
            # Frames up to 2x the limit get a frame_too_large error and the socket lives on;
            # beyond that the WebSocket layer closes with 1009 before buffering them.
            max_size=s.max_frame_bytes * 2 + 1024,
            open_timeout=s.handshake_timeout_s,
            ping_interval=s.ping_interval_s or None,
            ping_timeout=s.ping_timeout_s or None,
            compression=None,
            reuse_port=s.processes > 1 or None,  # rtserver serve --processes N (server/processes.py)
        )

    async def shutdown(self, deadline_s: float = 10.0) -> None:
        """Stop accepting; let responses finish up to ``deadline_s``; close the rest with 1012."""
        self.draining = True
        if self.embedded is not None:
            self.embedded.shutting_down()  # from now on its exit is expected: no restart
        if self.server is not None:
            self.server.close(close_connections=False)
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and any(ls.streaming for ls in self.live.values()):
            await asyncio.sleep(0.05)
        for conn in list(self.conns):
            conn.close(CloseCode.SERVICE_RESTART, "server restarting; resume elsewhere")
        cut = [ls.task for ls in self.live.values() if ls.task is not None]
        for task in cut:
            task.cancel()
        if cut:  # let each one end (done, replay log) before the last flush
            await asyncio.wait(cut, timeout=2.0)
        if self.writer is not None:
            await self.writer.flush(5.0)
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5.0)
        if self.executor is not None:
            self.executor.shutdown(wait=False)

    def readiness(self) -> dict[str, Any]:
        workers = [
            {"name": w.state.name, "model": w.state.model, "alive": w.alive, "active": w.state.active,
             "waiting": w.state.waiting, "draining": w.state.draining,
             "inflight": w.state.inflight, "admitting": w.state.admitting}
            for w in self.pool.workers
        ]
        store_ok = (self.writer is not None and not self.writer.degraded
                    and self.store is not None and self.store.available)
        if not self.ready or self.draining or not any(w["alive"] for w in workers):
            status = "unavailable"
        else:
            status = "ready" if store_ok else "degraded"
        return {
            "status": status,
            "store": {"backend": getattr(self.store, "name", "?"), "ok": store_ok,
                      "pending_writes": self.writer.pending if self.writer else 0},
            "workers": workers,
            "conversations": len(self.live),
        }

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a background task alive until it finishes (and cancel it at shutdown)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ================================================================= sockets
    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        return serve_http(self, request)

    async def _handle(self, ws: ServerConnection) -> None:
        await sockets.handle(self, ws)

    async def open_session(self, conn: Connection, hello: Hello | None) -> LiveSession:
        return await resume.open_session(self, conn, hello)

    async def start_response(self, conn: Connection, msg: Message, received: float) -> None:
        turn.start_response(self, conn, msg, received)

    def cancel_response(self, conn: Connection) -> None:
        turn.cancel_response(self, conn)

    # ================================================================= conversations held here
    def register(self, session: Session) -> LiveSession:
        live = LiveSession(machine=ConversationMachine(session, self.policy))
        self.live[session.session_id] = live
        self.metrics.conversations.set(len(self.live))
        return live

    def detach(self, conn: Connection) -> None:
        """The socket closed: keep the session (and its running response) for a while."""
        live = conn.live
        conn.live = None
        if live is None or live.conn is not conn:
            return
        live.conn = None
        turn.apply(self, live, live.machine.handle(ev.Detached(time.time())))

    def expire_live(self, live: LiveSession) -> None:
        """The grace period ended (or a response ended with no socket and no timer)."""
        live.detach_timer = None
        if live.conn is None:
            turn.apply(self, live, live.machine.handle(ev.GraceExpired()))

    def forget(self, live: LiveSession) -> None:
        if not live.streaming and self.live.get(live.session_id) is live:
            del self.live[live.session_id]
            self.metrics.conversations.set(len(self.live))


async def run_gateway(settings: Settings, ready: Callable[[int], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; then stop accepting, let responses finish for up to
    ``shutdown_grace_s`` and close every socket with 1012 (clients resume elsewhere).
    ``ready(port)`` replaces the "ready" line (a process of ``serve --processes N``)."""
    gw = Gateway(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with gw.lifespan():
        log.info("rtserver listening on http://%s:%s (ws: /ws)", settings.host, gw.port)
        if ready is not None:
            ready(gw.port)
        else:
            print(f"rtserver ready on http://{settings.host}:{gw.port}/  (WebSocket ws://{settings.host}:{gw.port}/ws)",
                  flush=True)
        await stop.wait()
        log.info("shutting down: draining responses")
        await gw.shutdown(deadline_s=settings.shutdown_grace_s)
