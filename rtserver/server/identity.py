"""Who is on a socket, and until when: the connection token's check, refresh and expiry.

With auth on, a socket's token is verified at connect (``?token=``) or in the first
``hello``; ``refresh`` replaces it for the same subject; ``token_expiring`` warns
before it expires, and the socket is closed with 4005 when it does.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from rtserver.auth import Identity
from rtserver.codes import ErrorCode
from rtserver.exceptions import AuthUnavailable, ProtocolError, TokenExpired, Unauthorized
from rtserver.protocol.codec import decode_client_frame, to_wire
from rtserver.protocol.frames import Hello, Refresh, Refreshed, TokenExpiring

if TYPE_CHECKING:
    from rtserver.server.connection import Connection


class SocketIdentity:
    __slots__ = ("_timers", "_warned_exp", "conn", "expires_at", "subject")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.subject: str | None = None  # authenticated subject (auth on), else None
        self.expires_at: float | None = None  # the token's exp (unix seconds)
        self._timers: list[asyncio.TimerHandle] = []
        self._warned_exp = 0.0  # expiry of the last token_expiring sent (one warning per expiry)

    async def first_frame(self, data: str | bytes) -> bool:
        """With auth on and no ``?token=``, the first frame must be ``hello`` with ``auth``;
        anything else (even a malformed frame) is refused and closed without another answer."""
        conn = self.conn
        try:
            frame = decode_client_frame(data, conn.encoding, conn.gw.limits)
        except ProtocolError:
            frame = None
        token = frame.auth if isinstance(frame, Hello) else None
        if token is None:
            conn.refuse(Unauthorized("authentication required: send hello.auth or ?token="))
            return False
        return await self.authenticate(token)

    async def authenticate(self, token: str) -> bool:
        verifier = self.conn.gw.verifier
        assert verifier is not None
        try:
            self._set(await verifier.verify(token))
        except (Unauthorized, AuthUnavailable) as exc:
            self.conn.refuse(exc)
            return False
        return True

    async def refresh(self, frame: Refresh) -> None:
        """A new token for this socket: same subject, else the socket is closed (4001)."""
        conn = self.conn
        verifier = conn.gw.verifier
        if verifier is None:
            conn.send_error(ProtocolError(ErrorCode.INVALID_FIELD, "this server does not use connection tokens"))
            return
        try:
            identity = await verifier.verify(frame.auth)
        except (Unauthorized, AuthUnavailable) as exc:
            conn.send_error(exc)  # the current token stays in force until it expires
            return
        if identity.subject != self.subject:
            conn.refuse(Unauthorized("a refreshed token must name the same subject"))
            return
        self._set(identity)
        conn.send(to_wire(Refreshed(expires_at=identity.expires_at)))

    def _set(self, identity: Identity) -> None:
        """Arm the warning (``token_expiring``) and the close (4005) for this token's expiry."""
        self.subject = identity.subject
        self.expires_at = identity.expires_at
        self.cancel_timers()
        settings = self.conn.gw.settings
        left = identity.expires_at - time.time()
        loop = asyncio.get_running_loop()
        self._timers = [
            loop.call_later(max(0.0, left - settings.auth_expiry_warning_s), self._warn),
            loop.call_later(max(0.0, left + settings.auth_leeway_s), self._expire),
        ]

    def cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []

    def _warn(self) -> None:
        # A refresh with a token that expires no later than the one already warned about
        # gets no second warning (a client re-sending a cached token must not loop).
        if self.expires_at is not None and self.expires_at > self._warned_exp:
            self._warned_exp = self.expires_at
            in_ms = max(0.0, (self.expires_at - time.time()) * 1000.0)
            self.conn.send(to_wire(TokenExpiring(expires_at=self.expires_at, in_ms=round(in_ms, 1))))

    def _expire(self) -> None:
        self.conn.refuse(TokenExpired("token expired; refresh it before it expires or reconnect with a new one"))
