"""Codes a client sees on the wire.

``ErrorCode`` values travel in ``error`` frames as their lowercase name (``code``)
and their number (``status``). Ranges:

* 1000-1999: the client's request was wrong; repeating it unchanged fails again.
* 2000-2999: a transient condition; the client may retry (``retryable: true``).

``CloseCode`` values close the WebSocket. The 4000 range is ours; 1000, 1001, 1009,
1011, 1012 and 1013 are the RFC 6455 codes used with their standard meaning. The
server never closes with 1008 (policy violation): a refusal says why with a 4xxx code.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    # 1000-1099: malformed frames
    MALFORMED_FRAME = 1001
    WRONG_FRAME_KIND = 1002
    UNKNOWN_TYPE = 1003
    INVALID_FIELD = 1004
    MISSING_FIELD = 1005
    TEXT_TOO_LONG = 1006
    ATTACHMENT_TOO_LARGE = 1007
    TOO_MANY_ATTACHMENTS = 1008
    INVALID_BASE64 = 1009
    FRAME_TOO_LARGE = 1010
    INVALID_ROUTE_OVERRIDE = 1011
    ATTACHMENT_UNSUPPORTED = 1012
    HELLO_NOT_FIRST = 1013
    NOTHING_TO_CANCEL = 1014
    # 1100-1199: identity
    UNAUTHORIZED = 1101
    SESSION_NOT_FOUND = 1102
    SESSION_EXPIRED = 1103
    ORIGIN_NOT_ALLOWED = 1104
    RECOVERY_IMPOSSIBLE = 1105
    TOKEN_EXPIRED = 1106
    # 2000-2999: transient
    BUSY = 2001
    RATE_LIMITED = 2002
    WORKER_UNAVAILABLE = 2003
    WORKER_LOST = 2004
    OVERLOADED = 2005
    STORE_UNAVAILABLE = 2006
    AUTH_UNAVAILABLE = 2007
    INTERNAL = 2099

    @property
    def wire(self) -> str:
        """The name a client matches on, e.g. ``"busy"``."""
        return self.name.lower()

    @property
    def retryable(self) -> bool:
        return self >= 2000


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    TOO_BIG = 1009
    INTERNAL = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    UNAUTHORIZED = 4001
    IDLE_TIMEOUT = 4003
    TOKEN_EXPIRED = 4005
    ORIGIN_NOT_ALLOWED = 4004
    SLOW_CONSUMER = 4008
    SESSION_REPLACED = 4010
    TOO_MANY_ERRORS = 4009
    RATE_LIMITED = 4029
