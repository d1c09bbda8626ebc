"""Typed records for every frame of protocol v1 (docs/protocol.md).

Client frames are decoded into these by :mod:`rtserver.protocol.codec`; server frames
are built from them and encoded by the same module. JSON and msgpack are two
encodings of the same records: ``bytes`` fields travel as base64 strings in JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

AttachmentKind = Literal["image", "audio", "file"]
Decision = Literal["full", "bypass", "reroute", "fast"]
FinishReason = Literal["stop", "length", "cancelled", "error"]


# --------------------------------------------------------------------- client → server
@dataclass(frozen=True, slots=True)
class Attachment:
    kind: AttachmentKind
    mime: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Hello:
    type: Literal["hello"] = "hello"
    session_id: str | None = None
    resume_token: str | None = None
    auth: str | None = None
    client: str | None = None
    last_seq: int | None = None
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    text: str
    attachments: tuple[Attachment, ...] = ()
    context: Mapping[str, Any] | None = None
    type: Literal["message"] = "message"


@dataclass(frozen=True, slots=True)
class Cancel:
    response_id: str | None = None
    type: Literal["cancel"] = "cancel"


@dataclass(frozen=True, slots=True)
class Ping:
    t: Any = None
    type: Literal["ping"] = "ping"


@dataclass(frozen=True, slots=True)
class Refresh:
    """A new connection token for the live socket; it must name the same subject."""

    auth: str
    type: Literal["refresh"] = "refresh"


ClientFrame: TypeAlias = Hello | Message | Cancel | Ping | Refresh


# --------------------------------------------------------------------- server → client
@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: str
    resume_token: str
    resumed: bool
    limits: Mapping[str, int]
    route: Mapping[str, Any] | None = None
    type: Literal["session"] = "session"


@dataclass(frozen=True, slots=True)
class Route:
    response_id: str
    message_id: str
    use_case: str
    model: str
    worker: str
    decision: Decision
    confidence: float
    route_ms: float
    context_changed: bool = False
    type: Literal["route"] = "route"


@dataclass(frozen=True, slots=True)
class TokenStats:
    ttft_ms: float
    gap_ms: float
    route_ms: float
    queue_ms: float
    elapsed_ms: float


@dataclass(frozen=True, slots=True)
class Seam:
    """On the first token after a worker switch: the worker that took over, and why."""

    worker: str
    reason: str


@dataclass(frozen=True, slots=True)
class Token:
    """``seq_last``: the last seq a merged (coalesced) frame covers; ``seam``: see ``Seam``."""

    response_id: str
    seq: int
    text: str
    stats: TokenStats
    seq_last: int | None = None
    seam: Seam | None = None
    type: Literal["token"] = "token"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV the pinned worker kept from the conversation's last turn


@dataclass(frozen=True, slots=True)
class DoneStats:
    ttft_ms: float | None
    total_ms: float
    tokens_per_s: float
    gap_p50_ms: float | None
    gap_p95_ms: float | None
    route_ms: float
    decision: Decision


@dataclass(frozen=True, slots=True)
class Done:
    response_id: str
    finish_reason: FinishReason
    usage: Usage
    stats: DoneStats
    last_seq: int = -1
    type: Literal["done"] = "done"


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    status: int
    message: str
    retryable: bool
    ref: str | None = None
    fatal: bool = False
    response_id: str | None = None
    type: Literal["error"] = "error"


@dataclass(frozen=True, slots=True)
class Pong:
    t: Any = None
    type: Literal["pong"] = "pong"


@dataclass(frozen=True, slots=True)
class Refreshed:
    """A ``refresh`` was accepted; the socket now lives until ``expires_at``."""

    expires_at: float
    type: Literal["refreshed"] = "refreshed"


@dataclass(frozen=True, slots=True)
class TokenExpiring:
    """The socket's token expires at ``expires_at`` (unix seconds): send ``refresh`` before."""

    expires_at: float
    in_ms: float
    type: Literal["token_expiring"] = "token_expiring"


ServerFrame: TypeAlias = SessionInfo | Route | Token | Done | Error | Pong | Refreshed | TokenExpiring


@dataclass(frozen=True, slots=True)
class Limits:
    """Client-visible limits, echoed in the ``session`` frame; these defaults are the settings' defaults."""

    max_frame_bytes: int = 8 * 1024 * 1024
    max_text_chars: int = 16_000
    max_attachments: int = 4
    max_attachment_bytes: int = 5 * 1024 * 1024
    max_context_bytes: int = 4096
    max_id_chars: int = 128
    messages_per_second: float = 5.0
    message_burst: int = 20

    def as_wire(self) -> dict[str, int]:
        return {
            "max_frame_bytes": self.max_frame_bytes,
            "max_text_chars": self.max_text_chars,
            "max_attachments": self.max_attachments,
            "max_attachment_bytes": self.max_attachment_bytes,
            "max_context_bytes": self.max_context_bytes,
            "messages_per_second": int(self.messages_per_second),
            "message_burst": self.message_burst,
        }


__all__ = [
    "Attachment", "AttachmentKind", "Cancel", "ClientFrame", "Decision", "Done", "DoneStats",
    "Error", "FinishReason", "Hello", "Limits", "Message", "Ping", "Pong", "Refresh", "Refreshed", "Route",
    "Seam", "ServerFrame", "SessionInfo", "Token", "TokenExpiring", "TokenStats", "Usage",
]
