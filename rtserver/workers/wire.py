"""The gateway ↔ worker wire's framing (docs/worker-protocol.md); pure.

A stream of msgpack maps, back to back (msgpack is self-delimiting), each with a
``t`` (type) key. Requests are multiplexed by ``id`` (an int chosen by the gateway,
unique per connection). The frames themselves are the records of frames.py
(``Gen``, ``Tok``, ``Done``, …): build and read them there, frame them here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack

from rtserver.exceptions import WorkerProtocolError

MAX_FRAME = 64 * 1024 * 1024


def pack(frame: dict[str, Any]) -> bytes:
    """One frame: a msgpack map (msgpack is self-delimiting, so no length prefix)."""
    return msgpack.packb(frame, use_bin_type=True)  # type: ignore[no-any-return]


class FrameReader:
    """Incremental decoder: ``feed(bytes)`` then iterate the complete frames.

    A streaming ``msgpack.Unpacker`` (C): about 0.7 µs a token frame, against 1.8 µs for
    length-prefixed frames sliced out of a buffer and unpacked one by one.
    """

    __slots__ = ("_unpacker",)

    def __init__(self) -> None:
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_FRAME, strict_map_key=False)

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        unpacker = self._unpacker
        try:
            unpacker.feed(data)
            for frame in unpacker:
                if not isinstance(frame, dict) or "t" not in frame:
                    raise WorkerProtocolError("frame without a type")
                yield frame
        except WorkerProtocolError:
            raise
        except Exception as exc:  # BufferFull (a frame over MAX_FRAME), FormatError, StackError, …
            raise WorkerProtocolError(f"undecodable frame: {type(exc).__name__}: {exc}") from None
