"""Fuzz the codec: whatever bytes arrive, decoding either yields a frame or raises
ProtocolError with a documented code — never another exception."""

from __future__ import annotations

import msgpack
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtserver.codes import ErrorCode
from rtserver.exceptions import ProtocolError
from rtserver.protocol.codec import decode_client_frame
from rtserver.protocol.frames import Limits

LIMITS = Limits(max_frame_bytes=64 * 1024)
KEYS = st.sampled_from(["type", "id", "text", "attachments", "context", "kind", "mime", "data", "session_id",
                        "resume_token", "last_seq", "response_id", "t", "auth", "client"])
TYPES = st.sampled_from(["message", "hello", "cancel", "ping", "pong", "token", "", "MESSAGE"])
leaf = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40) | TYPES
)
values = st.recursive(
    leaf,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS | st.text(max_size=5), children, max_size=5),
    max_leaves=25,
)
frames = st.dictionaries(KEYS, values, max_size=6).map(lambda d: d) | values


def check(data: str | bytes, encoding: str) -> None:
    try:
        decode_client_frame(data, encoding, LIMITS)  # type: ignore[arg-type]
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)


def _json(obj: object) -> str | None:
    try:
        return orjson.dumps(obj).decode()
    except (TypeError, orjson.JSONEncodeError):
        return None


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(frames)
def test_structured_json_frames(obj: object) -> None:
    data = _json(obj)
    if data is not None:
        check(data, "json")


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(frames)
def test_structured_msgpack_frames(obj: object) -> None:
    try:
        data = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, OverflowError, ValueError):
        return
    check(data, "msgpack")
    check(data[: len(data) // 2], "msgpack")  # truncated


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes(data: bytes) -> None:
    check(data, "msgpack")
    check(data, "json")
    check(data.decode("utf-8", "replace"), "json")
