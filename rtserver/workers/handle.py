"""What the gateway uses of a worker: ``WorkerHandle`` and the ``Generation`` it streams.

Two implementations: ``WorkerClient`` (client.py, a worker process over the worker
wire) and ``LocalWorker`` (local.py, an engine in the gateway's own process).
tests/contract/test_worker_handle.py runs the same behaviour tests over both.

Contract:

* ``await connect()`` starts the handle; with ``wait`` it returns once the worker is
  ready (``alive``, and ``state`` says its name, engine, model, modalities, capacity).
* ``generate(request)`` returns a ``Generation`` at once; nothing is sent before the
  first ``__anext__``. It yields ``TokenEvent`` … then exactly one ``FinishEvent``
  with the usage. A request beyond the worker's admission bound (``capacity +
  max_queue`` requests in flight) finishes at once with reason ``error`` and error
  ``overloaded`` (``draining`` while the worker drains). Iterating raises ``WorkerLost``
  when the worker goes away first (for ``LocalWorker``: when it is not running).
* ``Generation.aclose()`` before the finish cancels the request and frees its slot:
  ``state.inflight`` counts it no more once ``state`` is next refreshed.
* Flow control: a generation has a window of ``Credit.window`` tokens. Until
  ``take_credit()`` is called every token is acknowledged as it is taken; after it,
  the consumer acknowledges them (``Credit.ack``) and the stream pauses at the producer
  once ``window`` tokens are unacknowledged, resuming as credit comes back, with no
  token lost. ``take_credit()`` returns None for a stream without flow control.
* ``close()`` stops the handle; generations in flight end (``WorkerLost`` or a finish).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from rtserver.engines.base import EngineEvent, GenerateRequest
from rtserver.workers.credit import Credit


@dataclass(slots=True)
class WorkerState:
    """What the gateway knows of a worker: from its ``ready`` and its latest ``load``."""

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


class Generation(Protocol):
    """One generation: an async iterator of engine events with its flow-control window."""

    def __aiter__(self) -> AsyncIterator[EngineEvent]: ...

    async def __anext__(self) -> EngineEvent: ...

    def take_credit(self) -> Credit | None:
        """From now on the consumer acknowledges tokens itself (``Credit.ack``); None: no flow control."""
        ...

    async def aclose(self) -> None:
        """Stop the generation; one still running is cancelled and its slot freed."""
        ...


class WorkerHandle(Protocol):
    address: str
    generation: int  # bumps on every (re)connect

    @property
    def state(self) -> WorkerState: ...

    @property
    def alive(self) -> bool: ...

    @property
    def score(self) -> float:
        """Load for the pool's least-loaded choice: work per slot."""
        ...

    async def connect(self, *, wait: bool = True) -> None: ...

    async def close(self) -> None: ...

    def generate(self, request: GenerateRequest) -> Generation: ...
