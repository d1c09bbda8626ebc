"""The worker process: one engine, one accelerator, many multiplexed generations.

``serve_worker`` loads and warms the engine, then listens. It writes ``ready`` to each
gateway connection first, a ``load`` heartbeat every ``heartbeat_s``, and streams
``tok``/``done`` per request. A ``cancel`` (or the gateway disconnecting) closes the
engine iterator, which frees the slot within one decode step.

Bounds: at most ``capacity + max_queue`` requests are admitted across all
connections; beyond that a ``gen`` is answered at once with ``done`` reason
``error`` and ``error: "overloaded"``. Writes await the socket's drain, so a slow
gateway slows its own streams without growing the worker's memory.
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
from dataclasses import dataclass
from typing import Any

from rtserver.engines.base import Engine, FinishEvent, TokenEvent
from rtserver.exceptions import WorkerProtocolError
from rtserver.metrics import WorkerMetrics
from rtserver.workers.wire import FrameReader, pack, request_from_frame

log = logging.getLogger("rtserver.worker")

# Called with the bound address once the worker serves (discovery.register_forever sets it).
on_bound: ContextVar[Callable[[str], None] | None] = ContextVar("rtserver_worker_on_bound", default=None)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    name: str
    listen: str  # "HOST:PORT" or "unix:PATH"
    max_queue: int = 64
    heartbeat_s: float = 0.5
    metrics_port: int = 0  # 0: no /metrics endpoint
    metrics_host: str = "0.0.0.0"
    drain_timeout_s: float = 30.0


class WorkerServer:
    def __init__(self, engine: Engine, settings: WorkerSettings, metrics: WorkerMetrics | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.draining = False
        self._inflight = 0
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.bound: str = settings.listen

    def ready_frame(self) -> dict[str, Any]:
        info = self.engine.info
        return {
            "t": "ready",
            "name": self.settings.name,
            "engine": info.engine,
            "model": info.model_id,
            "modalities": sorted(info.modalities),
            "capacity": info.capacity,
            "continues": info.continues,
            "pid": os.getpid(),
        }

    def load_frame(self) -> dict[str, Any]:
        load = self.engine.load()
        return {
            "t": "load",
            "active": load.active,
            "waiting": load.waiting,
            "capacity": load.capacity,
            "inflight": self._inflight,
            "draining": self.draining,
        }

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
            while self._inflight and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        streams: dict[int, asyncio.Task[None]] = {}
        write_lock = asyncio.Lock()

        async def send(frame: dict[str, Any]) -> None:
            writer.write(pack(frame))
            if writer.transport.get_write_buffer_size() > 256 * 1024:
                async with write_lock:
                    await writer.drain()

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(self.settings.heartbeat_s)
                await send(self.load_frame())

        metrics = self.metrics

        async def run(wire_id: int, frame: dict[str, Any]) -> None:
            started = time.perf_counter()
            first = True
            try:
                request = request_from_frame(frame)
                async for event in self.engine.generate(request):
                    if isinstance(event, TokenEvent):
                        if metrics is not None:
                            metrics.tokens.inc(event.tokens)
                            if first:
                                metrics.ttft_seconds.observe(time.perf_counter() - started)
                                metrics.queue_seconds.observe((event.queue_ms or 0.0) / 1000)
                        first = False
                        tok: dict[str, Any] = {"t": "tok", "id": wire_id, "text": event.text, "n": event.tokens}
                        if event.queue_ms is not None:
                            tok["q"] = event.queue_ms
                        await send(tok)
                    else:
                        if metrics is not None:
                            metrics.requests.labels(event.reason).inc()
                        await send(_done(wire_id, event))
            except asyncio.CancelledError:
                if metrics is not None:
                    metrics.requests.labels("cancelled").inc()
                with contextlib.suppress(Exception):
                    await send({"t": "done", "id": wire_id, "reason": "cancelled", "prompt": 0, "completion": 0})
                raise
            except Exception as exc:  # engine failure: tell the gateway, keep serving others
                log.exception("generation %s failed", wire_id)
                with contextlib.suppress(Exception):
                    await send({"t": "done", "id": wire_id, "reason": "error", "prompt": 0, "completion": 0, "error": str(exc)})
            finally:
                streams.pop(wire_id, None)
                self._inflight -= 1

        hb = asyncio.create_task(heartbeat())
        decoder = FrameReader()
        try:
            await send(self.ready_frame())
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    kind = frame["t"]
                    if kind == "gen":
                        wire_id = int(frame["id"])
                        if self.draining or self._inflight >= self.engine.info.capacity + self.settings.max_queue:
                            why = "draining" if self.draining else "overloaded"
                            if metrics is not None:
                                metrics.rejected.labels(why).inc()
                            await send({"t": "done", "id": wire_id, "reason": "error", "prompt": 0, "completion": 0, "error": why})
                            continue
                        self._inflight += 1
                        streams[wire_id] = asyncio.create_task(run(wire_id, frame))
                    elif kind == "cancel":
                        stream = streams.get(int(frame["id"]))
                        if stream is not None:
                            stream.cancel()
                    elif kind == "ping":
                        await send({"t": "pong", "ts": frame.get("ts")})
        except (ConnectionError, WorkerProtocolError, asyncio.IncompleteReadError) as exc:
            log.warning("gateway connection dropped: %s", exc)
        except asyncio.CancelledError:
            pass
        finally:
            hb.cancel()
            for stream in list(streams.values()):
                stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(hb, *streams.values(), return_exceptions=True)
            writer.close()
            self._conns.discard(task)


def _done(wire_id: int, event: FinishEvent) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "t": "done",
        "id": wire_id,
        "reason": event.reason,
        "prompt": event.prompt_tokens,
        "completion": event.completion_tokens,
        "queue_ms": event.queue_ms,
    }
    if event.error:
        frame["error"] = event.error
    if event.cached_tokens:
        frame["cached"] = event.cached_tokens
    return frame


async def serve_worker(engine: Engine, settings: WorkerSettings, *, ready_fd: int | None = None) -> None:
    """Run a worker until SIGTERM/SIGINT, then drain. Prints the bound address when ready."""
    await engine.start()
    metrics: WorkerMetrics | None = None
    if settings.metrics_port:
        def load() -> tuple[int, int, int]:
            current = engine.load()
            return current.active, current.waiting, current.capacity

        metrics = WorkerMetrics(load)
        kv_stats = getattr(engine, "kv_stats", None)
        if callable(kv_stats):  # an engine that retains KV per conversation (gpu)
            from rtserver.metrics import KvRetentionCollector

            metrics.registry.register(KvRetentionCollector(kv_stats))  # type: ignore[arg-type]
        metrics.serve(settings.metrics_port, settings.metrics_host)
    server = WorkerServer(engine, settings, metrics)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    log.info("worker %s ready on %s (%s, %s)", settings.name, server.bound, engine.info.engine, engine.info.model_id)
    print(f"READY {server.bound}", flush=True)
    if (announce := on_bound.get()) is not None:
        announce(server.bound)
    if ready_fd is not None:
        os.write(ready_fd, f"{server.bound}\n".encode())
        os.close(ready_fd)
    await stop.wait()
    await server.stop(drain=True)
    await engine.close()
