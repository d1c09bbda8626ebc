"""Signed, expiring connection tokens: JWT with HS256, no dependency.

``issue(secret, subject, ttl_s)`` makes one; ``verify(secret, token)`` returns its
subject or raises ``Unauthorized`` (malformed, wrong algorithm, forged, expired).
Only HS256 is accepted, whatever the header says, so ``alg: none`` tricks fail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from rtserver.exceptions import Unauthorized

_HEADER = {"alg": "HS256", "typ": "JWT"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(secret: str, subject: str, ttl_s: float = 3600.0, *, now: float | None = None) -> str:
    iat = int(time.time() if now is None else now)
    payload = {"sub": subject, "iat": iat, "exp": iat + int(ttl_s)}
    head = _b64(json.dumps(_HEADER, separators=(",", ":")).encode())
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def verify(secret: str, token: str, *, now: float | None = None, leeway_s: float = 5.0) -> str:
    """The token's subject; raises ``Unauthorized`` with a reason a client may see."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > 4096:
        raise Unauthorized("malformed token")
    head, body, sig = parts
    try:
        header = json.loads(_unb64(head))
        payload = json.loads(_unb64(body))
        given = _unb64(sig)
    except (ValueError, UnicodeDecodeError):
        raise Unauthorized("malformed token") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise Unauthorized("unsupported token algorithm")
    want = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(want, given):
        raise Unauthorized("invalid token signature")
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
        raise Unauthorized("token has no expiry")
    if payload["exp"] + leeway_s < (time.time() if now is None else now):
        raise Unauthorized("token expired")
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("token has no subject")
    return sub
