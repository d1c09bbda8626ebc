"""The gateway's connection to one worker process.

``WorkerClient.generate`` multiplexes requests over one persistent connection.
The client reconnects with backoff after a loss; while disconnected it reports
``alive == False`` and every request in flight ends with ``WorkerLost``. A worker
that sends nothing (not even its ``load`` heartbeat) for ``heartbeat_timeout_s``
is treated as hung: the connection is dropped and handled as a loss.

Every stream is flow controlled (``Credit``): the worker pauses it once ``window``
``tok`` frames are unacknowledged, and goes on as credit comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
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
    inflight: int = 0  # requests holding an admission slot on the worker (all gateways)
    admitting: bool = True  # the worker would accept a request now (false: it answers overloaded)
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
        window: int = 64,
    ) -> None:
        """``window``: ``tok`` frames a stream may run ahead of the gateway's acknowledgements (0: no flow control)."""
        self.address = address
        self.window = window
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
                    s.inflight = frame.get("inflight", 0)
                    s.admitting = frame.get("admitting", not s.draining)
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
    def generate(self, request: GenerateRequest) -> WorkerStream:
        """Stream one generation. Iterating raises ``WorkerLost`` if the worker goes away first.

        Closing the iterator early sends ``cancel`` to the worker. The stream is flow
        controlled with a window of ``window`` ``tok`` frames: by default each frame is
        acknowledged as the consumer takes it; a consumer that calls ``take_credit()``
        acknowledges them itself (when they really left the gateway).
        """
        return WorkerStream(self, request)

    def _send(self, frame: dict[str, Any]) -> None:
        writer = self._writer
        if writer is not None:
            writer.write(pack(frame))


class Credit:
    """The gateway's side of one stream's window (docs/worker-protocol.md, "Flow control").

    ``outstanding`` counts ``tok`` frames received and not yet acknowledged; the worker
    stops the stream when it reaches ``window``. ``ack(n)`` returns credit, in batches of
    at least half a window (one ``credit`` frame per batch).
    """

    __slots__ = ("_grant", "_owed", "acked", "outstanding", "window")

    def __init__(self, window: int, grant: Callable[[int], None]) -> None:
        self.window = window
        self._grant = grant
        self._owed = 0
        self.outstanding = 0
        self.acked = 0  # ever acknowledged: progress, for a stall watch

    @property
    def paused(self) -> bool:
        return self.outstanding >= self.window

    def ack(self, n: int = 1) -> None:
        self.outstanding = max(0, self.outstanding - n)
        self.acked += n
        self._owed += n
        if self._owed * 2 >= self.window:
            owed, self._owed = self._owed, 0
            self._grant(owed)


class WorkerStream:
    """One generation on a ``WorkerClient``: an async iterator of engine events (see ``generate``)."""

    def __init__(self, client: WorkerClient, request: GenerateRequest) -> None:
        self._client = client
        self._request = request
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._wire_id = 0
        self._writer: asyncio.StreamWriter | None = None
        self._finished = False
        self._closed = False
        self._auto_ack = True
        self.credit = Credit(client.window, self._grant) if client.window > 0 else None

    def take_credit(self) -> Credit | None:
        """Acknowledge ``tok`` frames yourself from now on (``Credit.ack``); None without flow control."""
        self._auto_ack = False
        return self.credit

    def __aiter__(self) -> WorkerStream:
        return self

    def _start(self) -> None:
        c = self._client
        writer = c._writer
        if writer is None or not c._connected.is_set():
            self._finished = True
            raise WorkerLost(f"worker {c.state.name} is not connected")
        c._next_id += 1
        self._wire_id = wire_id = c._next_id
        self._writer = writer
        c._streams[wire_id] = self._queue
        c._pending += 1
        frame = gen_frame(wire_id, self._request)
        if self.credit is not None:
            frame["win"] = self.credit.window
        writer.write(pack(frame))

    def _grant(self, n: int) -> None:
        if not self._finished and self._client._writer is self._writer:
            self._client._send({"t": "credit", "id": self._wire_id, "n": n})

    async def __anext__(self) -> EngineEvent:
        if self._finished or self._closed:
            raise StopAsyncIteration
        if self._writer is None:
            self._start()
        try:
            frame = await self._queue.get()
        except BaseException:
            await self.aclose()
            raise
        if frame is _LOST:
            self._end()
            raise WorkerLost(f"worker {self._client.state.name} connection lost")
        if frame["t"] == "tok":
            credit = self.credit
            if credit is not None:
                credit.outstanding += 1
                if self._auto_ack:
                    credit.ack(1)
            return TokenEvent(frame["text"], frame.get("n", 1), frame.get("q"))
        self._end()
        return FinishEvent(
            reason=frame["reason"],
            prompt_tokens=frame.get("prompt", 0),
            completion_tokens=frame.get("completion", 0),
            queue_ms=frame.get("queue_ms", 0.0),
            error=frame.get("error"),
            cached_tokens=frame.get("cached", 0),
        )

    def _end(self) -> None:
        if not self._finished:
            self._finished = True
            self._client._streams.pop(self._wire_id, None)
            self._client._pending -= 1

    def __del__(self) -> None:  # dropped without aclose() (a ``break`` out of ``async for``): cancel it too
        if self._writer is not None and not self._finished:
            self._closed = True
            self._end()
            if self._client._writer is self._writer:
                with contextlib.suppress(Exception):
                    self._writer.write(pack({"t": "cancel", "id": self._wire_id}))

    async def aclose(self) -> None:
        """Stop the stream; a request still running on the worker is cancelled there."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None and not self._finished:
            self._end()
            if self._client._writer is self._writer:
                with contextlib.suppress(Exception):
                    self._writer.write(pack({"t": "cancel", "id": self._wire_id}))
        self._finished = True
