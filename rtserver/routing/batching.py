"""Classify messages as they arrive: padded batches on a few threads, behind a bounded queue.

``ClassifierBatcher.classify`` is called on the event loop, once per message that needs the
model. Messages wait in one queue; whenever a classifier thread is free, up to ``max_batch``
of them (oldest first) go to it as one padded onnxruntime run. With ``window_s == 0`` a lone
message runs at once and batches form only while every thread is busy, so an idle gateway
adds no wait; ``window_s > 0`` holds the first message that long for company.

The queue is bounded twice, so that a burst costs users no waiting they would notice:

* ``queue_limit``: messages queued or being classified. Beyond it ``classify`` returns
  ``None`` at once.
* ``max_wait_s``: the longest a message may wait for a thread. On arrival the batcher
  predicts that wait, ``queued / threads x`` the recent time per message (a moving
  average over finished runs), and returns ``None`` at once when it is longer (an idle
  classifier always takes the message); a
  message still queued after ``max_wait_s`` (the prediction was wrong) is handed back
  when its turn comes instead of running late.

``None`` means "route by the fast signals" (``Router``'s decision ``"fast"``). Every
result future is settled on the loop; a caller cancelled while queued simply drops out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rtserver.routing.contract import Classification

if TYPE_CHECKING:
    from rtserver.config import Settings

__all__ = ["BatchClassifier", "BatchSettings", "BatcherStats", "ClassifierBatcher", "batch_settings"]


@runtime_checkable
class BatchClassifier(Protocol):
    def classify_batch(self, texts: Sequence[str]) -> list[Classification]: ...


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """See the module docstring; ``threads`` must match the executor's thread count."""

    max_batch: int = 1
    window_s: float = 0.0
    queue_limit: int = 32
    max_wait_s: float = 0.02
    threads: int = 1


@dataclass(slots=True)
class BatcherStats:
    """Counters since start: ``sizes[n]`` batches of ``n`` messages; messages handed back because
    the queue was full (``shed_full``), their predicted wait was past ``max_wait_s``
    (``shed_predicted``) or they did wait past it (``shed_late``)."""

    sizes: dict[int, int]
    shed_full: int = 0
    shed_predicted: int = 0
    shed_late: int = 0


def batch_settings(settings: Settings) -> BatchSettings:
    """``BatchSettings`` from the gateway's ``classifier_*`` settings (threads 0: half the cores, 1 to 4)."""
    threads = settings.classifier_threads or max(1, min(4, (os.cpu_count() or 1) // 2))
    return BatchSettings(
        max_batch=settings.classifier_batch,
        window_s=settings.classifier_window_ms / 1000.0,
        queue_limit=settings.classifier_queue,
        max_wait_s=settings.classifier_max_wait_ms / 1000.0,
        threads=threads,
    )


_Item = tuple[str, float, "asyncio.Future[Classification | None]"]


class ClassifierBatcher:
    """One per router; see the module docstring. Not thread-safe: use it from one event loop."""

    __slots__ = ("_busy", "_classifier", "_clock", "_executor", "_in_flight", "_pending", "_per_message_s",
                 "_settings", "_timer", "stats")

    def __init__(
        self,
        classifier: BatchClassifier,
        settings: BatchSettings,
        executor: concurrent.futures.Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.max_batch < 1 or settings.queue_limit < 1 or settings.threads < 1:
            raise ValueError("max_batch, queue_limit and threads must be at least 1")
        self._classifier = classifier
        self._settings = settings
        self._executor = executor
        self._clock = clock
        self._pending: deque[_Item] = deque()
        self._busy = 0
        self._in_flight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._per_message_s = 0.0  # moving average of a run's time per message (0: none yet)
        self.stats = BatcherStats(sizes={})

    @property
    def queued(self) -> int:
        """Messages waiting for a thread or being classified now."""
        return len(self._pending) + self._in_flight

    async def classify(self, text: str) -> Classification | None:
        """The verdict for ``text``, or ``None`` when the queue is full or it waited too long."""
        s = self._settings
        queued = self.queued
        if queued >= s.queue_limit:
            self.stats.shed_full += 1
            return None
        if queued / s.threads * self._per_message_s > s.max_wait_s:
            self.stats.shed_predicted += 1
            return None
        future: asyncio.Future[Classification | None] = asyncio.get_running_loop().create_future()
        self._pending.append((text, self._clock(), future))
        self._kick()
        return await future

    def _kick(self) -> None:
        s = self._settings
        if not self._pending or self._busy >= s.threads:
            return
        waited = self._clock() - self._pending[0][1]
        if s.window_s <= 0 or len(self._pending) >= s.max_batch or waited >= s.window_s:
            self._dispatch()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(s.window_s - waited, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _dispatch(self) -> None:
        s = self._settings
        loop = asyncio.get_running_loop()
        deadline = self._clock() - s.max_wait_s
        while self._pending and self._busy < s.threads:
            batch: list[_Item] = []
            while self._pending and len(batch) < s.max_batch:
                item = self._pending.popleft()
                if item[2].done():  # the caller was cancelled
                    continue
                if item[1] < deadline:
                    self.stats.shed_late += 1
                    item[2].set_result(None)
                    continue
                batch.append(item)
            if not batch:
                continue
            self._busy += 1
            self._in_flight += len(batch)
            self.stats.sizes[len(batch)] = self.stats.sizes.get(len(batch), 0) + 1
            texts = [text for text, _, _ in batch]
            run = loop.run_in_executor(self._executor, self._classifier.classify_batch, texts)
            started = self._clock()
            run.add_done_callback(lambda done, items=batch, t=started: self._settle(items, done, t))  # type: ignore[misc]
        if self._timer is not None and (not self._pending or self._busy >= s.threads):
            self._timer.cancel()
            self._timer = None

    def _settle(self, items: list[_Item], done: asyncio.Future[list[Classification]], started: float) -> None:
        self._busy -= 1
        self._in_flight -= len(items)
        per = (self._clock() - started) / len(items)
        self._per_message_s = per if self._per_message_s == 0.0 else 0.8 * self._per_message_s + 0.2 * per
        exc = None if done.cancelled() else done.exception()
        for i, (_, _, future) in enumerate(items):
            if future.done():
                continue
            if done.cancelled():
                future.cancel()
            elif exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(done.result()[i])
        self._kick()
