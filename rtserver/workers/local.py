"""An engine in the gateway's own process, behind the same ``WorkerHandle`` as ``WorkerClient``.

Used for the synthetic engine in tests and benchmarks (``--embedded-worker inproc``);
the default embedded worker is a child process reached through ``WorkerClient``.
It keeps the worker's rules (handle.py): admission (``capacity + max_queue``
requests, beyond that a finish with error ``overloaded``), a flow-control window per
generation when one is configured, and ``state`` read from the engine's load whenever
it is asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from rtserver.engines.base import Engine, EngineEvent, FinishEvent, GenerateRequest, TokenEvent
from rtserver.exceptions import WorkerLost
from rtserver.workers.credit import Credit
from rtserver.workers.handle import WorkerState


class LocalWorker:
    def __init__(self, engine: Engine, *, name: str = "local", window: int = 0, max_queue: int = 64) -> None:
        """``window``: tokens a generation may run ahead of its consumer's acknowledgements (0, the default:
        no flow control, so a slow client fills its bounded outbox instead); ``max_queue``: requests
        admitted beyond the engine's capacity (a worker's ``--max-queue``)."""
        self.engine = engine
        self.window = window
        self.max_queue = max_queue
        info = engine.info
        self.address = f"inproc:{name}"
        self._state = WorkerState(
            name=name, address=self.address, engine=info.engine, model=info.model_id,
            modalities=info.modalities, capacity=info.capacity, continues=info.continues, pid=0,
        )
        self.generation = 0
        self.inflight = 0  # generations admitted and not finished
        self._started = False

    @property
    def limit(self) -> int:
        return self.engine.info.capacity + self.max_queue

    @property
    def state(self) -> WorkerState:
        load = self.engine.load()
        s = self._state
        s.active, s.waiting, s.capacity = load.active, load.waiting, load.capacity
        s.inflight, s.admitting = self.inflight, self.inflight < self.limit
        return s

    @property
    def alive(self) -> bool:
        return self._started

    @property
    def score(self) -> float:
        load = self.engine.load()
        return max(load.active + load.waiting, self.inflight) / max(1, load.capacity)

    async def connect(self, *, wait: bool = True) -> None:
        if not self._started:
            await self.engine.start()
            self._started = True
            self.generation += 1

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.engine.close()

    def generate(self, request: GenerateRequest) -> LocalStream:
        """Stream one generation (handle.py's contract); admitted on the first ``__anext__``."""
        return LocalStream(self, request)


class LocalStream:
    """One generation on a ``LocalWorker``: the engine's iterator under admission and a window."""

    __slots__ = ("_admitted", "_allowance", "_auto_ack", "_events", "_finished", "_request", "_wake", "_worker",
                 "credit")

    def __init__(self, worker: LocalWorker, request: GenerateRequest) -> None:
        self._worker = worker
        self._request = request
        self._events: AsyncIterator[EngineEvent] | None = None
        self._admitted = False
        self._finished = False
        self._auto_ack = True
        self._allowance = worker.window  # tokens the stream may still yield before it waits for a grant
        self._wake: asyncio.Future[None] | None = None
        self.credit = Credit(worker.window, self._grant) if worker.window > 0 else None

    def take_credit(self) -> Credit | None:
        self._auto_ack = False
        return self.credit

    def _grant(self, n: int) -> None:
        self._allowance += n
        wake = self._wake
        if wake is not None and not wake.done() and self._allowance > 0:
            wake.set_result(None)

    def __aiter__(self) -> LocalStream:
        return self

    async def __anext__(self) -> EngineEvent:
        if self._finished:
            raise StopAsyncIteration
        events = self._events
        if events is None:
            w = self._worker
            if not w.alive:
                self._finished = True
                raise WorkerLost(f"worker {w.address} is not running")
            if w.inflight >= w.limit:
                self._finished = True
                return FinishEvent("error", 0, 0, error="overloaded")
            w.inflight += 1
            self._admitted = True
            events = self._events = w.engine.generate(self._request)
        try:
            event = await events.__anext__()
            if isinstance(event, TokenEvent) and self.credit is not None:
                while self._allowance <= 0:  # paused: the consumer has not caught up
                    self._wake = asyncio.get_running_loop().create_future()
                    await self._wake
                    self._wake = None
        except StopAsyncIteration:
            self._end()
            return FinishEvent("error", 0, 0, error="engine stream ended without a finish")
        except BaseException:
            await self.aclose()
            raise
        if isinstance(event, FinishEvent):
            self._end()
            return event
        credit = self.credit
        if credit is not None:
            self._allowance -= 1
            credit.outstanding += 1
            if self._auto_ack:
                credit.ack(1)
        return event

    def _end(self) -> None:
        if not self._finished:
            self._finished = True
            if self._admitted:
                self._worker.inflight -= 1

    async def aclose(self) -> None:
        """Stop the generation; the engine iterator is closed, which frees its slot within one step."""
        events, finished = self._events, self._finished
        self._end()
        if events is not None and not finished:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
