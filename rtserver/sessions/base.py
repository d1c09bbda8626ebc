"""The session record and the store interface both backends implement.

Contract (tests/contract/test_session_store.py runs it against every backend):

* ``create`` stores a new session; ``load`` returns it or raises ``SessionNotFound``
  (never existed, or deleted) or ``SessionExpired`` (idle longer than the TTL).
* ``save`` replaces the stored record atomically and slides its TTL.
* ``touch`` slides the TTL without rewriting the record.
* ``rotate(session, old_digest)`` is the resume token's compare-and-set: it stores
  ``session`` (carrying the new ``token_digest``) and returns True only if the stored
  digest is still ``old_digest`` (or nothing is stored yet) and ``old_digest`` was
  never retired; it then retires ``old_digest``. Of concurrent rotations from one
  digest, on any number of gateways, exactly one returns True. A ``save`` (or
  ``create``) carrying a retired digest is ignored: a superseded copy cannot undo it.
* Response frames for resume: ``append_frames`` adds encoded-agnostic frame records
  to a response's replay log (capped, short TTL); ``read_frames`` returns those with
  ``seq > after`` in order, or ``None`` when the log is gone.
* Any backend failure raises ``StoreError`` (``StoreUnavailable``/``StoreTimeout``).
* ``available`` is whether the last call reached the backend: False from a call that
  failed (or a ``healthy()`` that found the backend down) until one succeeds. It costs
  nothing to read (no I/O), so readiness probes use it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol


def new_session_id() -> str:
    return "s_" + secrets.token_urlsafe(18)  # 144 bits


def new_resume_token() -> str:
    return secrets.token_urlsafe(24)  # 192 bits


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(slots=True)
class Session:
    session_id: str
    token_digest: str
    created_at: float = field(default_factory=time.time)
    last_accessed: float = field(default_factory=time.time)
    route: dict[str, Any] | None = None  # RouteState.to_dict()
    worker: str | None = None            # pinned worker name
    history: list[list[str]] = field(default_factory=list)  # [[role, content], …]
    request_count: int = 0
    bypass_count: int = 0
    context_changes: int = 0
    active_response: str | None = None   # response id being streamed, for resume
    client: str | None = None
    subject: str | None = None           # auth subject the session is bound to

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(self.token_digest, token_digest(token))

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "token_digest": self.token_digest,
            "created_at": self.created_at,
            "last_accessed": self.last_accessed,
            "route": self.route,
            "worker": self.worker,
            "history": [list(turn) for turn in self.history],  # a snapshot, not the live list
            "request_count": self.request_count,
            "bypass_count": self.bypass_count,
            "context_changes": self.context_changes,
            "active_response": self.active_response,
            "client": self.client,
            "subject": self.subject,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Session:
        return cls(
            session_id=d["session_id"],
            token_digest=d["token_digest"],
            created_at=float(d.get("created_at", 0.0)),
            last_accessed=float(d.get("last_accessed", 0.0)),
            route=d.get("route"),
            worker=d.get("worker"),
            history=[list(x) for x in d.get("history", [])],
            request_count=int(d.get("request_count", 0)),
            bypass_count=int(d.get("bypass_count", 0)),
            context_changes=int(d.get("context_changes", 0)),
            active_response=d.get("active_response"),
            client=d.get("client"),
            subject=d.get("subject"),
        )


class SessionStore(Protocol):
    name: str

    @property
    def available(self) -> bool:
        """The last call reached the backend (``healthy()`` refreshes it); never does I/O."""
        ...

    async def create(self, session: Session) -> None: ...

    async def load(self, session_id: str) -> Session: ...

    async def save(self, session: Session) -> None:
        """Write ``session``, sliding its TTL. Ignored (no error) when its token was rotated
        since (a stale writer) or when the session has expired: a late write never revives it."""
        ...

    async def touch(self, session_id: str) -> None: ...

    async def rotate(self, session: Session, old_digest: str) -> bool: ...

    async def delete(self, session_id: str) -> None: ...

    async def append_frames(self, session_id: str, response_id: str, frames: list[dict[str, Any]]) -> None: ...

    async def read_frames(self, session_id: str, response_id: str, after: int) -> list[dict[str, Any]] | None: ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...
