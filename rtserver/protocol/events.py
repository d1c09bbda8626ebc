"""What happens to a conversation: the events fed to ``ConversationMachine.handle``; pure.

Each event is a plain record. Times come in the events (``now`` is
``time.perf_counter()``-like, ``wall`` is unix seconds), so the machine never reads a
clock and tests drive it with a fake one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from rtserver.exceptions import RtServerError
from rtserver.protocol.frames import Decision, Message


@dataclass(frozen=True, slots=True)
class MessageAccepted:
    """A client ``message`` passed admission; its response is ``response_id``."""

    message: Message
    response_id: str
    received: float


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """A client ``cancel`` (or a slow-consumer close) for the active response."""


@dataclass(frozen=True, slots=True)
class RouteDecided:
    """The router decided and the pool picked ``worker`` for the response."""

    use_case: str
    model: str
    decision: Decision
    confidence: float
    route_ms: float
    context_changed: bool
    state: Mapping[str, Any]  # RouteState.to_dict(), kept in the session record
    worker: str
    modalities: frozenset[str]  # what the worker's model takes
    queue_ms: float  # time the gateway spent picking the worker
    wall: float


@dataclass(frozen=True, slots=True)
class WorkerPicked:
    """After a ``Retry``: the worker the generation starts again on."""

    worker: str


@dataclass(frozen=True, slots=True)
class WorkerToken:
    text: str
    tokens: int
    queue_ms: float | None  # the worker's own queueing, on its first token
    now: float


@dataclass(frozen=True, slots=True)
class WorkerFinished:
    reason: str  # stop, length, cancelled, error
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    error: str | None
    now: float
    wall: float


@dataclass(frozen=True, slots=True)
class WorkerLostEvent:
    """The worker's stream broke. ``heir``: a live worker of the model that can continue an
    answer (``continues``), other than the lost one, if the pool has one."""

    reason: str
    heir: str | None
    now: float
    wall: float


@dataclass(frozen=True, slots=True)
class Failed:
    """The response could not go on: routing refused, no worker, an internal error."""

    error: RtServerError
    now: float
    wall: float


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The response's generation was cancelled (client ``cancel``, nobody came back, shutdown)."""

    now: float
    wall: float


@dataclass(frozen=True, slots=True)
class Detached:
    """The socket closed; the session (and a running response) are kept for the grace period."""

    wall: float


@dataclass(frozen=True, slots=True)
class GraceExpired:
    """Nobody resumed within the grace period."""


@dataclass(frozen=True, slots=True)
class Attached:
    """A socket took the conversation (new, or resumed with its token already rotated)."""

    wall: float


Event: TypeAlias = (
    MessageAccepted | CancelRequested | RouteDecided | WorkerPicked | WorkerToken | WorkerFinished | WorkerLostEvent | Failed
    | Cancelled | Detached | GraceExpired | Attached
)
