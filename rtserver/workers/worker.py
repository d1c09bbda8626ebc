"""The worker process: the wire, admission, heartbeats and credit; never engine compute.

``serve_worker`` starts the engine behind an ``EngineLink`` (host.py: an engine host
process by default, or inline for engines that never block), then listens. It writes
``ready`` to each gateway connection first, a ``load`` heartbeat every ``heartbeat_s``,
and relays ``tok``/``done`` per request. The event loop here only moves frames, so
heartbeats, cancels and admission answer while the engine computes.

Admission: a request holds a slot from its ``gen`` until its ``done`` is relayed; at
most ``capacity + max_queue`` slots across all connections. Beyond that a ``gen`` is
answered at once with ``done`` reason ``error`` and ``error: "overloaded"``. The engine
side answers every ``gen`` with exactly one ``done`` (runner.py), so a slot is never
leaked, whatever the order of ``gen`` and ``cancel``; ``inflight`` in ``load`` is the
number of slots held.

A ``cancel`` is answered at once with ``done`` reason ``cancelled``, which frees the
admission slot, and passed to the engine, which ends the stream within one step (an
engine busy with a long step must not turn a storm of Stop presses into
``overloaded``). Until the engine's own ``done`` comes back the stream is
``cancelling``; at most ``CANCELLING_PER_SLOT * limit`` such streams are allowed before
new requests are refused. A gateway disconnecting cancels its streams the same way. ``credit`` frames are passed
through to the stream (docs/worker-protocol.md, "Flow control"). A gateway connection
whose unsent output passes ``MAX_CONN_BUFFER`` is dropped (its streams cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from rtserver.config import WorkerSettings  # built from its layers there (flags, env, TOML)
from rtserver.engines.base import Engine
from rtserver.exceptions import EngineError, WorkerProtocolError
from rtserver.metrics import WorkerMetrics
from rtserver.workers.frames import Cancel, Done, Gen, Grant, Load, Ping, Pong, Ready
from rtserver.workers.host import EngineLink, EngineSpec, HostLink, InlineLink
from rtserver.workers.wire import FrameReader, pack

log = logging.getLogger("rtserver.worker")

# Called with the bound address once the worker serves (discovery.register_forever sets it).
on_bound: ContextVar[Callable[[str], None] | None] = ContextVar("rtserver_worker_on_bound", default=None)


MAX_CONN_BUFFER = 64 * 1024 * 1024  # bytes a gateway connection may leave unread before it is dropped
CANCELLING_PER_SLOT = 8  # cancelled streams awaiting the engine's done, per admission slot


class _Conn:
    """One gateway connection: its streams (by the gateway's wire id) and its output batch."""

    __slots__ = ("buf", "streams", "transport")

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self.buf = bytearray()
        self.streams: dict[int, _Stream] = {}


class _Stream:
    __slots__ = ("conn", "host_id", "started", "tokens", "wire_id")

    def __init__(self, conn: _Conn | None, wire_id: int, host_id: int, started: float) -> None:
        self.conn = conn
        self.wire_id = wire_id
        self.host_id = host_id
        self.started = started
        self.tokens = 0


class WorkerServer:
    def __init__(self, link: EngineLink, settings: WorkerSettings, metrics: WorkerMetrics | None = None) -> None:
        self.link = link
        self.settings = settings
        self.metrics = metrics
        self.draining = False
        self._streams: dict[int, _Stream] = {}  # by engine-side id
        self._cancelling: set[int] = set()  # engine-side ids cancelled, the engine's done not yet back
        self._next_id = 0
        self._dirty: set[_Conn] = set()
        self._flush_scheduled = False
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.bound: str = settings.listen

    @property
    def inflight(self) -> int:
        """Requests holding a slot: admitted, and their ``done`` not yet sent."""
        return len(self._streams)

    @property
    def admitting(self) -> bool:
        return (not self.draining and len(self._streams) < self.limit
                and len(self._cancelling) < CANCELLING_PER_SLOT * self.limit)

    @property
    def limit(self) -> int:
        return self.link.info.capacity + self.settings.max_queue

    def ready_frame(self) -> Ready:
        info = self.link.info
        return Ready(self.settings.name, info.engine, info.model_id, info.modalities, info.capacity, info.continues,
                     os.getpid())

    def load_frame(self) -> Load:
        load = self.link.load()
        kv = self.link.kv_stats()
        return Load(load.active, load.waiting, load.capacity, self.inflight, len(self._cancelling), self.limit,
                    self.admitting, self.draining, None if kv is None else vars(kv))

    async def start(self) -> None:
        listen = self.settings.listen
        if listen.startswith("unix:"):
            path = listen[5:]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self._server = await asyncio.start_unix_server(self._handle, path=path)
        else:
            host, _, port = listen.rpartition(":")
            self._server = await asyncio.start_server(self._handle, host or "127.0.0.1", int(port))
            sock = self._server.sockets[0].getsockname()
            self.bound = f"{sock[0]}:{sock[1]}"

    async def stop(self, *, drain: bool = True) -> None:
        """Stop accepting; with ``drain``, let in-flight requests finish first."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        if drain:
            deadline = asyncio.get_running_loop().time() + self.settings.drain_timeout_s
            while self._streams and asyncio.get_running_loop().time() < deadline and not self.link.lost.done():
                await asyncio.sleep(0.05)
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    # ------------------------------------------------------------------ engine → gateways
    def on_engine_frame(self, frame: dict[str, Any]) -> None:
        """A ``tok`` or ``done`` from the engine: relay it to the gateway that asked (batched per turn).

        The frame (built by ``tok_values`` / ``Done.to_wire`` in runner.py) is relayed as it
        came, its ``id`` rewritten to the gateway's: no record is rebuilt per token.
        """
        stream = self._streams.get(frame["id"])
        if stream is None:
            if frame["t"] == "done":
                self._cancelling.discard(frame["id"])
            return
        metrics = self.metrics
        if frame["t"] == "tok":
            if metrics is not None:
                metrics.tokens.inc(frame["n"])
                if stream.tokens == 0:
                    metrics.ttft_seconds.observe(time.perf_counter() - stream.started)
                    metrics.queue_seconds.observe((frame.get("q") or 0.0) / 1000)
            stream.tokens += 1
        elif frame["t"] == "done":
            del self._streams[stream.host_id]
            if stream.conn is not None:
                stream.conn.streams.pop(stream.wire_id, None)
            if metrics is not None:
                metrics.requests.labels(frame["reason"]).inc()
        else:
            return
        conn = stream.conn
        if conn is None:
            return
        frame["id"] = stream.wire_id
        self._queue(conn, frame)

    def _queue(self, conn: _Conn, frame: dict[str, Any]) -> None:
        conn.buf += pack(frame)
        self._dirty.add(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        for conn in self._dirty:
            transport = conn.transport
            if not transport.is_closing():
                transport.write(bytes(conn.buf))
                if transport.get_write_buffer_size() > MAX_CONN_BUFFER:
                    log.warning("a gateway connection does not read its worker stream; dropping it")
                    transport.abort()
            conn.buf.clear()
        self._dirty.clear()

    # ------------------------------------------------------------------ gateway → engine
    def _gen(self, conn: _Conn, gen: Gen) -> None:
        wire_id = gen.id
        if not self.admitting or wire_id in conn.streams:
            why = "draining" if self.draining else "overloaded" if wire_id not in conn.streams else "duplicate id"
            if self.metrics is not None and why != "duplicate id":
                self.metrics.rejected.labels(why).inc()
            self._queue(conn, Done.failed(wire_id, why).to_wire())
            return
        self._next_id += 1
        stream = _Stream(conn, wire_id, self._next_id, time.perf_counter())
        self._streams[stream.host_id] = stream
        conn.streams[wire_id] = stream
        self.link.send(Gen(stream.host_id, gen.request, gen.win).to_wire())

    def _credit(self, conn: _Conn, grant: Grant) -> None:
        stream = conn.streams.get(grant.id)
        if stream is not None:
            self.link.send(Grant(stream.host_id, grant.n).to_wire())

    def _cancel(self, stream: _Stream) -> None:
        """Answer ``done`` cancelled now and free the slot; the engine's own ``done`` is dropped."""
        del self._streams[stream.host_id]
        self._cancelling.add(stream.host_id)
        if self.metrics is not None:
            self.metrics.requests.labels("cancelled").inc()
        conn = stream.conn
        if conn is not None:
            conn.streams.pop(stream.wire_id, None)
            self._queue(conn, Done(stream.wire_id, "cancelled", completion=stream.tokens).to_wire())
        if not self.link.lost.done():
            self.link.send(Cancel(stream.host_id).to_wire())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        conn = _Conn(writer.transport)

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(self.settings.heartbeat_s)
                self._queue(conn, self.load_frame().to_wire())

        hb = asyncio.create_task(heartbeat())
        decoder = FrameReader()
        try:
            self._queue(conn, self.ready_frame().to_wire())
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    kind = frame["t"]
                    if kind == "gen":
                        self._gen(conn, Gen.from_wire(frame))
                    elif kind == "credit":
                        self._credit(conn, Grant.from_wire(frame))
                    elif kind == "cancel":
                        stream = conn.streams.get(Cancel.from_wire(frame).id)
                        if stream is not None:
                            self._cancel(stream)
                    elif kind == "ping":
                        self._queue(conn, Pong(Ping.from_wire(frame).ts).to_wire())
        except (ConnectionError, WorkerProtocolError, asyncio.IncompleteReadError) as exc:
            log.warning("gateway connection dropped: %s", exc)
        except asyncio.CancelledError:
            pass
        finally:
            hb.cancel()
            # Nobody reads these streams any more: end them; their slots come back with their done.
            for stream in list(conn.streams.values()):
                stream.conn = None
                self._cancel(stream)
            conn.streams.clear()
            self._dirty.discard(conn)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(hb, return_exceptions=True)
            writer.close()
            self._conns.discard(task)


def engine_link(spec: EngineSpec, host: str = "auto") -> EngineLink:
    """The link for ``spec``: ``process`` (an engine host), ``inline``, or ``auto``.

    ``auto`` hosts every engine in its own process except ``synthetic`` and ``openai``,
    whose steps never block an event loop (docs/architecture.md says why and what it costs).
    """
    host = resolve_host(spec, host)
    if host == "inline":
        return InlineLink(spec.build())
    if host == "process":
        return HostLink(spec)
    raise EngineError(f"unknown engine host {host!r}; choose auto, process or inline")


INLINE_ENGINES = frozenset({"synthetic", "openai"})


def resolve_host(spec: EngineSpec, host: str = "auto") -> str:
    """``host`` with ``auto`` resolved: ``inline`` for the engines in ``INLINE_ENGINES``, else ``process``."""
    if host == "auto":
        return "inline" if spec.name in INLINE_ENGINES else "process"
    return host


def gated_worker(spec: EngineSpec, host: str = "auto") -> bool:
    """Whether the worker's own loop needs a step gate: an engine that may hold the GIL for a
    whole step (any but ``INLINE_ENGINES``) computing inline, in the worker's process."""
    return resolve_host(spec, host) == "inline" and spec.name not in INLINE_ENGINES


async def serve_worker(
    engine: Engine | EngineLink, settings: WorkerSettings, *, ready_fd: int | None = None
) -> None:
    """Run a worker until SIGTERM/SIGINT, then drain. Prints the bound address when ready.

    ``engine`` is an ``EngineLink`` (``engine_link``), or a bare ``Engine`` run inline.
    Raises ``EngineError`` when the engine host is lost (the worker cannot serve then).
    """
    link: EngineLink = InlineLink(engine) if isinstance(engine, Engine) else engine
    server: WorkerServer | None = None

    def relay(frame: dict[str, Any]) -> None:
        assert server is not None
        server.on_engine_frame(frame)

    await link.start(relay)
    metrics: WorkerMetrics | None = None
    if settings.metrics_port:
        def load() -> tuple[int, int, int]:
            current = link.load()
            return current.active, current.waiting, current.capacity

        metrics = WorkerMetrics(load)
        if link.kv_stats() is not None:  # an engine that retains KV per conversation (gpu)
            from rtserver.metrics import KvRetentionCollector

            metrics.registry.register(KvRetentionCollector(link.kv_stats))  # type: ignore[arg-type]
        metrics.serve(settings.metrics_port, settings.metrics_host)
    server = WorkerServer(link, settings, metrics)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    info = link.info
    log.info("worker %s ready on %s (%s, %s, engine in %s)", settings.name, server.bound, info.engine,
             info.model_id, "a host process" if isinstance(link, HostLink) else "the worker")
    print(f"READY {server.bound}", flush=True)
    if (announce := on_bound.get()) is not None:
        announce(server.bound)
    if ready_fd is not None:
        os.write(ready_fd, f"{server.bound}\n".encode())
        os.close(ready_fd)
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    waits: list[asyncio.Future[Any]] = [stopping, link.lost]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if link.lost.done():
        await server.stop(drain=False)
        await link.close()
        raise EngineError(f"worker {settings.name}: the engine host is gone ({link.lost.result()})")
    await server.stop(drain=True)
    await link.close()
