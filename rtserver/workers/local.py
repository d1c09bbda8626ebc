"""An engine in the gateway's own process, behind the same face as ``WorkerClient``.

Used for the synthetic engine in tests and benchmarks (``--embedded-worker inproc``);
the default embedded worker is a child process reached through ``WorkerClient``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from rtserver.engines.base import Engine, EngineEvent, GenerateRequest
from rtserver.workers.client import WorkerState


class LocalWorker:
    def __init__(self, engine: Engine, *, name: str = "local") -> None:
        self.engine = engine
        info = engine.info
        self.address = f"inproc:{name}"
        self.state = WorkerState(
            name=name, address=self.address, engine=info.engine, model=info.model_id,
            modalities=info.modalities, capacity=info.capacity, continues=info.continues,
        )
        self.generation = 1
        self._started = False

    @property
    def alive(self) -> bool:
        return self._started

    @property
    def score(self) -> float:
        load = self.engine.load()
        return (load.active + load.waiting) / max(1, load.capacity)

    async def connect(self, *, wait: bool = True) -> None:
        if not self._started:
            await self.engine.start()
            self._started = True

    async def close(self) -> None:
        if self._started:
            await self.engine.close()
            self._started = False

    def generate(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]:
        return self.engine.generate(request)
