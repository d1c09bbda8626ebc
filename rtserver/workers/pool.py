"""Which worker serves a conversation: pinning, affinity and least-loaded choice.

``pick(model, pinned)`` keeps a conversation on its pinned worker while that worker
is alive, serves the model and is not draining (its KV cache and prompt prefix stay
warm there); otherwise it picks the least-loaded live worker of the model.
Workers can be added and removed at run time (static config, or discovery).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from rtserver.exceptions import NoWorkerAvailable
from rtserver.workers.handle import WorkerHandle

__all__ = ["WorkerHandle", "WorkerPool"]


class WorkerPool:
    def __init__(self, workers: Iterable[WorkerHandle] = ()) -> None:
        self._workers: dict[str, WorkerHandle] = {w.address: w for w in workers}

    @property
    def workers(self) -> list[WorkerHandle]:
        return list(self._workers.values())

    def by_name(self, name: str) -> WorkerHandle | None:
        for w in self._workers.values():
            if w.state.name == name:
                return w
        return None

    async def start(self, *, wait: bool = True) -> None:
        await asyncio.gather(*(w.connect(wait=wait) for w in self._workers.values()))

    async def add(self, worker: WorkerHandle, *, wait: bool = False) -> None:
        if worker.address in self._workers:
            return
        self._workers[worker.address] = worker
        await worker.connect(wait=wait)

    async def remove(self, address: str) -> None:
        worker = self._workers.pop(address, None)
        if worker is not None:
            await worker.close()

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self._workers.values()), return_exceptions=True)

    def models(self) -> set[str]:
        return {w.state.model for w in self._workers.values() if w.alive}

    def pick(self, model: str, pinned: str | None = None, *, avoid: str | None = None) -> WorkerHandle:
        """The worker for ``model``: ``pinned`` (a worker name) when usable, else least loaded.

        ``avoid`` excludes one worker (the one that just failed). Raises ``NoWorkerAvailable``.
        """
        usable = [
            w for w in self._workers.values()
            if w.alive and not w.state.draining and w.state.model == model and w.state.name != avoid
        ]
        if pinned is not None:
            for w in usable:
                if w.state.name == pinned:
                    return w
        if not usable:
            raise NoWorkerAvailable(f"no live worker serves model {model!r}")
        return min(usable, key=lambda w: w.score)

    async def wait_for_any(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for any worker to be live (start-up with remote workers)."""
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(timeout):
                while not any(w.alive for w in self._workers.values()):
                    await asyncio.sleep(0.05)

    async def wait_for(self, model: str, timeout: float) -> None:
        """Wait up to ``timeout`` s for a live worker of ``model`` (after a loss, while it restarts)."""
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(timeout):
                while not any(
                    w.alive and not w.state.draining and w.state.model == model for w in self._workers.values()
                ):
                    await asyncio.sleep(0.05)
