"""Generations on one engine, keyed by an integer id, with per-stream credit.

``Runner`` is what an engine host (host.py) runs, and what a worker runs in its own
process for an engine hosted inline. It takes ``gen`` / ``cancel`` / ``credit`` frames
and emits ``tok`` / ``done`` / ``load`` frames through ``emit`` (no I/O of its own).

Guarantees:

* Every submitted ``gen`` gets exactly one ``done``, whatever happens: a done callback
  on the stream's task sends ``cancelled`` (or ``error``) when the task was cancelled
  before it ever ran, or failed, without sending its own.
* ``cancel`` closes the engine iterator, which frees the engine slot within one step.
* A stream with a window (``gen.win``) emits at most that many ``tok`` frames beyond
  the credit granted so far; it then stops pulling from the engine until ``credit``
  arrives. Nothing is dropped: the token that found the window closed waits, and a
  pull-based engine (synthetic, openai) stops generating. Engines that step every
  sequence on their own (openvino, transformers) keep the paused stream's tokens in
  their per-request queue, which ``max_tokens`` bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from rtserver.engines.base import Engine, FinishEvent, TokenEvent
from rtserver.exceptions import WorkerProtocolError
from rtserver.workers.frames import Cancel, Done, Gen, Grant, HostLoad, tok_values

log = logging.getLogger("rtserver.runner")

Emit = Callable[[dict[str, Any]], None]


class _Stream:
    __slots__ = ("credit", "done", "id", "task", "wake")

    def __init__(self, stream_id: int, window: int | None) -> None:
        self.id = stream_id
        self.credit = window  # None: no flow control
        self.done = False
        self.task: asyncio.Task[None] | None = None
        self.wake: asyncio.Future[None] | None = None


class Runner:
    def __init__(self, engine: Engine, emit: Emit) -> None:
        self.engine = engine
        self._emit = emit
        self._streams: dict[int, _Stream] = {}
        self._last_load: tuple[object, ...] | None = None

    def __len__(self) -> int:
        return len(self._streams)

    # ------------------------------------------------------------------ frames in
    def handle(self, frame: dict[str, Any]) -> None:
        """One frame in; raises ``WorkerProtocolError`` for a malformed one (unknown types are ignored)."""
        kind = frame["t"]
        if kind == "gen":
            self.submit(Gen.from_wire(frame))
        elif kind == "cancel":
            self.cancel(Cancel.from_wire(frame).id)
        elif kind == "credit":
            grant = Grant.from_wire(frame)
            self.credit(grant.id, grant.n)

    def submit(self, gen: Gen) -> None:
        stream_id = gen.id
        if stream_id in self._streams:
            raise WorkerProtocolError(f"stream {stream_id} is already running")
        stream = _Stream(stream_id, gen.win)
        self._streams[stream_id] = stream
        stream.task = asyncio.get_running_loop().create_task(self._run(stream, gen))
        stream.task.add_done_callback(lambda task: self._finished(stream, task))

    def cancel(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.task is not None:
            stream.task.cancel()

    def credit(self, stream_id: int, n: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.credit is None:
            return
        stream.credit += n
        wake = stream.wake
        if wake is not None and not wake.done() and stream.credit > 0:
            wake.set_result(None)

    def cancel_all(self) -> None:
        for stream in list(self._streams.values()):
            if stream.task is not None:
                stream.task.cancel()

    async def wait_idle(self) -> None:
        while self._streams:
            await asyncio.gather(*(s.task for s in list(self._streams.values()) if s.task), return_exceptions=True)

    def load_changed(self) -> HostLoad | None:
        """A ``load`` frame when the engine's load differs from the last one reported."""
        load = self.engine.load()
        kv = kv_stats_of(self.engine)
        now = (load.active, load.waiting, load.capacity, kv)
        if now == self._last_load:
            return None
        self._last_load = now
        return HostLoad(load.active, load.waiting, load.capacity, None if kv is None else dict(kv))

    # ------------------------------------------------------------------ one stream
    async def _run(self, stream: _Stream, gen: Gen) -> None:
        emit = self._emit
        sid = stream.id
        async with contextlib.aclosing(self.engine.generate(gen.request)) as events:  # type: ignore[type-var]
            async for event in events:
                if isinstance(event, TokenEvent):
                    if stream.credit is not None:
                        while stream.credit <= 0:  # paused: the consumer has not caught up
                            stream.wake = asyncio.get_running_loop().create_future()
                            await stream.wake
                            stream.wake = None
                        stream.credit -= 1
                    emit(tok_values(sid, event.text, event.tokens, event.queue_ms))
                elif isinstance(event, FinishEvent):
                    stream.done = True
                    emit(Done.of(sid, event).to_wire())
                    return
        stream.done = True
        emit(Done.failed(sid, "engine stream ended without a finish").to_wire())

    def _finished(self, stream: _Stream, task: asyncio.Task[None]) -> None:
        self._streams.pop(stream.id, None)
        if stream.done:
            return
        if task.cancelled():
            done = Done(stream.id, "cancelled")
        else:
            exc = task.exception()
            log.error("generation %s failed: %r", stream.id, exc)
            done = Done.failed(stream.id, str(exc) or type(exc).__name__)
        stream.done = True
        self._emit(done.to_wire())


def kv_stats_of(engine: object) -> tuple[tuple[str, int], ...] | None:
    """The KV-retention counters of an engine that keeps conversations' KV (``kv_stats()``), else None."""
    stats = getattr(engine, "kv_stats", None)
    if not callable(stats):
        return None
    s = stats()
    return tuple((name, int(getattr(s, name, 0))) for name in KV_STATS)


KV_STATS = ("retained_tokens", "retained_conversations", "hits", "misses", "evictions", "reused_tokens")

