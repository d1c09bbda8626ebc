from __future__ import annotations

import base64
import json

import pytest

from rtserver.auth import issue, verify
from rtserver.config import load_settings
from rtserver.exceptions import ConfigError, Unauthorized


def test_a_token_round_trips() -> None:
    assert verify("s3cret", issue("s3cret", "alice", 60)) == "alice"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("not-a-token", "malformed"),
        ("a.b.c", "malformed"),
        (issue("other-secret", "alice", 60), "signature"),
        (issue("s3cret", "alice", 60, now=1000.0), "expired"),
    ],
)
def test_refusals(token: str, reason: str) -> None:
    with pytest.raises(Unauthorized, match=reason):
        verify("s3cret", token)


def test_alg_none_is_refused() -> None:
    head = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode()
    body = issue("s3cret", "alice", 60).split(".")[1]
    with pytest.raises(Unauthorized, match="algorithm"):
        verify("s3cret", f"{head}.{body}.")


def test_tampered_subject_is_refused() -> None:
    head, _, sig = issue("s3cret", "alice", 60).split(".")
    body = base64.urlsafe_b64encode(json.dumps({"sub": "admin", "exp": 2**40}).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized, match="signature"):
        verify("s3cret", f"{head}.{body}.{sig}")


def test_public_address_needs_auth_or_an_explicit_opt_out() -> None:
    with pytest.raises(ConfigError, match="without authentication"):
        load_settings(env={}, overrides={"host": "0.0.0.0"})
    assert load_settings(env={}, overrides={"host": "0.0.0.0", "auth_secret": "x"}).auth_secret == "x"
    assert load_settings(env={}, overrides={"host": "0.0.0.0", "allow_anonymous": True}).allow_anonymous
