"""The gateway: one lifespan that opens and closes every resource, and the
conversation logic between sockets, router, workers and the session store.

Path of a message: ``Connection`` decodes and admits it → ``start_response`` →
router (bypass in µs, classifier off the loop) → pool picks the pinned worker →
``WorkerClient.generate`` → each token stamped with stats → ``LiveSession.emit``
→ bounded outbox → socket. The session is written through to the store off that
path (``SessionWriter``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import websockets
from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import NegotiationError
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from rtserver.auth import TokenVerifier
from rtserver.codes import CloseCode
from rtserver.config import Settings
from rtserver.engines.base import ChatMessage, GenerateRequest, MediaPart, SamplingParams, TokenEvent
from rtserver.exceptions import (
    AttachmentUnsupported,
    Draining,
    InternalError,
    InvalidRouteOverride,
    NoWorkerAvailable,
    OriginNotAllowed,
    RecoveryImpossible,
    Refused,
    RouteError,
    RtServerError,
    SessionError,
    StoreError,
    TooManyConnections,
    WorkerLost,
    WorkerOverloaded,
)
from rtserver.metrics import Metrics, observe_many
from rtserver.protocol.codec import SUBPROTOCOLS, to_wire, token_values
from rtserver.protocol.frames import Done, Hello, Message, Route, SessionInfo, Usage
from rtserver.protocol.stats import ResponseClock
from rtserver.routing.contract import GatewayRouter
from rtserver.server.connection import Connection
from rtserver.server.http import serve_http
from rtserver.server.live import ActiveResponse, LiveSession
from rtserver.sessions.base import Session, SessionStore, new_resume_token, new_session_id, token_digest
from rtserver.sessions.writer import SessionWriter
from rtserver.workers.pool import WorkerHandle, WorkerPool

if TYPE_CHECKING:
    from rtserver.routing.router import RouteDecision

log = logging.getLogger("rtserver.gateway")

WEB_ROOT = Path(__file__).resolve().parent.parent.parent / "web"
_CHARS_PER_TOKEN = 3.5  # history budget estimate; the worker counts real tokens
_FOLLOW_STALL_S = 30.0  # a followed remote response whose log stops growing this long is given up


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
        self._embedded: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conns: set[Connection] = set()
        self._ip_counts: dict[str, int] = {}
        self.ready = False
        self.verifier = TokenVerifier.from_settings(settings)  # None: auth off
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]

    # ================================================================= lifespan
    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[Gateway]:
        """Open store, router, workers and the listening socket; close them in reverse."""
        s = self.settings
        async with contextlib.AsyncExitStack() as stack:
            if self.store is None:
                self.store = await self._open_store()
            stack.push_async_callback(self.store.close)
            self.writer = SessionWriter(self.store, self.metrics)
            self.writer.start()
            stack.push_async_callback(self.writer.close)
            if self.router is None:
                self.router = self._open_router()
            if not self.pool.workers:
                await self._open_workers(stack)
            else:
                await self.pool.start(wait=False)
            stack.push_async_callback(self.pool.close)
            if s.redis:  # remote workers register themselves in Redis (rtserver worker --redis)
                from rtserver.workers.discovery import DiscoveryWatcher

                watcher = DiscoveryWatcher(s.redis, self.pool, prefix=s.key_prefix,
                                           heartbeat_timeout_s=s.heartbeat_timeout_s)
                self._tasks.add(asyncio.create_task(watcher.run(), name="discovery"))
            self.server = await websockets.serve(
                self._handle,
                s.host,
                s.port,
                subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
                process_request=self._process_request,
                select_subprotocol=_select_subprotocol,
                # Frames up to 2x the limit get a frame_too_large error and the socket lives on;
                # beyond that the WebSocket layer closes with 1009 before buffering them.
                max_size=s.max_frame_bytes * 2 + 1024,
                open_timeout=s.handshake_timeout_s,
                ping_interval=s.ping_interval_s or None,
                ping_timeout=s.ping_timeout_s or None,
                compression=None,
                reuse_port=s.processes > 1 or None,  # rtserver serve --processes N (server/processes.py)
            )
            self.port = self.server.sockets[0].getsockname()[1] if s.port == 0 else s.port
            self.ready = True
            self._tasks.add(asyncio.create_task(self._watch_workers()))
            try:
                yield self
            finally:
                self.ready = False
                for t in self._tasks:
                    t.cancel()
                await self.shutdown(deadline_s=0.0)

    async def _open_store(self) -> SessionStore:
        s = self.settings
        if s.redis:
            from rtserver.sessions.redis import RedisSessionStore

            store: SessionStore = RedisSessionStore(
                s.redis, prefix=s.key_prefix, ttl_s=s.session_ttl_s, replay_frames=s.replay_frames,
                replay_ttl_s=s.replay_ttl_s, op_timeout_s=s.store_timeout_s,
            )
        else:
            from rtserver.sessions.memory import MemorySessionStore

            mem = MemorySessionStore(ttl_s=s.session_ttl_s, replay_frames=s.replay_frames, replay_ttl_s=s.replay_ttl_s)
            mem.start()
            store = mem
        self.metrics.store_up.set(1 if await store.healthy() else 0)
        return store

    def _open_router(self) -> GatewayRouter:
        from rtserver.routing.batching import batch_settings
        from rtserver.routing.classifier import IntentClassifier
        from rtserver.routing.router import Router

        s = self.settings
        classifier = IntentClassifier.load(Path(s.classifier) if s.classifier else None)
        batching = batch_settings(s)
        self._executor = ThreadPoolExecutor(batching.threads, thread_name_prefix="classifier")
        if batching.max_batch > 1:
            classifier.enable_batches()
        classifier.warm_up()
        return Router(classifier, s.model_map(), executor=self._executor, batching=batching)

    async def _open_workers(self, stack: contextlib.AsyncExitStack) -> None:
        from rtserver.workers.client import WorkerClient

        s = self.settings
        if s.worker:
            for address in s.worker:
                await self.pool.add(WorkerClient(address, heartbeat_timeout_s=s.heartbeat_timeout_s))
            await self.pool.wait_for_any(30.0)
            return
        if s.embedded_mode == "inproc":
            from rtserver.workers.local import LocalWorker

            await self.pool.add(LocalWorker(self._make_engine(), name="embedded"), wait=True)
            return
        from rtserver.server.embedded import EmbeddedWorker

        embedded = EmbeddedWorker(s)
        await embedded.start()
        stack.push_async_callback(embedded.stop)
        self._embedded = embedded
        await self.pool.add(
            WorkerClient(embedded.address, name="embedded", heartbeat_timeout_s=s.heartbeat_timeout_s), wait=True
        )

    def _make_engine(self) -> Any:
        from rtserver.engines.registry import create_engine

        s = self.settings
        return create_engine(
            s.embedded_engine, model=s.model, model_id=s.model_id, capacity=s.capacity,
            synthetic_tokens=s.synthetic_tokens, synthetic_rate=s.synthetic_rate,
        )

    async def _watch_workers(self) -> None:
        m = self.metrics
        shown: set[tuple[str, str]] = set()
        while True:
            now: set[tuple[str, str]] = set()
            for w in self.pool.workers:
                now.add((w.state.name, w.state.model))
                m.worker_up.labels(w.state.name, w.state.model).set(1 if w.alive else 0)
                m.worker_load.labels(w.state.name).set(w.state.active)
                m.worker_queue.labels(w.state.name).set(w.state.waiting)
            for name, model in shown - now:  # a worker left the pool: drop its series
                with contextlib.suppress(KeyError):
                    m.worker_up.remove(name, model)
                if name not in {n for n, _ in now}:
                    for gauge in (m.worker_load, m.worker_queue):
                        with contextlib.suppress(KeyError):
                            gauge.remove(name)
            shown = now
            if self.store is not None and self.writer is not None and not self.writer.degraded:
                self.metrics.store_up.set(1 if await self.store.healthy() else 0)
            await asyncio.sleep(1.0)

    async def shutdown(self, deadline_s: float = 10.0) -> None:
        """Stop accepting; let responses finish up to ``deadline_s``; close the rest with 1012."""
        self.draining = True
        if self._embedded is not None:
            self._embedded.shutting_down()  # from now on its exit is expected: no restart
        if self.server is not None:
            self.server.close(close_connections=False)
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and any(ls.response is not None for ls in self.live.values()):
            await asyncio.sleep(0.05)
        for conn in list(self._conns):
            conn.close(CloseCode.SERVICE_RESTART, "server restarting; resume elsewhere")
        cut = [ls.response.task for ls in self.live.values()
               if ls.response is not None and ls.response.task is not None]
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
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def readiness(self) -> dict[str, Any]:
        workers = [
            {"name": w.state.name, "model": w.state.model, "alive": w.alive, "active": w.state.active,
             "waiting": w.state.waiting, "draining": w.state.draining,
             "inflight": w.state.inflight, "admitting": w.state.admitting}
            for w in self.pool.workers
        ]
        store_ok = self.writer is not None and not self.writer.degraded and getattr(self.store, "available", True)
        any_worker = any(w["alive"] for w in workers)
        if not self.ready or self.draining or not any_worker:
            status = "unavailable"
        elif not store_ok:
            status = "degraded"
        else:
            status = "ready"
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
        encoding = SUBPROTOCOLS.get(ws.subprotocol or "", "json")
        conn = Connection(self, ws, encoding)
        ip = self._client_ip(ws)
        self._conns.add(conn)
        self._ip_counts[ip] = self._ip_counts.get(ip, 0) + 1
        self.metrics.connections.inc()
        self.metrics.connections_total.labels(encoding).inc()
        try:
            refusal = self._admission(ws, ip, conn)
            if refusal is not None:
                conn.refuse(refusal)
            await conn.run()
        finally:
            self._conns.discard(conn)
            left = self._ip_counts.get(ip, 1) - 1
            if left > 0:
                self._ip_counts[ip] = left
            else:
                self._ip_counts.pop(ip, None)
            self.metrics.connections.dec()

    def _client_ip(self, ws: ServerConnection) -> str:
        """The peer address, or the client a trusted proxy forwarded (X-Real-IP, else the
        last X-Forwarded-For hop)."""
        peer = str(ws.remote_address[0]) if ws.remote_address else "?"
        if not self._proxies or ws.request is None:
            return peer
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return peer
        if not any(addr in net for net in self._proxies):
            return peer
        headers = ws.request.headers
        forwarded = headers.get("X-Real-IP") or headers.get("X-Forwarded-For", "").split(",")[-1]
        return forwarded.strip()[:64] or peer

    def _admission(self, ws: ServerConnection, ip: str, conn: Connection) -> Refused | None:
        """Checks at connect time; a refusal is sent as a fatal error frame plus a 4xxx close,
        which (unlike an HTTP status on a failed handshake) a browser can read."""
        s = self.settings
        origins = s.allowed_origins
        origin = ws.request.headers.get("Origin") if ws.request is not None else None
        if origins and "*" not in origins and origin is not None and origin not in origins:
            return OriginNotAllowed(f"origin {origin[:100]} is not allowed")
        if self._ip_counts.get(ip, 0) > s.max_connections_per_ip:
            return TooManyConnections(f"more than {s.max_connections_per_ip} connections from one address")
        if self.verifier is not None:
            conn.query_token = _query_token(ws.request.path if ws.request is not None else "")  # verified in run()
        return None

    # ================================================================= sessions
    async def open_session(self, conn: Connection, hello: Hello | None) -> LiveSession:
        """Resume ``hello``'s session or create one; sends the ``session`` frame."""
        live: LiveSession | None = None
        token = new_resume_token()  # the token rotates on every resume
        if hello is not None and hello.session_id:
            try:
                live = await self._resume(hello, conn.subject, token_digest(token))
            except (SessionError, StoreError) as exc:
                self.metrics.resumes.labels(exc.code.wire).inc()
                conn.send_error(exc)
        resumed = live is not None
        if live is None:
            session = Session(session_id=new_session_id(), token_digest=token_digest(token),
                              client=hello.client if hello else None, subject=conn.subject)
            live = LiveSession(session=session)
            self.live[session.session_id] = live
            self.metrics.session_creations.inc()
            self.metrics.conversations.set(len(self.live))
        else:
            self.metrics.resumes.labels("ok").inc()
        old = live.conn
        if old is not None and old is not conn:
            old.live = None
            old.close(CloseCode.SESSION_REPLACED, "session resumed on another socket")
        if live.detach_timer is not None:
            live.detach_timer.cancel()
            live.detach_timer = None
        live.conn = conn
        live.session.last_accessed = time.time()
        assert self.writer is not None
        self.writer.save(live.session)
        route = None
        if live.route is not None:
            route = {"use_case": live.route.use_case, "model": live.route.model_id, "worker": live.session.worker}
        conn.send(to_wire(SessionInfo(
            session_id=live.session_id, resume_token=token, resumed=resumed,
            limits=self.limits.as_wire(), route=route,
        )))
        if resumed and hello is not None and hello.response_id is not None:
            await self._replay(conn, live, hello.response_id, -1 if hello.last_seq is None else hello.last_seq)
        elif live.response is not None and not live.response.finished:
            conn.conversation.start_response(live.response.response_id)
        return live

    async def _resume(self, hello: Hello, subject: str | None, new_digest: str) -> LiveSession:
        """The live session ``hello`` resumes, its token rotated to ``new_digest``. Every
        refusal (token, subject, a token another resume spent first) is raised before
        anything is registered or replaced here."""
        assert hello.session_id is not None
        from rtserver.exceptions import Unauthorized

        def check_subject(session: Session) -> None:
            if self.verifier is not None and session.subject != subject:
                raise Unauthorized("this session belongs to another user")

        live = self.live.get(hello.session_id)
        token = hello.resume_token or ""
        if live is not None and live.session.token_matches(token) and (
            live.conn is not None or live.response is not None
        ):
            check_subject(live.session)
            await self._rotate(live.session, token_digest(token), new_digest, ours=True)
            return live  # attached or streaming here: our copy is the newest
        assert self.store is not None
        t0 = time.perf_counter()
        try:
            session = await self.store.load(hello.session_id)
            self.metrics.store_seconds.labels("load").observe(time.perf_counter() - t0)
        except (StoreError, SessionError) as exc:
            # Our detached copy stands in while the store is down or has not got our writes yet.
            idle = time.time() - live.session.last_accessed if live is not None else 0.0
            if live is None or (isinstance(exc, SessionError) and idle > self.settings.session_ttl_s):
                raise
            session = live.session
        if live is not None and session is not live.session:
            if session.token_digest == live.session.token_digest:
                session = live.session  # still ours: our copy is at least as new (writes may be queued)
            elif live.session.token_matches(token) and not session.token_matches(token):
                # Either our token rotation is still queued, or the client resumed elsewhere
                # since and this token is stale: let our queued writes land, then look again.
                assert self.writer is not None
                if not await self.writer.flush(0.5):
                    session = live.session  # the store is behind (outage, backlog): trust our copy
                else:
                    with contextlib.suppress(StoreError, SessionError):
                        session = await self.store.load(hello.session_id)
                    if session.token_digest == live.session.token_digest:
                        session = live.session
        if not token or not session.token_matches(token):
            raise Unauthorized("resume token does not match")
        check_subject(session)
        ours = live is not None and live.session is session
        await self._rotate(session, token_digest(token), new_digest, ours=ours)
        if live is not None and ours:
            return live
        if live is not None:  # the conversation moved on on another gateway: drop our copy
            if live.detach_timer is not None:
                live.detach_timer.cancel()
                live.detach_timer = None
            if live.conn is not None:
                live.conn.live = None
                live.conn.close(CloseCode.SESSION_REPLACED, "session resumed on another socket")
                live.conn = None
        live = LiveSession(session=session)
        if session.route:
            from rtserver.routing.router import InvalidRouteState, RouteState

            try:
                live.route = RouteState.from_dict(session.route)
            except InvalidRouteState:
                log.warning("session %s has an unreadable route; routing it afresh", session.session_id[:8])
        self.live[session.session_id] = live
        self.metrics.conversations.set(len(self.live))
        return live

    async def _rotate(self, session: Session, old_digest: str, new_digest: str, *, ours: bool) -> None:
        """Spend the presented token: the store's compare-and-set from ``old_digest`` to
        ``new_digest``, so of two resumes with one token, on any gateways, one wins and the
        other gets ``unauthorized``. While the store is down, our own copy (``ours``) stands
        in, as it does for ``load``."""
        from rtserver.exceptions import Unauthorized

        assert self.store is not None
        rotated = Session.from_dict(session.to_dict())
        rotated.token_digest = new_digest
        rotated.last_accessed = time.time()
        try:
            won = await self.store.rotate(rotated, old_digest)
        except StoreError:
            if not ours:
                raise
            won = True  # the rotation reaches the store with our next (queued) save
        if not won:
            raise Unauthorized("resume token already used: the session was resumed with it elsewhere")
        session.token_digest = new_digest

    async def _replay(self, conn: Connection, live: LiveSession, response_id: str, last_seq: int) -> None:
        """Send the frames of ``response_id`` after ``last_seq``, then the live rest."""
        resp = live.responses.get(response_id)
        if resp is not None:
            frames = [f for f in resp.frames if (f.get("type") == "token" and f["seq"] > last_seq)
                      or f.get("type") == "done" or (last_seq < 0 and f.get("type") == "route")]
            first = next((f for f in frames if f.get("type") == "token"), None)
            contiguous = first["seq"] == last_seq + 1 if first else (resp.next_seq <= last_seq + 1)
            if not contiguous:
                conn.send_error(RecoveryImpossible(f"frames after seq {last_seq} of {response_id} are gone"))
                return
            for f in frames:
                conn.send(f)
            self.metrics.replayed_frames.inc(len(frames))
            if not resp.finished and live.response is resp:
                conn.conversation.start_response(response_id)
            return
        assert self.store is not None
        # The response lives (or lived) on another gateway: follow its replay log.
        conn.conversation.start_response(response_id)
        task = asyncio.create_task(self._follow_remote(conn, live, response_id, last_seq))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow_remote(self, conn: Connection, live: LiveSession, response_id: str, last_seq: int) -> None:
        """Relay the replay log of a response streamed by another gateway, exactly once, through ``done``.

        Gives up with ``recovery_impossible`` when the log is gone, has a gap, or stops
        growing for ``_FOLLOW_STALL_S`` (its gateway died). A log not written yet is
        waited for while the session says that response is still running.
        """
        assert self.store is not None
        try:
            await self._follow_log(conn, live, response_id, last_seq)
        finally:
            if conn.conversation.active_response == response_id:
                conn.conversation.finish_response()

    async def _follow_log(self, conn: Connection, live: LiveSession, response_id: str, last_seq: int) -> None:
        assert self.store is not None
        deadline = time.monotonic() + _FOLLOW_STALL_S
        seq = last_seq
        text_parts: list[str] = []
        while time.monotonic() < deadline:
            if live.conn is not conn:
                return  # the client went away (or resumed on yet another socket)
            try:
                frames = await self.store.read_frames(live.session_id, response_id, seq)
            except StoreError:
                frames = []
            if frames is None:
                if live.session.active_response == response_id and not text_parts:
                    await asyncio.sleep(0.05)  # started, first frames not written yet
                    continue
                conn.send_error(RecoveryImpossible(f"no frames kept for {response_id}"))
                return
            if frames:
                deadline = time.monotonic() + _FOLLOW_STALL_S
            for f in frames:
                if f.get("type") == "token":
                    if f["seq"] != seq + 1:
                        if f["seq"] <= seq:
                            continue
                        conn.send_error(RecoveryImpossible(f"frames after seq {seq} of {response_id} are gone"))
                        return
                    seq = f.get("seq_last", f["seq"])
                    text_parts.append(f["text"])
                elif f.get("type") == "done":
                    if f.get("last_seq", seq) > seq:  # tokens before done are missing: no silent gap
                        conn.send_error(RecoveryImpossible(f"frames after seq {seq} of {response_id} are gone"))
                        return
                    await self._adopt_remote_turn(live, response_id, text_parts)
                    if conn.conversation.active_response == response_id:
                        conn.conversation.finish_response()  # before the client can see done and reply
                conn.send(f)
                self.metrics.replayed_frames.inc()
                if f.get("type") == "done":
                    return
            await asyncio.sleep(0.05)
        conn.send_error(RecoveryImpossible(f"{response_id} stopped before its end"))

    async def _adopt_remote_turn(self, live: LiveSession, response_id: str, text_parts: list[str]) -> None:
        """A response finished on another gateway: put its whole answer into our history.

        The answer is read back from the replay log (the other gateway's own save of it
        is refused by the store once the token rotated here); ``text_parts``, what we
        relayed, is the fallback when the log no longer starts at seq 0.
        """
        s = live.session
        if s.active_response != response_id:
            return
        s.active_response = None
        assert self.store is not None and self.writer is not None
        try:
            log_frames = await self.store.read_frames(s.session_id, response_id, -1) or []
        except StoreError:
            log_frames = []
        tokens = [f for f in log_frames if f.get("type") == "token"]
        if tokens and [f["seq"] for f in tokens] == list(range(len(tokens))):
            text_parts = [f["text"] for f in tokens]
        if text_parts and (not s.history or s.history[-1][0] != "assistant"):
            s.history.append(["assistant", "".join(text_parts)])
        self.writer.save(s)  # with our (rotated) resume token

    def detach(self, conn: Connection) -> None:
        """The socket closed: keep the session (and its running response) for a while."""
        live = conn.live
        conn.live = None
        if live is None or live.conn is not conn:
            return
        live.conn = None
        assert self.writer is not None
        self.writer.save(live.session)
        grace = self.settings.resume_grace_s
        live.detach_timer = asyncio.get_running_loop().call_later(grace, self._expire_live, live)

    def _expire_live(self, live: LiveSession) -> None:
        live.detach_timer = None
        if live.conn is not None:
            return
        if live.response is not None and live.response.task is not None:
            live.response.task.cancel()  # nobody came back for it: free the worker slot
        if live.response is None and self.live.get(live.session_id) is live:
            del self.live[live.session_id]
            self.metrics.conversations.set(len(self.live))

    # ================================================================= responses
    async def start_response(self, conn: Connection, msg: Message, received: float) -> None:
        live = conn.live
        assert live is not None
        if self.draining:
            conn.send_error(Draining("server is shutting down; reconnect to resume", ref=msg.id))
            return
        response_id = "r_" + secrets.token_urlsafe(9)
        conn.conversation.start_response(response_id)
        resp = ActiveResponse(response_id=response_id, message_id=msg.id)
        live.response = resp
        live.responses[response_id] = resp
        while len(live.responses) > 4:
            live.responses.pop(next(iter(live.responses)))
        self.metrics.messages.labels(conn.encoding).inc()
        if self.settings.log_content:  # off by default: no user content in logs
            log.info("message %s", msg.id, extra={"session_id": live.session_id, "response_id": response_id,
                                                  "text": msg.text[:2000]})
        resp.task = asyncio.create_task(self._respond(live, resp, msg, received))
        resp.task.add_done_callback(lambda _: self._finish_unstarted(live, resp, received))

    def _finish_unstarted(self, live: LiveSession, resp: ActiveResponse, received: float) -> None:
        """A response task cancelled before its first step never ran ``_respond``'s
        ``finally``: end it here, so its message still gets its one ``done``."""
        if not resp.finished:
            self._finish(live, resp, "cancelled", Usage(0, 0), ResponseClock(received=received), "?", "?")

    def cancel_response(self, conn: Connection) -> None:
        live = conn.live
        if live is not None and live.response is not None and live.response.task is not None:
            live.response.task.cancel()

    async def _respond(self, live: LiveSession, resp: ActiveResponse, msg: Message, received: float) -> None:
        clock = ResponseClock(received=received)
        session = live.session
        rid = resp.response_id
        reason = "error"
        usage = Usage(0, 0)
        model = "?"
        use_case = "?"
        try:
            kinds = [a.kind for a in msg.attachments]
            assert self.router is not None
            decision = await self.router.route(live.route, msg.text, kinds, msg.context)
            clock.route_ms = decision.route_ms
            clock.decision = decision.decision
            self._count_decision(session, decision)
            live.route = decision.state
            session.route = decision.state.to_dict()
            model, use_case = decision.model_id, decision.use_case
            t_queue = time.perf_counter()
            worker = await self._pick_worker(model, None if decision.decision == "reroute" else session.worker)
            session.worker = worker.state.name
            resp.routed = True
            live.emit(to_wire(Route(
                response_id=rid, message_id=msg.id, use_case=use_case, model=model,
                worker=worker.state.name, decision=decision.decision,
                confidence=round(decision.confidence, 4), route_ms=round(decision.route_ms, 3),
                context_changed=decision.context_changed,
            )))
            media = self._media_for(live, msg, worker)
            user_text = msg.text
            session.history.append(["user", user_text])
            session.active_response = rid
            session.request_count += 1
            session.last_accessed = time.time()
            assert self.writer is not None
            self.writer.save(session)
            request = GenerateRequest(
                request_id=rid,
                messages=self._prompt(session),
                params=SamplingParams(
                    max_tokens=self.settings.max_tokens, temperature=self.settings.temperature,
                    top_p=self.settings.top_p, repetition_penalty=self.settings.repetition_penalty,
                ),
                media=media,
                conversation=session.session_id,  # the worker keeps this conversation's KV between turns
            )
            gateway_queue_ms = (time.perf_counter() - t_queue) * 1000.0
            reason, usage, text = await self._stream(live, resp, worker, request, clock, gateway_queue_ms, model)
            session.history.append(["assistant", text])
        except asyncio.CancelledError:
            reason = "cancelled"
            if resp.frames and any(f.get("type") == "token" for f in resp.frames):
                session.history.append(["assistant", "".join(f["text"] for f in resp.frames if f.get("type") == "token")])
            usage = Usage(usage.prompt_tokens, resp.next_seq)
        except InvalidRouteOverride as exc:  # the client's context.use_case: its fault, 1011
            self._send_live_error(live, exc, ref=msg.id)
        except WorkerLost as exc:  # mid-stream, no heir: the client sends the message again
            self._send_live_error(live, exc, ref=msg.id)
            if session.history and session.history[-1][0] == "user" and session.active_response == rid:
                session.history.pop()
        except RouteError:  # any other routing failure is a server bug, never the client's 1011
            log.exception("response %s: routing failed", rid)
            self._send_live_error(live, InternalError("internal error"), ref=msg.id)
        except RtServerError as exc:
            self._send_live_error(live, exc, ref=msg.id)
        except Exception:
            log.exception("response %s failed", rid)
            self._send_live_error(live, InternalError("internal error"), ref=msg.id)
        finally:
            self._finish(live, resp, reason, usage, clock, use_case, model)

    def _count_decision(self, session: Session, decision: RouteDecision) -> None:
        m = self.metrics
        m.decisions.labels(decision.decision, decision.use_case).inc()
        m.route_seconds.labels(decision.decision).observe(decision.route_ms / 1000.0)
        if decision.classifier_ms is not None:
            m.classifier_seconds.observe(decision.classifier_ms / 1000.0)
        elif decision.decision == "bypass":
            m.bypass_seconds.observe(decision.route_ms / 1000.0)
        if decision.context_changed:
            m.context_changes.labels(decision.use_case).inc()
            session.context_changes += 1
        if decision.decision == "bypass":
            session.bypass_count += 1

    async def _pick_worker(self, model: str, pinned: str | None, avoid: str | None = None) -> WorkerHandle:
        try:
            return self.pool.pick(model, pinned, avoid=avoid)
        except NoWorkerAvailable:
            await self.pool.wait_for(model, self.settings.worker_retry_s)
            return self.pool.pick(model, pinned, avoid=avoid)

    async def _retry_worker(self, model: str, failed: str) -> WorkerHandle:
        """For a retry before the first token: another worker of ``model``; with none (a lone
        worker), whichever comes back within ``worker_retry_s``, the failed one included."""
        try:
            return self.pool.pick(model, None, avoid=failed)
        except NoWorkerAvailable:
            return await self._pick_worker(model, None)

    def _media_for(self, live: LiveSession, msg: Message, worker: WorkerHandle) -> tuple[MediaPart, ...]:
        media: list[MediaPart] = []
        for a in msg.attachments:
            if a.kind in worker.state.modalities:
                media.append(MediaPart(a.kind, a.mime, a.data))
            else:
                exc = AttachmentUnsupported(
                    f"model {worker.state.model} cannot take {a.kind} attachments; answering the text only")
                self._send_live_error(live, exc, ref=msg.id)
        return tuple(media)

    def _send_live_error(self, live: LiveSession, exc: RtServerError, *, ref: str | None = None) -> None:
        """``exc`` as an error frame answering message ``ref`` (else the one it was raised with)."""
        self.metrics.errors.labels(exc.code.wire).inc()
        from rtserver.protocol.codec import error_frame

        routed = live.response.response_id if live.response is not None and live.response.routed else None
        live.emit(to_wire(error_frame(exc.code, exc.message, ref=ref or exc.ref, response_id=routed)))

    def _prompt(self, session: Session) -> tuple[ChatMessage, ...]:
        budget = int(self.settings.history_max_tokens * _CHARS_PER_TOKEN)
        kept: list[ChatMessage] = []
        used = 0
        for role, content in reversed(session.history):
            used += len(content)
            if kept and used > budget:
                break
            kept.append(ChatMessage(role, content))  # type: ignore[arg-type]
        kept.reverse()
        if self.settings.system_prompt:
            kept.insert(0, ChatMessage("system", self.settings.system_prompt))
        # trim the stored history to what the model can see, so sessions stay small
        drop = len(session.history) - len(kept) + (1 if self.settings.system_prompt else 0)
        if drop > 0:
            del session.history[:drop]
        return tuple(kept)

    async def _stream(
        self, live: LiveSession, resp: ActiveResponse, worker: WorkerHandle, request: GenerateRequest,
        clock: ResponseClock, gateway_queue_ms: float, model: str,
    ) -> tuple[str, Usage, str]:
        """Relay one generation; retries once on another worker if the first dies before any token."""
        m = self.metrics
        parts: list[str] = []
        attempts = 0
        produced = 0  # tokens streamed so far, across workers
        seam: dict[str, str] | None = None
        batch: list[dict[str, Any]] = []
        resp.unlogged = batch  # written by _finish if a cancel cuts this task short
        batch_started = 0.0
        assert self.writer is not None
        while True:
            attempts += 1
            try:
                async with contextlib.aclosing(worker.generate(request)) as events:  # type: ignore[type-var]
                    resp.credit = events.take_credit() if hasattr(events, "take_credit") else None  # flow control
                    async for ev in events:
                        if isinstance(ev, TokenEvent):
                            now = time.perf_counter()
                            if ev.queue_ms is not None and clock.first_token_at is None:
                                clock.queue_ms = gateway_queue_ms + ev.queue_ms
                            stats = clock.stamp(now)
                            # seam: on the first token from the worker that took over
                            frame = token_values(resp.response_id, resp.next_seq, ev.text, stats, seam)
                            seam = None
                            produced += ev.tokens
                            resp.next_seq += 1
                            parts.append(ev.text)
                            live.emit(frame)
                            if not batch:
                                batch_started = now
                            batch.append(frame)
                            if len(batch) >= 16 or now - batch_started >= 0.05:
                                # replay log: batched, but a follower on another gateway lags ≤ 50 ms
                                self.writer.frames(live.session_id, resp.response_id, batch)
                                batch = resp.unlogged = []
                            if clock.tokens == 1:
                                m.ttft_seconds.labels(live.route.use_case if live.route else "?").observe(
                                    stats["ttft_ms"] / 1000)
                                m.queue_seconds.observe(clock.queue_ms / 1000)
                        else:
                            self.writer.frames(live.session_id, resp.response_id, batch)
                            batch = resp.unlogged = []
                            m.tokens.labels(model).inc(ev.completion_tokens)
                            if ev.reason == "error":
                                why = ev.error or "generation failed"
                                if resp.next_seq == 0 and why == "draining" and attempts < 3:
                                    worker = await self._retry_worker(request_model(worker), worker.state.name)
                                    break
                                failed = (WorkerOverloaded(why) if why in ("overloaded", "draining")
                                          else InternalError(why))
                                self._send_live_error(live, failed, ref=resp.message_id)
                            completion = produced if attempts > 1 else ev.completion_tokens
                            return ev.reason, Usage(ev.prompt_tokens, completion, ev.cached_tokens), "".join(parts)
                    else:
                        raise WorkerLost("worker stream ended without done")
            except WorkerLost as exc:
                self.writer.frames(live.session_id, resp.response_id, batch)
                batch = resp.unlogged = []
                if resp.next_seq == 0 and attempts < 3:
                    m.worker_failures.labels("before_first_token").inc()
                    log.warning("worker %s lost before first token; retrying", worker.state.name)
                    worker = await self._retry_worker(request_model(worker), worker.state.name)
                    live.session.worker = worker.state.name
                    continue
                m.worker_failures.labels("mid_stream").inc()
                heir = self._heir(request_model(worker), worker.state.name) if attempts < 3 else None
                if heir is None:
                    raise WorkerLost(f"{exc}; retry the message", ref=resp.message_id) from None
                # Continue the answer on another worker of the model, from the history plus
                # the text already sent; the first token after the switch carries ``seam``.
                log.warning("worker %s lost mid-stream; continuing on %s", worker.state.name, heir.state.name)
                m.worker_failures.labels("continued").inc()
                seam = {"worker": heir.state.name, "reason": "worker_lost"}
                left = max(1, self.settings.max_tokens - produced)
                request = dataclasses.replace(
                    request, prefix="".join(parts), params=dataclasses.replace(request.params, max_tokens=left)
                )
                worker = heir
                live.session.worker = heir.state.name

    def _heir(self, model: str, failed: str) -> WorkerHandle | None:
        """A live worker of ``model`` other than ``failed`` that can continue an answer."""
        try:
            heir = self.pool.pick(model, None, avoid=failed)
        except NoWorkerAvailable:
            return None
        return heir if heir.state.continues else None

    def _finish(self, live: LiveSession, resp: ActiveResponse, reason: str, usage: Usage,
                clock: ResponseClock, use_case: str, model: str) -> None:
        now = time.perf_counter()
        completion = usage.completion_tokens or resp.next_seq
        done = Done(
            response_id=resp.response_id, finish_reason=reason,  # type: ignore[arg-type]
            usage=Usage(usage.prompt_tokens, completion, usage.cached_tokens), stats=clock.summary(now, completion),
            last_seq=resp.next_seq - 1,
        )
        session = live.session
        session.active_response = None
        session.last_accessed = time.time()
        assert self.writer is not None
        if resp.unlogged:  # tokens sent but not yet logged (a cancel cut _stream short)
            self.writer.frames(live.session_id, resp.response_id, resp.unlogged)
            resp.unlogged = []
        self.writer.save(session)  # history first, then the done frame: a follower sees both
        if resp.routed or reason == "cancelled":
            # cancelled before its route frame: ``done`` alone (docs/protocol.md, Order)
            frame = to_wire(done)
            live.emit(frame)
            self.writer.frames(live.session_id, resp.response_id, [frame])
        # else: rejected before its route frame; the error frame (with ref) was the whole answer
        resp.finished = True
        live.response = None
        self.metrics.responses.labels(reason).inc()
        if log.isEnabledFor(logging.INFO):
            extra: dict[str, Any] = {
                "session_id": live.session_id, "response_id": resp.response_id, "decision": clock.decision,
                "use_case": use_case, "model": model, "worker": session.worker, "finish_reason": reason,
                "ttft_ms": done.stats.ttft_ms, "total_ms": done.stats.total_ms, "tokens": completion,
            }
            log.info("response %s %s", resp.response_id, reason, extra=extra)
        self.metrics.turn_seconds.observe(now - clock.received)
        observe_many(self.metrics.token_gap_seconds, [g / 1000.0 for g in clock.gaps_ms])  # once per response
        if live.conn is not None:
            live.conn.conversation.finish_response()
        elif live.detach_timer is None:
            self._expire_live(live)


def _query_token(path: str) -> str | None:
    from urllib.parse import parse_qs, urlsplit

    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


def _select_subprotocol(ws: ServerConnection, offered: Sequence[str]) -> Subprotocol | None:
    """JSON when the client offers nothing; the first known one it offers; else refuse (400)."""
    if not offered:
        return None
    for proto in offered:
        if proto in SUBPROTOCOLS:
            return Subprotocol(proto)
    raise NegotiationError(f"unsupported subprotocols {', '.join(offered)[:200]}; use rt.v1.json or rt.v1.msgpack")


def request_model(worker: WorkerHandle) -> str:
    return worker.state.model


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
