"""The gateway ↔ worker wire (docs/worker-protocol.md); pure.

A stream of frames, each a 4-byte big-endian length then a msgpack map with a
``t`` (type) key. Requests are multiplexed by ``id`` (an int chosen by the gateway,
unique per connection).

gateway → worker: ``gen`` {id, messages: [[role, content], …], params: {…}, media?: [[kind, mime, bytes], …]},
``cancel`` {id}, ``ping`` {ts}.
worker → gateway: ``ready`` {name, engine, model, modalities, capacity, pid},
``tok`` {id, text, n}, ``done`` {id, reason, prompt, completion, queue_ms, error?},
``load`` {active, waiting, capacity, draining}, ``pong`` {ts}.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import msgpack

from rtserver.engines.base import ChatMessage, GenerateRequest, MediaPart, SamplingParams
from rtserver.exceptions import WorkerProtocolError

MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


def pack(frame: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(frame, use_bin_type=True)
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Incremental decoder: ``feed(bytes)`` then iterate complete frames."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        self._buf += data
        while len(self._buf) >= 4:
            (size,) = _HEADER.unpack_from(self._buf)
            if size > MAX_FRAME:
                raise WorkerProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME}")
            if len(self._buf) < 4 + size:
                return
            body = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            try:
                frame = msgpack.unpackb(body, raw=False)
            except Exception as exc:
                raise WorkerProtocolError(f"undecodable frame: {exc}") from None
            if not isinstance(frame, dict) or "t" not in frame:
                raise WorkerProtocolError("frame without a type")
            yield frame


def gen_frame(wire_id: int, request: GenerateRequest) -> dict[str, Any]:
    p = request.params
    frame: dict[str, Any] = {
        "t": "gen",
        "id": wire_id,
        "rid": request.request_id,
        "messages": [[m.role, m.content] for m in request.messages],
        "params": {
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "repetition_penalty": p.repetition_penalty,
            "seed": p.seed,
        },
    }
    if request.media:
        frame["media"] = [[m.kind, m.mime, m.data] for m in request.media]
    if request.prefix:
        frame["prefix"] = request.prefix
    return frame


def request_from_frame(frame: dict[str, Any]) -> GenerateRequest:
    try:
        messages = tuple(ChatMessage(role, content) for role, content in frame["messages"])
        params = SamplingParams(**frame.get("params", {}))
        media = tuple(MediaPart(kind, mime, data) for kind, mime, data in frame.get("media", ()))
        prefix = str(frame.get("prefix", ""))
        return GenerateRequest(str(frame.get("rid", frame["id"])), messages, params, media, prefix)
    except (KeyError, TypeError, ValueError) as exc:
        raise WorkerProtocolError(f"bad gen frame: {exc}") from None
