"""A seeded generator of hostile client frames (no hypothesis: fast enough for 100k+).

Kinds: random bytes, truncated and bit-flipped valid frames, valid JSON/msgpack with
wrong types, unknown types, huge numbers, deep nesting, invalid UTF-8 and oversized
fields. Each item is ``(payload, encoding)``.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from typing import Any

import msgpack
import orjson

KEYS = ["type", "id", "text", "attachments", "context", "kind", "mime", "data", "session_id", "resume_token",
        "last_seq", "response_id", "t", "auth", "client"]
TYPES = ["message", "hello", "cancel", "ping", "pong", "token", "done", "", "MESSAGE", "messag\u00e9", "__close__"]


def _value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if r < 0.12:
        return rng.choice([0, -1, 2**31, 2**53, 2**63 - 1, -(2**63), 10**30 if depth else 7])
    if r < 0.2:
        return rng.choice([1e308, -1e308, 0.1, -0.0, 3.5])
    if r < 0.35:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(0, 40)))
    if r < 0.42:
        return rng.choice(TYPES)
    if r < 0.5:
        return rng.choice([None, True, False])
    if r < 0.56:
        return "x" * rng.choice([0, 1, 129, 257, 5000, 20000])
    if r < 0.62:
        return base64.b64encode(rng.randbytes(rng.randrange(0, 64))).decode() + rng.choice(["", "=", "!", "%%"])
    if depth < 3 and r < 0.8:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    if depth < 3:
        return {rng.choice(KEYS): _value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}
    return None


def _frame(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.05:
        nest: Any = 1
        for _ in range(rng.choice([50, 600, 3000])):
            nest = [nest]
        return {"type": "message", "id": "m", "text": "t", "context": {"n": nest}}
    if r < 0.1:
        return _value(rng)
    if r < 0.35:  # a near-valid message: one field off
        msg: dict[str, Any] = {"type": "message", "id": f"m{rng.randrange(1000)}", "text": "hello"}
        field = rng.choice(["text", "attachments", "context", "id"])
        if field == "attachments":
            att = {"kind": rng.choice(["image", "audio", "file", "video"]), "mime": "image/png",
                   "data": _value(rng)}
            msg["attachments"] = [att] * rng.choice([1, 2, 9])
        else:
            msg[field] = _value(rng)
        return msg
    frame: dict[str, Any] = {"type": rng.choice(TYPES)}
    for _ in range(rng.randrange(0, 6)):
        frame[rng.choice(KEYS)] = _value(rng)
    return frame


def _encode(obj: Any, encoding: str) -> bytes | str | None:
    try:
        if encoding == "json":
            return orjson.dumps(obj).decode()
        return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError, orjson.JSONEncodeError):
        return None


def hostile_frames(n: int, seed: int = 1234) -> Iterator[tuple[bytes | str, str]]:
    rng = random.Random(seed)
    made = 0
    while made < n:
        encoding = "json" if rng.random() < 0.5 else "msgpack"
        r = rng.random()
        payload: bytes | str | None
        if r < 0.15:
            payload = rng.randbytes(rng.randrange(0, 200))
            if encoding == "json":
                payload = payload.decode("utf-8", "replace")
        else:
            payload = _encode(_frame(rng), encoding)
            if payload is None:
                continue
            if r < 0.3 and payload:  # truncated
                payload = payload[: rng.randrange(0, len(payload))]
            elif r < 0.4 and payload:  # a flipped byte
                raw = bytearray(payload.encode() if isinstance(payload, str) else payload)
                k = rng.randrange(len(raw))
                raw[k] ^= 1 << rng.randrange(8)
                payload = raw.decode("utf-8", "replace") if encoding == "json" else bytes(raw)
            elif r < 0.45:  # wrong frame kind for the subprotocol
                payload = payload.encode() if isinstance(payload, str) else payload.decode("latin-1")
        made += 1
        yield payload, encoding
