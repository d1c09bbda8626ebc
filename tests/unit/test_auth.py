"""Connection tokens verified with PyJWT: keys generated here, a JWKS server on loopback.

Each refusal is checked against its documented message (docs/protocol.md, "Connection
tokens"): every one is an ``unauthorized`` error (code 1101).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from rtserver.auth import AuthUnavailable, Jwks, TokenVerifier, issue
from rtserver.codes import ErrorCode
from rtserver.config import load_settings
from rtserver.exceptions import ConfigError, Unauthorized
from tests.jwks_server import JwksServer

SECRET = "s3cret-of-at-least-thirty-two-bytes!"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(private: Any) -> bytes:
    return bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))


def sign(private: Any, alg: str, *, kid: str | None = None, ttl: float = 60, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "alice", "iat": now, "exp": now + int(ttl), **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, private, algorithm=alg,
                      headers={"kid": kid} if kid else None)


def hs(**kw: Any) -> TokenVerifier:
    return TokenVerifier(secret=SECRET, **kw)


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as info:
        await verifier.verify(token)
    assert info.value.code == ErrorCode.UNAUTHORIZED
    return str(info.value)


# ------------------------------------------------------------------------- HS256
async def test_hs256_round_trips_with_expiry() -> None:
    ident = await hs().verify(issue(SECRET, "alice", 60))
    assert ident.subject == "alice" and ident.expires_at > time.time()


@pytest.mark.parametrize(
    ("token", "doc"),
    [
        ("not-a-token", "malformed token"),
        ("a.b.c", "malformed token"),
        (issue("another-secret-of-thirty-two-bytes", "alice", 60), "invalid token signature"),
        (issue(SECRET, "alice", 60, now=1000.0), "token expired"),
    ],
    ids=["garbage", "three-parts", "forged", "expired"],
)
async def test_hs256_refusals(token: str, doc: str) -> None:
    assert (await refused(hs(), token)).startswith(doc)


async def test_alg_none_is_refused() -> None:
    head = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = issue(SECRET, "alice", 60).split(".")[1]
    assert (await refused(hs(), f"{head}.{body}.")).startswith("unsupported token algorithm")


async def test_tampered_subject_is_refused() -> None:
    head, _, sig = issue(SECRET, "alice", 60).split(".")
    body = b64(json.dumps({"sub": "admin", "exp": 2**40}).encode())
    assert (await refused(hs(), f"{head}.{body}.{sig}")).startswith("invalid token signature")


async def test_a_token_without_exp_is_refused() -> None:
    token = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
    assert (await refused(hs(), token)).startswith("token has no")


# ------------------------------------------------------------------ public key file
@pytest.mark.parametrize("kind", ["RS256", "ES256", "EdDSA"])
async def test_public_key_file_verifies_its_algorithm(tmp_path: Path, kind: str) -> None:
    make: Any = {"RS256": rsa_key, "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
                 "EdDSA": ed25519.Ed25519PrivateKey.generate}[kind]
    private, other = make(), make()
    path = tmp_path / "key.pem"
    path.write_bytes(pem(private))
    verifier = TokenVerifier.from_settings(load_settings(env={}, overrides={"auth_public_key": str(path)}))
    assert verifier is not None
    assert (await verifier.verify(sign(private, kind))).subject == "alice"
    assert (await refused(verifier, sign(other, kind))).startswith("invalid token signature")


async def test_hs_rs_confusion_is_refused(tmp_path: Path) -> None:
    """The classic attack: HS256 signed with the RSA public key's PEM as the HMAC secret."""
    private = rsa_key()
    public_pem = pem(private)
    verifier = TokenVerifier(public_key=serialization.load_pem_public_key(public_pem))
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "admin", "exp": now + 60}).encode())
    import hashlib
    import hmac

    sig = b64(hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    assert (await refused(verifier, f"{head}.{body}.{sig}")).startswith("unsupported token algorithm")
    # and the other way: with only a secret, an RS256 token is not accepted
    assert (await refused(hs(), sign(private, "RS256"))).startswith("unsupported token algorithm")
    # a key of another type than the token's alg
    assert (await refused(verifier, sign(ec.generate_private_key(ec.SECP256R1()), "ES256"))).startswith(
        "unsupported token algorithm")


async def test_claims_aud_iss_nbf_and_subject_claim() -> None:
    private = rsa_key()
    key = private.public_key()
    v = TokenVerifier(public_key=key, audience="rt-app", issuer="https://idp.example/", leeway_s=2)
    good = sign(private, "RS256", aud="rt-app", iss="https://idp.example/")
    assert (await v.verify(good)).subject == "alice"
    assert (await refused(v, sign(private, "RS256", aud="other", iss="https://idp.example/"))).startswith(
        "token has the wrong audience")
    assert (await refused(v, sign(private, "RS256", aud="rt-app", iss="https://evil.example/"))).startswith(
        "token has the wrong issuer")
    later = int(time.time()) + 120
    assert (await refused(v, sign(private, "RS256", aud="rt-app", iss="https://idp.example/", nbf=later))).startswith(
        "token not yet valid")
    # expired beyond the leeway, and within it
    assert (await refused(v, sign(private, "RS256", ttl=-10, aud="rt-app", iss="https://idp.example/"))).startswith(
        "token expired")
    assert await v.verify(sign(private, "RS256", ttl=-1, aud="rt-app", iss="https://idp.example/"))
    # no audience configured: a token that carries one is refused
    assert (await refused(TokenVerifier(public_key=key), good)).startswith("token has the wrong audience")
    # the subject comes from the configured claim
    by_email = TokenVerifier(public_key=key, subject_claim="email")
    assert (await by_email.verify(sign(private, "RS256", email="a@example.com"))).subject == "a@example.com"
    assert (await refused(by_email, sign(private, "RS256"))).startswith("token has no subject")


# ---------------------------------------------------------------------- JWKS server
@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


def jwks_verifier(server: JwksServer, *, min_refresh_s: float = 0.0) -> TokenVerifier:
    settings = load_settings(env={}, overrides={
        "auth_jwks_url": server.url, "auth_jwks_min_refresh_s": min_refresh_s, "auth_jwks_timeout_s": 2.0,
    })
    verifier = TokenVerifier.from_settings(settings)
    assert verifier is not None
    return verifier


async def test_jwks_verifies_by_kid_and_caches(jwks_server: JwksServer) -> None:
    rs, es, ed = rsa_key(), ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate()
    jwks_server.add(rs, "k-rs", "RS256")
    jwks_server.add(es, "k-es", "ES256")
    jwks_server.add(ed, "k-ed", "EdDSA")
    v = jwks_verifier(jwks_server)
    ident = await v.verify(sign(rs, "RS256", kid="k-rs"))
    assert ident.subject == "alice" and ident.expires_at == pytest.approx(time.time() + 60, abs=5)
    assert (await v.verify(sign(es, "ES256", kid="k-es"))).subject == "alice"
    assert (await v.verify(sign(ed, "EdDSA", kid="k-ed"))).subject == "alice"
    assert jwks_server.gets == 1  # one fetch serves all three


async def test_jwks_key_rotation_and_unknown_kid(jwks_server: JwksServer) -> None:
    old, new = rsa_key(), rsa_key()
    jwks_server.add(old, "2026-10", "RS256")
    v = jwks_verifier(jwks_server)
    assert (await v.verify(sign(old, "RS256", kid="2026-10"))).subject == "alice"
    jwks_server.keys = []
    jwks_server.add(new, "2026-11", "RS256")  # the provider rotated its key
    assert (await v.verify(sign(new, "RS256", kid="2026-11"))).subject == "alice"
    assert jwks_server.gets == 2
    assert (await refused(v, sign(rsa_key(), "RS256", kid="nobody"))).startswith("unknown signing key id")
    # a key of the set signing with another algorithm than its own
    assert (await refused(v, sign(ec.generate_private_key(ec.SECP256R1()), "ES256", kid="2026-11"))).startswith(
        "unsupported token algorithm")


async def test_unknown_kids_fetch_the_jwks_at_most_once_per_interval(jwks_server: JwksServer) -> None:
    private = rsa_key()
    jwks_server.add(private, "a", "RS256")
    v = jwks_verifier(jwks_server, min_refresh_s=3600)
    await v.verify(sign(private, "RS256", kid="a"))
    for i in range(20):  # an attacker making up kids cannot make us hammer the provider
        await refused(v, sign(private, "RS256", kid=f"made-up-{i}"))
    assert jwks_server.gets == 1


async def test_an_unreachable_jwks_is_auth_unavailable(jwks_server: JwksServer) -> None:
    private = rsa_key()
    jwks_server.fail = True
    v = jwks_verifier(jwks_server)
    with pytest.raises(AuthUnavailable) as info:
        await v.verify(sign(private, "RS256", kid="a"))
    assert info.value.code == ErrorCode.AUTH_UNAVAILABLE and info.value.code.retryable
    assert str(info.value).startswith("identity provider keys unavailable")


async def test_concurrent_misses_share_one_fetch(jwks_server: JwksServer) -> None:
    import asyncio

    private = rsa_key()
    jwks_server.add(private, "a", "RS256")
    jwks = Jwks(jwks_server.url, timeout_s=2, cache_s=3600, min_refresh_s=0)
    keys = await asyncio.gather(*(jwks.get("a") for _ in range(10)))
    assert all(k is keys[0] for k in keys) and jwks_server.gets == 1


# ----------------------------------------------------------------------- settings
def test_public_address_needs_auth_or_an_explicit_opt_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="without authentication"):
        load_settings(env={}, overrides={"host": "0.0.0.0"})
    assert load_settings(env={}, overrides={"host": "0.0.0.0", "auth_secret": "x"}).auth_secret == "x"
    assert load_settings(env={}, overrides={"host": "0.0.0.0", "allow_anonymous": True}).allow_anonymous
    assert load_settings(env={}, overrides={"host": "0.0.0.0", "auth_jwks_url": "https://idp/jwks"}).auth_enabled


def test_a_bad_public_key_file_fails_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="auth_public_key"):
        TokenVerifier.from_settings(load_settings(env={}, overrides={"auth_public_key": str(bad)}))
    assert TokenVerifier.from_settings(load_settings(env={})) is None


async def test_the_jwks_is_fetched_off_the_event_loop_with_a_timeout(jwks_server: JwksServer) -> None:
    import asyncio
    import threading

    private = rsa_key()
    jwks_server.add(private, "a", "RS256")
    jwks_server.gate = threading.Event()
    v = jwks_verifier(jwks_server)
    pending = asyncio.create_task(v.verify(sign(private, "RS256", kid="a")))
    while jwks_server.gets == 0:  # this loop runs while the fetch waits at the server
        await asyncio.sleep(0.01)
    assert not pending.done()
    jwks_server.gate.set()
    assert (await pending).subject == "alice"
    jwks_server.gate.clear()
    slow = Jwks(jwks_server.url, timeout_s=0.2, cache_s=3600, min_refresh_s=0)
    with pytest.raises(AuthUnavailable):
        await slow.get("a")  # the server never answers: the timeout ends the fetch
    jwks_server.gate.set()
