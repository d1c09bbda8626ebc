"""The rtserver exception tree.

::

    RtServerError
    ├── ConfigError(RtServerError, ValueError)
    ├── ProtocolError                 carries an ErrorCode; answered with an error frame
    │   └── FrameTooLarge
    ├── SessionError
    │   ├── SessionNotFound(SessionError, KeyError)
    │   ├── SessionExpired
    │   └── Unauthorized(SessionError, PermissionError)
    │       └── TokenExpired        a live socket's token expired without a refresh
    ├── StoreError
    │   ├── StoreUnavailable(StoreError, ConnectionError)
    │   └── StoreTimeout(StoreError, TimeoutError)
    ├── WorkerError
    │   ├── NoWorkerAvailable
    │   ├── WorkerLost(WorkerError, ConnectionError)
    │   └── WorkerProtocolError
    ├── EngineError
    │   └── ModelNotFound(EngineError, FileNotFoundError)
    ├── AuthUnavailable(RtServerError, ConnectionError)   (defined in rtserver.auth)
    └── RouteError
        └── InvalidRouteOverride(RouteError, ValueError)   (defined in rtserver.routing.router)

Every exception that can reach a client maps to one ``ErrorCode`` via ``.code``.
"""

from __future__ import annotations

from rtserver.codes import ErrorCode


class RtServerError(Exception):
    """Root of every exception rtserver raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL


class ConfigError(RtServerError, ValueError):
    """The configuration is invalid; raised at start-up only."""


class ProtocolError(RtServerError):
    """A client frame was rejected. ``ref`` is the client frame id it answers."""

    def __init__(self, code: ErrorCode, message: str, *, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


class FrameTooLarge(ProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(ErrorCode.FRAME_TOO_LARGE, f"frame of {size} bytes exceeds {limit}")


class SessionError(RtServerError):
    pass


class SessionNotFound(SessionError, KeyError):
    code = ErrorCode.SESSION_NOT_FOUND

    def __str__(self) -> str:  # KeyError quotes its argument
        return "session not found"


class SessionExpired(SessionError):
    code = ErrorCode.SESSION_EXPIRED


class Unauthorized(SessionError, PermissionError):
    code = ErrorCode.UNAUTHORIZED


class TokenExpired(Unauthorized):
    code = ErrorCode.TOKEN_EXPIRED


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


class WorkerProtocolError(WorkerError):
    pass


class EngineError(RtServerError):
    pass


class ModelNotFound(EngineError, FileNotFoundError):
    pass


class RouteError(RtServerError):
    pass
