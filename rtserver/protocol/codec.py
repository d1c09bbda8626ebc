"""Encode and decode protocol v1 frames, and validate client frames against limits.

Pure functions: bytes in, records out (or :class:`ProtocolError` with a documented
code). Two encodings of the same records:

* ``json``: UTF-8 JSON text frames; attachment ``data`` is a base64 string.
* ``msgpack``: binary frames; attachment ``data`` is a msgpack ``bin``.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any, Literal

import msgpack
import orjson

from rtserver.codes import ErrorCode
from rtserver.exceptions import FrameTooLarge, ProtocolError
from rtserver.protocol.frames import (
    Attachment,
    Cancel,
    ClientFrame,
    Done,
    Error,
    Hello,
    Limits,
    Message,
    Ping,
    Pong,
    Refresh,
    Refreshed,
    Route,
    ServerFrame,
    SessionInfo,
    Token,
    TokenExpiring,
)

Encoding = Literal["json", "msgpack"]
SUBPROTOCOLS: dict[str, Encoding] = {"rt.v1.json": "json", "rt.v1.msgpack": "msgpack"}
ATTACHMENT_KINDS = ("image", "audio", "file")
_MAX_TOKEN_CHARS = 256  # session ids, tokens, client names
MAX_AUTH_CHARS = 4096  # a connection token (JWT)


# ------------------------------------------------------------------------- decoding
def parse(data: bytes | str, encoding: Encoding, limits: Limits) -> Any:
    """Turn one WebSocket frame into plain Python values.

    Raises ``ProtocolError`` for a frame of the wrong kind (binary on JSON, text on
    msgpack), one over ``limits.max_frame_bytes``, or one that does not parse.
    """
    size = len(data)
    if size > limits.max_frame_bytes:
        raise FrameTooLarge(size, limits.max_frame_bytes)
    if encoding == "json":
        if not isinstance(data, str):
            raise ProtocolError(ErrorCode.WRONG_FRAME_KIND, "binary frame on the rt.v1.json subprotocol; send text frames")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"invalid JSON: {exc}") from None
    if not isinstance(data, bytes):
        raise ProtocolError(ErrorCode.WRONG_FRAME_KIND, "text frame on the rt.v1.msgpack subprotocol; send binary frames")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo: ExtraData, FormatError, StackError, ValueError, UnicodeDecodeError
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"invalid msgpack: {type(exc).__name__}") from None


def decode_client_frame(data: bytes | str, encoding: Encoding, limits: Limits) -> ClientFrame:
    """Parse and validate one client frame. Raises ``ProtocolError``."""
    return validate(parse(data, encoding, limits), encoding, limits)


def validate(obj: Any, encoding: Encoding, limits: Limits) -> ClientFrame:
    """Validate parsed values as a client frame; see docs/protocol.md for each field."""
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "a frame must be an object with a 'type'")
    kind = obj.get("type")
    if kind is None:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "missing field 'type'")
    if kind == "message":
        return _message(obj, encoding, limits)
    if kind == "cancel":
        return Cancel(response_id=_opt_str(obj, "response_id", limits.max_id_chars))
    if kind == "ping":
        t = obj.get("t")
        if t is not None and not _is_small_scalar(t):
            raise ProtocolError(ErrorCode.INVALID_FIELD, "'t' must be a number or a short string")
        return Ping(t=t)
    if kind == "hello":
        return Hello(
            session_id=_opt_str(obj, "session_id", _MAX_TOKEN_CHARS),
            resume_token=_opt_str(obj, "resume_token", _MAX_TOKEN_CHARS),
            auth=_opt_str(obj, "auth", MAX_AUTH_CHARS),
            client=_opt_str(obj, "client", _MAX_TOKEN_CHARS),
            last_seq=_opt_int(obj, "last_seq", lo=-1),
            response_id=_opt_str(obj, "response_id", limits.max_id_chars),
        )
    if kind == "refresh":
        auth = _opt_str(obj, "auth", MAX_AUTH_CHARS)
        if auth is None:
            raise ProtocolError(ErrorCode.MISSING_FIELD, "refresh needs 'auth' (a connection token)")
        return Refresh(auth=auth)
    if isinstance(kind, str):
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:40]!r}")
    raise ProtocolError(ErrorCode.INVALID_FIELD, "'type' must be a string")


def _message(obj: dict[str, Any], encoding: Encoding, limits: Limits) -> Message:
    raw_id = obj.get("id")
    ref = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= limits.max_id_chars else None
    if raw_id is None:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "message needs an 'id'")
    if ref is None:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"'id' must be a string of 1-{limits.max_id_chars} characters")
    text = obj.get("text")
    if text is None:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "message needs a 'text'", ref=ref)
    if not isinstance(text, str):
        raise ProtocolError(ErrorCode.INVALID_FIELD, "'text' must be a string", ref=ref)
    if len(text) > limits.max_text_chars:
        raise ProtocolError(
            ErrorCode.TEXT_TOO_LONG, f"text of {len(text)} characters exceeds {limits.max_text_chars}", ref=ref
        )
    attachments = _attachments(obj.get("attachments"), encoding, limits, ref)
    if not text.strip() and not attachments:
        raise ProtocolError(ErrorCode.INVALID_FIELD, "a message needs text or an attachment", ref=ref)
    context = obj.get("context")
    if context is not None:
        if not isinstance(context, dict):
            raise ProtocolError(ErrorCode.INVALID_FIELD, "'context' must be an object", ref=ref)
        try:
            size = len(orjson.dumps(context))
        except (TypeError, orjson.JSONEncodeError):
            raise ProtocolError(ErrorCode.INVALID_FIELD, "'context' must hold JSON values only", ref=ref) from None
        if size > limits.max_context_bytes:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD, f"'context' of {size} bytes exceeds {limits.max_context_bytes}", ref=ref
            )
    return Message(id=ref, text=text, attachments=attachments, context=context)


def _attachments(value: Any, encoding: Encoding, limits: Limits, ref: str) -> tuple[Attachment, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ProtocolError(ErrorCode.INVALID_FIELD, "'attachments' must be a list", ref=ref)
    if len(value) > limits.max_attachments:
        raise ProtocolError(
            ErrorCode.TOO_MANY_ATTACHMENTS, f"{len(value)} attachments exceed {limits.max_attachments}", ref=ref
        )
    out: list[Attachment] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"attachments[{i}] must be an object", ref=ref)
        kind = item.get("kind")
        if kind not in ATTACHMENT_KINDS:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD, f"attachments[{i}].kind must be one of {', '.join(ATTACHMENT_KINDS)}", ref=ref
            )
        mime = item.get("mime")
        if not isinstance(mime, str) or not 0 < len(mime) <= 128:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"attachments[{i}].mime must be a MIME type string", ref=ref)
        data = item.get("data")
        if data is None:
            raise ProtocolError(ErrorCode.MISSING_FIELD, f"attachments[{i}] needs 'data'", ref=ref)
        payload = _attachment_bytes(data, encoding, limits, ref, i)
        out.append(Attachment(kind=kind, mime=mime, data=payload))
    return tuple(out)


def _attachment_bytes(data: Any, encoding: Encoding, limits: Limits, ref: str, i: int) -> bytes:
    if isinstance(data, bytes) and encoding == "msgpack":
        payload = data
    elif isinstance(data, str):
        # base64 inflates by 4/3: reject before decoding what cannot fit.
        if len(data) > (limits.max_attachment_bytes * 4) // 3 + 4:
            raise ProtocolError(
                ErrorCode.ATTACHMENT_TOO_LARGE, f"attachments[{i}] exceeds {limits.max_attachment_bytes} bytes", ref=ref
            )
        try:
            payload = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(ErrorCode.INVALID_BASE64, f"attachments[{i}].data is not valid base64", ref=ref) from None
    else:
        want = "bytes or a base64 string" if encoding == "msgpack" else "a base64 string"
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"attachments[{i}].data must be {want}", ref=ref)
    if len(payload) > limits.max_attachment_bytes:
        raise ProtocolError(
            ErrorCode.ATTACHMENT_TOO_LARGE, f"attachments[{i}] exceeds {limits.max_attachment_bytes} bytes", ref=ref
        )
    if not payload:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"attachments[{i}].data is empty", ref=ref)
    return payload


def _opt_str(obj: Mapping[str, Any], key: str, max_len: int) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"'{key}' must be a string of at most {max_len} characters")
    return value


def _opt_int(obj: Mapping[str, Any], key: str, *, lo: int) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value < 2**53:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"'{key}' must be an integer >= {lo}")
    return value


def _is_small_scalar(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return -(2**53) < v < 2**53
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, str) and len(v) <= 64


# ------------------------------------------------------------------------- encoding
def to_wire(frame: ServerFrame) -> dict[str, Any]:
    """Plain values for one server frame (the same for both encodings)."""
    if isinstance(frame, Token):
        s = frame.stats
        token: dict[str, Any] = {
            "type": "token",
            "response_id": frame.response_id,
            "seq": frame.seq,
            "text": frame.text,
            "stats": {
                "ttft_ms": s.ttft_ms,
                "gap_ms": s.gap_ms,
                "route_ms": s.route_ms,
                "queue_ms": s.queue_ms,
                "elapsed_ms": s.elapsed_ms,
            },
        }
        if frame.seq_last is not None:
            token["seq_last"] = frame.seq_last
        if frame.seam is not None:
            token["seam"] = {"worker": frame.seam.worker, "reason": frame.seam.reason}
        return token
    if isinstance(frame, Route):
        return {
            "type": "route",
            "response_id": frame.response_id,
            "message_id": frame.message_id,
            "use_case": frame.use_case,
            "model": frame.model,
            "worker": frame.worker,
            "decision": frame.decision,
            "confidence": frame.confidence,
            "route_ms": frame.route_ms,
            "context_changed": frame.context_changed,
        }
    if isinstance(frame, Done):
        st = frame.stats
        return {
            "type": "done",
            "response_id": frame.response_id,
            "finish_reason": frame.finish_reason,
            "last_seq": frame.last_seq,
            "usage": {
                "prompt_tokens": frame.usage.prompt_tokens,
                "completion_tokens": frame.usage.completion_tokens,
                "cached_tokens": frame.usage.cached_tokens,
            },
            "stats": {
                "ttft_ms": st.ttft_ms,
                "total_ms": st.total_ms,
                "tokens_per_s": st.tokens_per_s,
                "gap_p50_ms": st.gap_p50_ms,
                "gap_p95_ms": st.gap_p95_ms,
                "route_ms": st.route_ms,
                "decision": st.decision,
            },
        }
    if isinstance(frame, Error):
        out: dict[str, Any] = {
            "type": "error",
            "code": frame.code,
            "status": frame.status,
            "message": frame.message,
            "retryable": frame.retryable,
            "fatal": frame.fatal,
        }
        if frame.ref is not None:
            out["ref"] = frame.ref
        if frame.response_id is not None:
            out["response_id"] = frame.response_id
        return out
    if isinstance(frame, SessionInfo):
        return {
            "type": "session",
            "session_id": frame.session_id,
            "resume_token": frame.resume_token,
            "resumed": frame.resumed,
            "limits": dict(frame.limits),
            "route": dict(frame.route) if frame.route is not None else None,
        }
    if isinstance(frame, Refreshed):
        return {"type": "refreshed", "expires_at": frame.expires_at}
    if isinstance(frame, TokenExpiring):
        return {"type": "token_expiring", "expires_at": frame.expires_at, "in_ms": frame.in_ms}
    return {"type": "pong", "t": frame.t}


def encode(frame: ServerFrame, encoding: Encoding) -> str | bytes:
    """One server frame as a WebSocket payload: ``str`` for JSON, ``bytes`` for msgpack."""
    return encode_values(to_wire(frame), encoding)


def encode_values(values: Mapping[str, Any], encoding: Encoding) -> str | bytes:
    if encoding == "json":
        return orjson.dumps(values).decode()
    return msgpack.packb(values, use_bin_type=True)  # type: ignore[no-any-return]


def encode_payload(values: Mapping[str, Any], encoding: Encoding) -> bytes:
    """Like ``encode_values`` but always bytes (UTF-8 JSON): send JSON with ``text=True``
    and skip a decode/encode round trip per frame."""
    if encoding == "json":
        return orjson.dumps(values)
    return msgpack.packb(values, use_bin_type=True)  # type: ignore[no-any-return]


def error_frame(
    code: ErrorCode, message: str, *, ref: str | None = None, fatal: bool = False, response_id: str | None = None
) -> Error:
    return Error(code=code.wire, status=int(code), message=message, retryable=code.retryable, ref=ref, fatal=fatal,
                 response_id=response_id)


def token_values(
    response_id: str, seq: int, text: str, stats: dict[str, float], seam: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The token hot path: ``to_wire(Token(...))`` without building the records.

    ``stats`` is ``ResponseClock.stamp``'s dict (``TokenStats``' fields, in order), taken
    as is. tests/unit/protocol/test_token_fast.py checks that the values and both
    encodings are exactly those of the record encoder.
    """
    values: dict[str, Any] = {"type": "token", "response_id": response_id, "seq": seq, "text": text, "stats": stats}
    if seam is not None:
        values["seam"] = seam
    return values


def client_to_wire(frame: ClientFrame, encoding: Encoding) -> dict[str, Any]:
    """Plain values for a client frame (used by :mod:`rtserver.client` and tests)."""
    if isinstance(frame, Message):
        out: dict[str, Any] = {"type": "message", "id": frame.id, "text": frame.text}
        if frame.attachments:
            out["attachments"] = [
                {
                    "kind": a.kind,
                    "mime": a.mime,
                    "data": a.data if encoding == "msgpack" else base64.b64encode(a.data).decode(),
                }
                for a in frame.attachments
            ]
        if frame.context is not None:
            out["context"] = dict(frame.context)
        return out
    if isinstance(frame, Hello):
        hello: dict[str, Any] = {"type": "hello"}
        for key in ("session_id", "resume_token", "auth", "client", "last_seq", "response_id"):
            value = getattr(frame, key)
            if value is not None:
                hello[key] = value
        return hello
    if isinstance(frame, Cancel):
        return {"type": "cancel", "response_id": frame.response_id}
    if isinstance(frame, Ping):
        return {"type": "ping", "t": frame.t}
    if isinstance(frame, Refresh):
        return {"type": "refresh", "auth": frame.auth}
    raise TypeError(frame)


__all__ = [
    "SUBPROTOCOLS",
    "Encoding",
    "Pong",
    "client_to_wire",
    "decode_client_frame",
    "encode",
    "encode_values",
    "error_frame",
    "parse",
    "to_wire",
    "validate",
]
