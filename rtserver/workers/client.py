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
from typing import Any, NoReturn

from rtserver.engines.base import EngineEvent, GenerateRequest
from rtserver.exceptions import WorkerLost, WorkerProtocolError
from rtserver.workers.credit import Credit
from rtserver.workers.frames import Cancel, Done, Gen, Grant, Load, Ready, tok_event
from rtserver.workers.handle import WorkerState
from rtserver.workers.wire import FrameReader, pack

__all__ = ["Credit", "WorkerClient", "WorkerState", "WorkerStream"]

log = logging.getLogger("rtserver.workers")


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
            async with asyncio.timeout(self._connect_timeout):
                await self._connected.wait()

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
                async with asyncio.timeout(self._connect_timeout):
                    reader, writer = await self._open()
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
        while not self._closing:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands
            # as the read completes (a heartbeat every 0.5 s makes that likely), and close()
            # then waited forever on a loop that went on reading.
            try:
                async with asyncio.timeout(self._timeout):
                    data = await reader.read(65536)
            except TimeoutError:
                raise TimeoutError(f"heartbeat timeout: nothing received for {self._timeout:g} s") from None
            if not data:
                raise ConnectionResetError("worker closed the connection")
            self.state.last_seen = time.monotonic()
            for frame in decoder.feed(data):
                kind = frame["t"]
                if kind == "tok" or kind == "done":
                    sid = frame.get("id")
                    queue = self._streams.get(sid) if type(sid) is int else None
                    if queue is not None:
                        queue.put_nowait(frame)
                elif kind == "load":
                    load = Load.from_wire(frame)
                    s = self.state
                    s.active, s.waiting, s.capacity, s.draining = load.active, load.waiting, load.capacity, load.draining
                    s.inflight, s.admitting = load.inflight, load.admitting
                elif kind == "ready":
                    ready = Ready.from_wire(frame)
                    s = self.state
                    s.name, s.engine, s.model, s.modalities = ready.name, ready.engine, ready.model, ready.modalities
                    s.capacity, s.pid, s.continues = ready.capacity, ready.pid, ready.continues
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
        win = self.credit.window if self.credit is not None else None
        writer.write(pack(Gen(wire_id, self._request, win).to_wire()))

    def _grant(self, n: int) -> None:
        if not self._finished and self._client._writer is self._writer:
            self._client._send(Grant(self._wire_id, n).to_wire())

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
            try:
                return tok_event(frame)
            except WorkerProtocolError as exc:
                self._fail(exc)
        try:
            done = Done.from_wire(frame)
        except WorkerProtocolError as exc:
            self._fail(exc)
        self._end()
        return done.event()

    def _fail(self, exc: WorkerProtocolError) -> NoReturn:
        """A malformed frame for this stream: it ends as lost (the worker cannot be trusted with it)."""
        self._end()
        self._cancel_on_worker()
        raise WorkerLost(f"worker {self._client.state.name} sent a bad frame: {exc}") from None

    def _end(self) -> None:
        if not self._finished:
            self._finished = True
            self._client._streams.pop(self._wire_id, None)
            self._client._pending -= 1

    def _cancel_on_worker(self) -> None:
        if self._writer is not None and self._client._writer is self._writer:
            with contextlib.suppress(Exception):
                self._writer.write(pack(Cancel(self._wire_id).to_wire()))

    def __del__(self) -> None:  # dropped without aclose() (a ``break`` out of ``async for``): cancel it too
        if self._writer is not None and not self._finished:
            self._closed = True
            self._end()
            self._cancel_on_worker()

    async def aclose(self) -> None:
        """Stop the stream; a request still running on the worker is cancelled there."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None and not self._finished:
            self._end()
            self._cancel_on_worker()
        self._finished = True
