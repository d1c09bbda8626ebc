"""The rtserver exception tree.

Each class carries the wire code a client sees (``code``, an :class:`ErrorCode`) and,
where the error ends the socket, the close code (``close``, a :class:`CloseCode`), as
class attributes. Nothing sets a code on an instance, with one exception: a
``ProtocolError`` names the frame rule that failed (the 1001-1014 codes), given when it
is raised. ``message`` is what the error frame says and ``ref`` the client frame id it
answers.

::

    RtServerError                          internal (2099)
    ├── ConfigError(.., ValueError)        start-up only; never reaches a client
    ├── ProtocolError                      a client frame was rejected: its rule's code (1001-1014)
    │   └── FrameTooLarge                  frame_too_large (1010)
    ├── AttachmentUnsupported              attachment_unsupported (1012); the text is still answered
    ├── RateLimited                        rate_limited (2002); the frame is dropped
    ├── Refused                            refused at connect: fatal error frame, then a close
    │   ├── OriginNotAllowed               origin_not_allowed (1104), close 4004
    │   └── TooManyConnections             rate_limited (2002), close 4029
    ├── Draining                           overloaded (2005): the server is shutting down
    ├── InternalError                      internal (2099): a server bug, or a generation that failed
    ├── SessionError
    │   ├── SessionNotFound(.., KeyError)  session_not_found (1102)
    │   ├── SessionExpired                 session_expired (1103)
    │   ├── RecoveryImpossible             recovery_impossible (1105)
    │   └── Unauthorized(.., PermissionError)   unauthorized (1101), close 4001
    │       └── TokenExpired               token_expired (1106), close 4005
    ├── StoreError                         store_unavailable (2006)
    │   ├── StoreUnavailable(.., ConnectionError)
    │   └── StoreTimeout(.., TimeoutError)
    ├── WorkerError                        worker_unavailable (2003)
    │   ├── NoWorkerAvailable
    │   ├── WorkerLost(.., ConnectionError)     worker_lost (2004)
    │   ├── WorkerOverloaded               overloaded (2005): the worker's queue is full
    │   └── WorkerProtocolError
    ├── EngineError
    │   └── ModelNotFound(.., FileNotFoundError)
    ├── AuthUnavailable(.., ConnectionError)    auth_unavailable (2007), close 1013
    └── RouteError                         internal (2099): a routing bug
        ├── InvalidRouteOverride(.., ValueError)  invalid_route_override (1011)
        ├── InvalidRouteState(.., ValueError)     (defined in rtserver.routing.router)
        └── ModelArtifactError(.., ValueError)    (defined in rtserver.routing.classifier)

The codes are those of the tables in docs/protocol.md (tests/unit/test_exceptions.py
checks them against the document).
"""

from __future__ import annotations

from typing import ClassVar

from rtserver.codes import CloseCode, ErrorCode


class RtServerError(Exception):
    """Root of every exception rtserver raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL
    close: ClassVar[CloseCode | None] = None

    def __init__(self, message: str = "", *, ref: str | None = None) -> None:
        if message:
            super().__init__(message)
        else:
            super().__init__()
        self.ref = ref

    @property
    def message(self) -> str:
        """The error frame's ``message``: the text raised with, else the code's name."""
        return str(self) or self.code.wire


class ConfigError(RtServerError, ValueError):
    """The configuration is invalid; raised at start-up only."""


class ProtocolError(RtServerError):
    """A client frame was rejected by the rule whose code is ``code``; ``ref`` is the client frame id it answers."""

    def __init__(self, code: ErrorCode, message: str, *, ref: str | None = None) -> None:
        super().__init__(message, ref=ref)
        self.code = code


class FrameTooLarge(ProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(ErrorCode.FRAME_TOO_LARGE, f"frame of {size} bytes exceeds {limit}")


class AttachmentUnsupported(RtServerError):
    """The routed model cannot take an attachment's kind; the text is answered without it."""

    code = ErrorCode.ATTACHMENT_UNSUPPORTED


class RateLimited(RtServerError):
    """Frames over ``messages_per_second``; the frame is dropped, the socket stays."""

    code = ErrorCode.RATE_LIMITED


class Refused(RtServerError):
    """A connection refused at connect time: a fatal error frame, then ``close``."""


class OriginNotAllowed(Refused):
    code = ErrorCode.ORIGIN_NOT_ALLOWED
    close = CloseCode.ORIGIN_NOT_ALLOWED


class TooManyConnections(Refused):
    code = ErrorCode.RATE_LIMITED
    close = CloseCode.RATE_LIMITED


class Draining(RtServerError):
    """The server is shutting down and takes no new message; reconnect to resume."""

    code = ErrorCode.OVERLOADED


class InternalError(RtServerError):
    """A server bug, or a generation the worker reported as failed."""

    code = ErrorCode.INTERNAL


class SessionError(RtServerError):
    pass


class SessionNotFound(SessionError, KeyError):
    code = ErrorCode.SESSION_NOT_FOUND

    def __str__(self) -> str:  # KeyError quotes its argument
        return "session not found"


class SessionExpired(SessionError):
    code = ErrorCode.SESSION_EXPIRED


class RecoveryImpossible(SessionError):
    """The frames a resume asked for are no longer kept."""

    code = ErrorCode.RECOVERY_IMPOSSIBLE


class Unauthorized(SessionError, PermissionError):
    code = ErrorCode.UNAUTHORIZED
    close = CloseCode.UNAUTHORIZED


class TokenExpired(Unauthorized):
    code = ErrorCode.TOKEN_EXPIRED
    close = CloseCode.TOKEN_EXPIRED


class StoreError(RtServerError):
    code = ErrorCode.STORE_UNAVAILABLE


class StoreUnavailable(StoreError, ConnectionError):
    pass


class StoreTimeout(StoreError, TimeoutError):
    pass


class WorkerError(RtServerError):
    code = ErrorCode.WORKER_UNAVAILABLE


class NoWorkerAvailable(WorkerError):
    pass


class WorkerLost(WorkerError, ConnectionError):
    code = ErrorCode.WORKER_LOST


class WorkerOverloaded(WorkerError):
    """The worker's queue is full, or it is draining and no other worker took the request."""

    code = ErrorCode.OVERLOADED


class WorkerProtocolError(WorkerError):
    pass


class EngineError(RtServerError):
    pass


class ModelNotFound(EngineError, FileNotFoundError):
    pass


class AuthUnavailable(RtServerError, ConnectionError):
    """The identity provider's signing keys could not be fetched (retryable)."""

    code = ErrorCode.AUTH_UNAVAILABLE
    close = CloseCode.TRY_AGAIN_LATER


class RouteError(RtServerError):
    pass


class InvalidRouteOverride(RouteError, ValueError):
    """``context["use_case"]`` is not one of the five use cases."""

    code = ErrorCode.INVALID_ROUTE_OVERRIDE
