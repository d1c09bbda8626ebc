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
from rtserver.workers.wire import request_from_frame

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
        kind = frame["t"]
        if kind == "gen":
            self.submit(frame)
        elif kind == "cancel":
            self.cancel(int(frame["id"]))
        elif kind == "credit":
            self.credit(int(frame["id"]), int(frame["n"]))

    def submit(self, frame: dict[str, Any]) -> None:
        stream_id = int(frame["id"])
        if stream_id in self._streams:
            raise WorkerProtocolError(f"stream {stream_id} is already running")
        win = frame.get("win")
        stream = _Stream(stream_id, int(win) if win is not None else None)
        self._streams[stream_id] = stream
        stream.task = asyncio.get_running_loop().create_task(self._run(stream, frame))
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

    def load_changed(self) -> dict[str, Any] | None:
        """A ``load`` frame when the engine's load differs from the last one reported."""
        load = self.engine.load()
        kv = kv_stats_of(self.engine)
        now = (load.active, load.waiting, load.capacity, kv)
        if now == self._last_load:
            return None
        self._last_load = now
        frame: dict[str, Any] = {"t": "load", "active": load.active, "waiting": load.waiting, "capacity": load.capacity}
        if kv is not None:
            frame["kv"] = dict(kv)
        return frame

    # ------------------------------------------------------------------ one stream
    async def _run(self, stream: _Stream, frame: dict[str, Any]) -> None:
        emit = self._emit
        sid = stream.id
        request = request_from_frame(frame)
        async with contextlib.aclosing(self.engine.generate(request)) as events:  # type: ignore[type-var]
            async for event in events:
                if isinstance(event, TokenEvent):
                    if stream.credit is not None:
                        while stream.credit <= 0:  # paused: the consumer has not caught up
                            stream.wake = asyncio.get_running_loop().create_future()
                            await stream.wake
                            stream.wake = None
                        stream.credit -= 1
                    tok: dict[str, Any] = {"t": "tok", "id": sid, "text": event.text, "n": event.tokens}
                    if event.queue_ms is not None:
                        tok["q"] = event.queue_ms
                    emit(tok)
                elif isinstance(event, FinishEvent):
                    stream.done = True
                    emit(done_frame(sid, event))
                    return
        stream.done = True
        emit({"t": "done", "id": sid, "reason": "error", "prompt": 0, "completion": 0,
              "error": "engine stream ended without a finish"})

    def _finished(self, stream: _Stream, task: asyncio.Task[None]) -> None:
        self._streams.pop(stream.id, None)
        if stream.done:
            return
        if task.cancelled():
            frame: dict[str, Any] = {"t": "done", "id": stream.id, "reason": "cancelled", "prompt": 0, "completion": 0}
        else:
            exc = task.exception()
            log.error("generation %s failed: %r", stream.id, exc)
            frame = {"t": "done", "id": stream.id, "reason": "error", "prompt": 0, "completion": 0,
                     "error": str(exc) or type(exc).__name__}
        stream.done = True
        self._emit(frame)


def kv_stats_of(engine: object) -> tuple[tuple[str, int], ...] | None:
    """The KV-retention counters of an engine that keeps conversations' KV (``kv_stats()``), else None."""
    stats = getattr(engine, "kv_stats", None)
    if not callable(stats):
        return None
    s = stats()
    return tuple((name, int(getattr(s, name, 0))) for name in KV_STATS)


KV_STATS = ("retained_tokens", "retained_conversations", "hits", "misses", "evictions", "reused_tokens")


def done_frame(stream_id: int, event: FinishEvent) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "t": "done",
        "id": stream_id,
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
