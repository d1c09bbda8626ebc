"""Every bad-input class gets its documented code; good frames round-trip in both encodings."""

from __future__ import annotations

import base64
from typing import Any

import msgpack
import orjson
import pytest

from rtserver.codes import ErrorCode
from rtserver.exceptions import ProtocolError
from rtserver.protocol.codec import client_to_wire, decode_client_frame, encode, error_frame
from rtserver.protocol.frames import (
    Attachment,
    Cancel,
    Done,
    DoneStats,
    Hello,
    Limits,
    Message,
    Ping,
    Route,
    Token,
    TokenStats,
    Usage,
)

LIMITS = Limits(max_frame_bytes=4096, max_text_chars=100, max_attachments=2, max_attachment_bytes=64)


def as_json(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def code_of(data: str | bytes, encoding: str = "json") -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(data, encoding, LIMITS)  # type: ignore[arg-type]
    return info.value.code


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("{not json", ErrorCode.MALFORMED_FRAME),
        ("[1, 2]", ErrorCode.MALFORMED_FRAME),
        ('"just a string"', ErrorCode.MALFORMED_FRAME),
        ("{}", ErrorCode.MISSING_FIELD),
        ('{"type": 5}', ErrorCode.INVALID_FIELD),
        ('{"type": "launch_rockets"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "message", "text": "hi"}', ErrorCode.MISSING_FIELD),
        ('{"type": "message", "id": "m1"}', ErrorCode.MISSING_FIELD),
        ('{"type": "message", "id": 7, "text": "hi"}', ErrorCode.INVALID_FIELD),
        ('{"type": "message", "id": "m1", "text": ["hi"]}', ErrorCode.INVALID_FIELD),
        ('{"type": "message", "id": "m1", "text": "   "}', ErrorCode.INVALID_FIELD),
        ('{"type": "message", "id": "m1", "text": "hi", "context": [1]}', ErrorCode.INVALID_FIELD),
        ('{"type": "message", "id": "m1", "text": "hi", "attachments": {}}', ErrorCode.INVALID_FIELD),
        ('{"type": "hello", "last_seq": "3"}', ErrorCode.INVALID_FIELD),
        ('{"type": "hello", "session_id": 12}', ErrorCode.INVALID_FIELD),
        ('{"type": "ping", "t": {"deep": 1}}', ErrorCode.INVALID_FIELD),
        ('{"type": "cancel", "response_id": 3}', ErrorCode.INVALID_FIELD),
    ],
)
def test_bad_json_frames_get_their_documented_code(data: str, code: ErrorCode) -> None:
    assert code_of(data) == code


def test_text_over_the_limit() -> None:
    assert code_of(as_json({"type": "message", "id": "m", "text": "x" * 101})) == ErrorCode.TEXT_TOO_LONG


def test_frame_over_the_limit() -> None:
    assert code_of(as_json({"type": "message", "id": "m", "text": "x" * 5000})) == ErrorCode.FRAME_TOO_LARGE


def att(data: Any, kind: str = "image", mime: str = "image/png") -> dict[str, Any]:
    return {"kind": kind, "mime": mime, "data": data}


def test_attachment_errors() -> None:
    msg = {"type": "message", "id": "m", "text": "look"}
    assert code_of(as_json({**msg, "attachments": [att("!!!not base64!!!")]})) == ErrorCode.INVALID_BASE64
    big = base64.b64encode(b"x" * 65).decode()
    assert code_of(as_json({**msg, "attachments": [att(big)]})) == ErrorCode.ATTACHMENT_TOO_LARGE
    ok = base64.b64encode(b"png").decode()
    assert code_of(as_json({**msg, "attachments": [att(ok)] * 3})) == ErrorCode.TOO_MANY_ATTACHMENTS
    assert code_of(as_json({**msg, "attachments": [att(ok, kind="video")]})) == ErrorCode.INVALID_FIELD
    assert code_of(as_json({**msg, "attachments": [{"kind": "image", "mime": "image/png"}]})) == ErrorCode.MISSING_FIELD
    # raw bytes are a msgpack-only encoding of data
    assert code_of(msgpack.packb({**msg, "attachments": [att(12)]}), "msgpack") == ErrorCode.INVALID_FIELD


def test_error_carries_the_message_id_as_ref() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(as_json({"type": "message", "id": "m42", "text": "x" * 101}), "json", LIMITS)
    assert info.value.ref == "m42"


def test_wrong_frame_kind_for_the_subprotocol() -> None:
    assert code_of(b'{"type": "ping"}', "json") == ErrorCode.WRONG_FRAME_KIND
    assert code_of('{"type": "ping"}', "msgpack") == ErrorCode.WRONG_FRAME_KIND


def test_malformed_msgpack() -> None:
    assert code_of(b"\xc1", "msgpack") == ErrorCode.MALFORMED_FRAME
    assert code_of(b"\x91" * 3000 + b"\xc0", "msgpack") == ErrorCode.MALFORMED_FRAME  # too deep
    assert code_of(b"\xa3\xff\xfe\xfd", "msgpack") == ErrorCode.MALFORMED_FRAME  # invalid UTF-8 str
    assert code_of(msgpack.packb({"type": "message"})[:-3], "msgpack") == ErrorCode.MALFORMED_FRAME


def test_json_deep_nesting_is_rejected_not_crashing() -> None:
    assert code_of("[" * 2000 + "]" * 2000) == ErrorCode.MALFORMED_FRAME


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_client_frames_round_trip(encoding: str) -> None:
    frames = [
        Hello(session_id="s_1", resume_token="tok", client="test/1", last_seq=3, response_id="r_1"),
        Message(id="m1", text="hello", attachments=(Attachment("image", "image/png", b"\x89PNG"),),
                context={"use_case": "chat"}),
        Cancel(response_id="r_1"),
        Ping(t=12.5),
    ]
    for frame in frames:
        values = client_to_wire(frame, encoding)  # type: ignore[arg-type]
        data = as_json(values) if encoding == "json" else msgpack.packb(values, use_bin_type=True)
        assert decode_client_frame(data, encoding, LIMITS) == frame  # type: ignore[arg-type]


def test_base64_string_is_accepted_on_msgpack_too() -> None:
    data = msgpack.packb({"type": "message", "id": "m", "text": "", "attachments": [att("aGk=")]})
    frame = decode_client_frame(data, "msgpack", LIMITS)
    assert isinstance(frame, Message) and frame.attachments[0].data == b"hi"


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_server_frames_encode_identically(encoding: str) -> None:
    stats = TokenStats(ttft_ms=1.0, gap_ms=0.5, route_ms=0.01, queue_ms=0.0, elapsed_ms=1.5)
    token = Token(response_id="r", seq=3, text="hé", stats=stats)
    done = Done("r", "stop", Usage(10, 4), DoneStats(1.0, 9.0, 400.0, 0.5, 0.7, 0.01, "bypass"), last_seq=3)
    route = Route("r", "m", "agent", "smollm2", "w1", "full", 0.93, 1.2)
    for frame in (token, done, route, error_frame(ErrorCode.BUSY, "busy", ref="m")):
        payload = encode(frame, encoding)  # type: ignore[arg-type]
        values = orjson.loads(payload) if encoding == "json" else msgpack.unpackb(payload)
        assert values["type"] == frame.type
    values = orjson.loads(encode(token, "json"))
    assert values["seq"] == 3 and values["text"] == "hé" and set(values["stats"]) >= {
        "ttft_ms", "gap_ms", "route_ms", "queue_ms", "elapsed_ms"
    }
    err = orjson.loads(encode(error_frame(ErrorCode.BUSY, "busy", ref="m"), "json"))
    assert err == {"type": "error", "code": "busy", "status": 2001, "message": "busy", "retryable": True,
                   "fatal": False, "ref": "m"}
