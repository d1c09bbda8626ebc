"""Each exception's wire code and close code, against the tables in docs/protocol.md.

The expected numbers are read from the document: each row below names an error by
its documented ``code`` string and, where the error closes the socket, by the start of
its close table's meaning; the test looks up both numbers in docs/protocol.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rtserver import exceptions as ex
from rtserver.codes import ErrorCode

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _table(heading: str) -> list[list[str]]:
    """The rows (cells, backticks stripped) of the first table under ``## heading``."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip().strip("`") for c in r.strip("|").split("|")] for r in rows[2:]]


ERRORS = {code: int(status) for status, code, *_ in _table("Error codes")}
CLOSES = {meaning: int(code) for code, meaning in _table("Close codes")}


def _close(meaning_starts: str) -> int:
    found = [code for meaning, code in CLOSES.items() if meaning.startswith(meaning_starts)]
    assert len(found) == 1, f"no single close code documented as {meaning_starts!r}"
    return found[0]


# class, documented error code, documented close meaning (None: the socket stays)
CASES: list[tuple[type[ex.RtServerError], str, str | None]] = [
    (ex.RtServerError, "internal", None),
    (ex.InternalError, "internal", None),
    (ex.AttachmentUnsupported, "attachment_unsupported", None),
    (ex.RateLimited, "rate_limited", None),
    (ex.OriginNotAllowed, "origin_not_allowed", "origin not allowed"),
    (ex.TooManyConnections, "rate_limited", "too many connections from one address"),
    (ex.Draining, "overloaded", None),
    (ex.SessionNotFound, "session_not_found", None),
    (ex.SessionExpired, "session_expired", None),
    (ex.RecoveryImpossible, "recovery_impossible", None),
    (ex.Unauthorized, "unauthorized", "unauthorized"),
    (ex.TokenExpired, "token_expired", "token expired"),
    (ex.StoreError, "store_unavailable", None),
    (ex.StoreUnavailable, "store_unavailable", None),
    (ex.StoreTimeout, "store_unavailable", None),
    (ex.WorkerError, "worker_unavailable", None),
    (ex.NoWorkerAvailable, "worker_unavailable", None),
    (ex.WorkerLost, "worker_lost", None),
    (ex.WorkerOverloaded, "overloaded", None),
    (ex.AuthUnavailable, "auth_unavailable", "try again later"),
    (ex.InvalidRouteOverride, "invalid_route_override", None),
    (ex.RouteError, "internal", None),
]


@pytest.mark.parametrize(("cls", "wire", "close"), CASES, ids=[c[0].__name__ for c in CASES])
def test_class_codes_match_the_protocol_doc(cls: type[ex.RtServerError], wire: str, close: str | None) -> None:
    assert cls.code.wire == wire
    assert int(cls.code) == ERRORS[wire]
    assert cls.code.retryable == (ERRORS[wire] >= 2000)
    if close is None:
        assert cls.close is None
    else:
        assert cls.close is not None and int(cls.close) == _close(close)


def test_every_error_code_is_documented_with_its_number() -> None:
    assert {c.wire: int(c) for c in ErrorCode} == ERRORS


def test_every_exported_error_class_is_checked() -> None:
    """A new class in the tree needs a row above, so its codes are checked too."""
    mine = {c for c in vars(ex).values() if isinstance(c, type) and issubclass(c, ex.RtServerError)}
    unchecked = mine - {c[0] for c in CASES} - {
        ex.ConfigError, ex.ProtocolError, ex.FrameTooLarge, ex.Refused, ex.SessionError,
        ex.WorkerProtocolError, ex.EngineError, ex.ModelNotFound,
    }
    assert not unchecked, sorted(c.__name__ for c in unchecked)


def test_protocol_error_carries_the_frame_rule_code() -> None:
    err = ex.ProtocolError(ErrorCode.TEXT_TOO_LONG, "too long", ref="m1")
    assert (err.code.wire, int(err.code), err.message, err.ref) == ("text_too_long", ERRORS["text_too_long"], "too long", "m1")
    big = ex.FrameTooLarge(10, 5)
    assert int(big.code) == ERRORS["frame_too_large"] and big.close is None


def test_message_falls_back_to_the_code_name() -> None:
    assert ex.WorkerLost().message == "worker_lost"
    assert ex.SessionNotFound("s_1").message == "session not found"
    assert ex.Draining("shutting down", ref="m2").ref == "m2"


def test_router_errors_are_caught_by_name_not_as_value_error() -> None:
    """A routing failure that is not the client's override is not a 1011 for the client."""
    from rtserver.routing.classifier import ModelArtifactError
    from rtserver.routing.router import InvalidRouteState, parse_override

    with pytest.raises(ex.InvalidRouteOverride) as caught:
        parse_override({"use_case": "nope"})
    assert int(caught.value.code) == ERRORS["invalid_route_override"]
    for cls in (InvalidRouteState, ModelArtifactError):
        assert not issubclass(cls, ex.InvalidRouteOverride)
        assert cls.code.wire == "internal"
