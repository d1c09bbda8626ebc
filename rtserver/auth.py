"""Connection tokens: JWTs verified with PyJWT.

``TokenVerifier.from_settings(settings)`` is ``None`` when auth is off. Otherwise its
``verify(token)`` returns an :class:`Identity` or raises :class:`Unauthorized` (or
:class:`AuthUnavailable` when the identity provider's keys cannot be fetched). Keys:

* ``auth_secret``: HS256 with the server's secret (what ``issue`` signs, for testing);
* ``auth_public_key``: a PEM file; RSA keys verify RS256, EC P-256 keys ES256, Ed25519
  keys EdDSA;
* ``auth_jwks_url``: an identity provider's JWKS, fetched off the event loop with a
  timeout, cached for ``auth_jwks_cache_s``, fetched again when a token names an
  unknown ``kid`` (at most once per ``auth_jwks_min_refresh_s``).

The algorithm a token may use follows from the key that verifies it, never from the
token's header alone: ``alg: none`` and HS/RS confusion are refused. ``exp`` is
required; ``nbf``, ``aud`` and ``iss`` are checked (the latter two when configured),
all with ``auth_leeway_s``. The subject is the ``auth_subject_claim`` claim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import jwt.warnings
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from rtserver.exceptions import AuthUnavailable, ConfigError, Unauthorized

if TYPE_CHECKING:
    from rtserver.config import Settings

MAX_TOKEN_CHARS = 4096
log = logging.getLogger("rtserver.auth")
# A short HS256 secret is reported once at start (from_settings), not on every token.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)
_MAX_JWKS_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    expires_at: float  # unix seconds (the ``exp`` claim)


def issue(secret: str, subject: str, ttl_s: float = 3600.0, *, now: float | None = None) -> str:
    """An HS256 token for ``subject`` (``rtserver token``; tests)."""
    iat = int(time.time() if now is None else now)
    return jwt.encode({"sub": subject, "iat": iat, "exp": iat + int(ttl_s)}, secret, algorithm="HS256")


def _algorithm_of(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ConfigError(f"auth_public_key: unsupported key type {type(key).__name__} (RSA, EC P-256 or Ed25519)")


class Jwks:
    """An identity provider's key set, by ``kid``. ``get`` never blocks the event loop;
    concurrent misses share one fetch."""

    def __init__(self, url: str, *, timeout_s: float, cache_s: float, min_refresh_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self.min_refresh_s = min_refresh_s
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetches = 0
        self._fetched_at: float | None = None  # monotonic, of the last attempt
        self._lock = asyncio.Lock()

    async def get(self, kid: str | None) -> jwt.PyJWK:
        key = self._lookup(kid)
        if key is not None and not self._stale():
            return key
        async with self._lock:
            key = self._lookup(kid)
            now = time.monotonic()
            first = self._fetched_at is None
            due = first or now - (self._fetched_at or 0.0) >= self.min_refresh_s
            if first or (key is None and due) or (key is not None and self._stale()):
                self._fetched_at = now
                try:
                    self.keys = await asyncio.to_thread(self._fetch)
                except AuthUnavailable:
                    if key is None:
                        raise
                key = self._lookup(kid)
        if key is None:
            raise Unauthorized("unknown signing key id" if kid else "token names no key id")
        return key

    def _stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > self.cache_s

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)

    def _fetch(self) -> dict[str, jwt.PyJWK]:
        self.fetches += 1
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:
                body = resp.read(_MAX_JWKS_BYTES + 1)
            if len(body) > _MAX_JWKS_BYTES:
                raise ValueError("JWKS document too large")
            doc = json.loads(body)
            keys: dict[str, jwt.PyJWK] = {}
            for entry in doc["keys"]:
                if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                    continue
                try:
                    key = jwt.PyJWK(entry)
                except jwt.PyJWKError:
                    continue  # a key type we do not support: skip it, keep the others
                keys[str(entry.get("kid", ""))] = key
            return keys
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AuthUnavailable(f"identity provider keys unavailable: {type(exc).__name__}") from None


class TokenVerifier:
    def __init__(
        self,
        *,
        secret: str = "",
        public_key: Any = None,
        jwks: Jwks | None = None,
        audience: str = "",
        issuer: str = "",
        leeway_s: float = 5.0,
        subject_claim: str = "sub",
    ) -> None:
        self.secret = secret
        self.public_key = public_key
        self.public_alg = _algorithm_of(public_key) if public_key is not None else None
        self.jwks = jwks
        self.audience = audience
        self.issuer = issuer
        self.leeway_s = leeway_s
        self.subject_claim = subject_claim

    @classmethod
    def from_settings(cls, s: Settings) -> TokenVerifier | None:
        if not (s.auth_secret or s.auth_public_key or s.auth_jwks_url):
            return None
        if s.auth_secret and len(s.auth_secret.encode()) < 32:
            log.warning("auth_secret is shorter than 32 bytes, the minimum RFC 7518 recommends for HS256")
        public_key = None
        if s.auth_public_key:
            try:
                public_key = load_pem_public_key(Path(s.auth_public_key).read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"auth_public_key {s.auth_public_key}: {exc}") from None
        jwks = None
        if s.auth_jwks_url:
            jwks = Jwks(s.auth_jwks_url, timeout_s=s.auth_jwks_timeout_s, cache_s=s.auth_jwks_cache_s,
                        min_refresh_s=s.auth_jwks_min_refresh_s)
        return cls(secret=s.auth_secret, public_key=public_key, jwks=jwks, audience=s.auth_audience,
                   issuer=s.auth_issuer, leeway_s=s.auth_leeway_s, subject_claim=s.auth_subject_claim)

    async def verify(self, token: str) -> Identity:
        """The token's identity; raises ``Unauthorized`` with a reason a client may see."""
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("malformed token: too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        alg = header.get("alg")
        key: Any
        if alg == "HS256" and self.secret:
            key = self.secret
        elif alg is not None and alg == self.public_alg:
            key = self.public_key
        elif self.jwks is not None and alg in ("RS256", "ES256", "EdDSA"):
            kid = header.get("kid")
            jwk = await self.jwks.get(kid if isinstance(kid, str) else None)
            if jwk.algorithm_name != alg:
                raise Unauthorized(f"unsupported token algorithm {alg} for key {str(kid)[:40]}")
            key = jwk
        else:
            raise Unauthorized(f"unsupported token algorithm {str(alg)[:20]}")
        return self._claims(token, key, alg)

    def _claims(self, token: str, key: Any, alg: str) -> Identity:
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=self.audience or None, issuer=self.issuer or None,
                leeway=self.leeway_s, options={"require": ["exp"], "verify_aud": True},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("token not yet valid (nbf)") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("token has the wrong audience (aud)") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("token has the wrong issuer (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token has no {exc.claim}") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("invalid token signature") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized("unsupported token algorithm") from None
        except jwt.DecodeError:
            raise Unauthorized("malformed token") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {type(exc).__name__}") from None
        sub = claims.get(self.subject_claim)
        if isinstance(sub, int) and not isinstance(sub, bool):
            sub = str(sub)
        if not isinstance(sub, str) or not sub or len(sub) > 256:
            raise Unauthorized(f"token has no subject ({self.subject_claim})")
        return Identity(subject=sub, expires_at=float(claims["exp"]))
