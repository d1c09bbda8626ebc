"""100,000+ hostile frames at the codec: each decodes to a frame or raises ProtocolError
with a documented code; nothing else escapes."""

from __future__ import annotations

from collections import Counter

from rtserver.codes import ErrorCode
from rtserver.exceptions import ProtocolError
from rtserver.protocol.codec import decode_client_frame
from rtserver.protocol.frames import Limits
from tests.fuzz.frames import hostile_frames

LIMITS = Limits(max_frame_bytes=16 * 1024, max_text_chars=4000)


def test_hundred_thousand_hostile_frames() -> None:
    codes: Counter[str] = Counter()
    accepted = 0
    for payload, encoding in hostile_frames(120_000):
        try:
            decode_client_frame(payload, encoding, LIMITS)  # type: ignore[arg-type]
            accepted += 1
        except ProtocolError as exc:
            assert isinstance(exc.code, ErrorCode)
            codes[exc.code.wire] += 1
    assert sum(codes.values()) + accepted == 120_000
    # the generator reaches every rejection path that matters
    for code in ("malformed_frame", "wrong_frame_kind", "unknown_type", "invalid_field", "missing_field",
                 "frame_too_large", "text_too_long", "invalid_base64"):
        assert codes[code] > 0, (code, codes)
