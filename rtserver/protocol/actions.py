"""What the gateway must do for a conversation: the actions ``ConversationMachine`` returns; pure.

The executor (rtserver/server/turn.py) carries each one out, in order: frames to the
attached socket, session writes and replay-log appends to the store, generations and
cancels to the workers, timers to the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from rtserver.engines.base import GenerateRequest
from rtserver.protocol.frames import Done
from rtserver.sessions.base import Session


@dataclass(frozen=True, slots=True)
class Send:
    """A frame for the attached socket (already recorded for replay). ``error``: its wire code,
    for an error frame; ``token``: a token frame, which returns the worker stream's credit."""

    frame: dict[str, Any]
    error: str | None = None
    token: bool = False


@dataclass(frozen=True, slots=True)
class Save:
    session: Session


@dataclass(frozen=True, slots=True)
class AppendLog:
    """Frames for the response's replay log in the store (read by followers and resumes)."""

    session_id: str
    response_id: str
    frames: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Generate:
    """Run ``request`` on ``worker`` and feed its events back."""

    request: GenerateRequest
    worker: str


@dataclass(frozen=True, slots=True)
class Retry:
    """Pick another worker of ``model`` (else wait for one) and report it with ``WorkerPicked``."""

    model: str
    avoid: str


@dataclass(frozen=True, slots=True)
class WorkerFailure:
    """A worker was lost: count it (``stage``) and log it."""

    stage: Literal["before_first_token", "mid_stream", "continued"]
    worker: str
    heir: str | None = None


@dataclass(frozen=True, slots=True)
class CancelGeneration:
    """Stop the running generation; its end comes back as ``Cancelled``."""


@dataclass(frozen=True, slots=True)
class StartGraceTimer:
    seconds: float


@dataclass(frozen=True, slots=True)
class Forget:
    """Drop the conversation from the gateway's memory (the store keeps it until its TTL)."""


@dataclass(frozen=True, slots=True)
class Finished:
    """The response ended with ``done``; for metrics, the log line and the socket's state."""

    done: Done
    use_case: str
    model: str
    worker: str | None
    gaps_ms: list[float]
    total_s: float


Action: TypeAlias = (
    Send | Save | AppendLog | Generate | Retry | WorkerFailure | CancelGeneration | StartGraceTimer | Forget
    | Finished
)
