"""The gateway's connection to one worker process.

``WorkerClient.generate`` multiplexes requests over one persistent connection.
The client reconnects with backoff after a loss; while disconnected it reports
``alive == False`` and every request in flight ends with ``WorkerLost``. A worker
that sends nothing (not even its ``load`` heartbeat) for ``heartbeat_timeout_s``
is treated as hung: the connection is dropped and handled as a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from rtserver.engines.base import EngineEvent, FinishEvent, GenerateRequest, TokenEvent
from rtserver.exceptions import WorkerLost, WorkerProtocolError
from rtserver.workers.wire import FrameReader, gen_frame, pack

log = logging.getLogger("rtserver.workers")


@dataclass(slots=True)
class WorkerState:
    name: str
    address: str
    engine: str = "?"
    model: str = "?"
    modalities: frozenset[str] = frozenset({"text"})
    capacity: int = 1
    active: int = 0
    waiting: int = 0
    draining: bool = False
    last_seen: float = 0.0
    pid: int = 0
    continues: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


_LOST = object()


class WorkerClient:
    def __init__(
        self,
        address: str,
        *,
        name: str | None = None,
        heartbeat_timeout_s: float = 3.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.address = address
        self.state = WorkerState(name=name or address, address=address)
        self._timeout = heartbeat_timeout_s
        self._connect_timeout = connect_timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._streams: dict[int, asyncio.Queue[Any]] = {}
        self._next_id = 0
        self._pending = 0  # requests this gateway sent that have not finished
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self.generation = 0  # bumps on every (re)connect

    # ---------------------------------------------------------------- lifecycle
    @property
    def alive(self) -> bool:
        return self._writer is not None and self._connected.is_set()

    @property
    def score(self) -> float:
        """Load for least-loaded choice: work per slot, counting what we sent since the last heartbeat."""
        s = self.state
        return (max(s.active + s.waiting, self._pending)) / max(1, s.capacity)

    async def connect(self, *, wait: bool = True) -> None:
        """Start the connection loop; with ``wait``, until the worker said ``ready``."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"worker:{self.address}")
        if wait:
            await asyncio.wait_for(self._connected.wait(), self._connect_timeout)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_all()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.address.startswith("unix:"):
            return await asyncio.open_unix_connection(self.address[5:])
        host, _, port = self.address.rpartition(":")
        return await asyncio.open_connection(host, int(port))

    async def _run(self) -> None:
        backoff = 0.05
        while not self._closing:
            try:
                reader, writer = await asyncio.wait_for(self._open(), self._connect_timeout)
            except (TimeoutError, OSError):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            try:
                await self._serve(reader, writer)
            except (TimeoutError, OSError, WorkerProtocolError, asyncio.IncompleteReadError) as exc:
                log.warning("worker %s lost: %s", self.state.name, str(exc) or type(exc).__name__)
            finally:
                self._connected.clear()
                self._writer = None
                writer.close()
                self._fail_all()
            backoff = 0.05
            await asyncio.sleep(backoff)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameReader()
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), self._timeout)
            except TimeoutError:
                raise TimeoutError(f"heartbeat timeout: nothing received for {self._timeout:g} s") from None
            if not data:
                raise ConnectionResetError("worker closed the connection")
            self.state.last_seen = time.monotonic()
            for frame in decoder.feed(data):
                kind = frame["t"]
                if kind == "tok" or kind == "done":
                    queue = self._streams.get(frame["id"])
                    if queue is not None:
                        queue.put_nowait(frame)
                elif kind == "load":
                    s = self.state
                    s.active, s.waiting = frame["active"], frame["waiting"]
                    s.capacity, s.draining = frame["capacity"], frame["draining"]
                elif kind == "ready":
                    s = self.state
                    s.name = frame["name"]
                    s.engine, s.model = frame["engine"], frame["model"]
                    s.modalities = frozenset(frame["modalities"])
                    s.capacity, s.pid = frame["capacity"], frame["pid"]
                    s.continues = bool(frame.get("continues", False))
                    s.draining = False
                    self._writer = writer
                    self.generation += 1
                    self._connected.set()

    def _fail_all(self) -> None:
        for queue in self._streams.values():
            queue.put_nowait(_LOST)

    # ---------------------------------------------------------------- requests
    async def generate(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]:
        """Stream one generation. Raises ``WorkerLost`` if the worker goes away first.

        Closing the iterator early sends ``cancel`` to the worker.
        """
        writer = self._writer
        if writer is None or not self._connected.is_set():
            raise WorkerLost(f"worker {self.state.name} is not connected")
        self._next_id += 1
        wire_id = self._next_id
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[wire_id] = queue
        self._pending += 1
        finished = False
        try:
            writer.write(pack(gen_frame(wire_id, request)))
            while True:
                frame = await queue.get()
                if frame is _LOST:
                    finished = True
                    raise WorkerLost(f"worker {self.state.name} connection lost")
                if frame["t"] == "tok":
                    yield TokenEvent(frame["text"], frame.get("n", 1), frame.get("q"))
                else:
                    finished = True
                    yield FinishEvent(
                        reason=frame["reason"],
                        prompt_tokens=frame.get("prompt", 0),
                        completion_tokens=frame.get("completion", 0),
                        queue_ms=frame.get("queue_ms", 0.0),
                        error=frame.get("error"),
                    )
                    return
        finally:
            self._streams.pop(wire_id, None)
            self._pending -= 1
            if not finished and self._writer is writer:
                with contextlib.suppress(Exception):
                    writer.write(pack({"t": "cancel", "id": wire_id}))
