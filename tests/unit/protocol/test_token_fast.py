"""The token hot path (codec.token_values) produces exactly what the record encoder produces."""

from __future__ import annotations

import dataclasses

import pytest

from rtserver.codes import ErrorCode
from rtserver.protocol.codec import encode, encode_values, error_frame, to_wire, token_values
from rtserver.protocol.frames import Seam, Token, TokenStats
from rtserver.protocol.stats import ResponseClock

TEXTS = ["hello", "", "hé ✓ 🙂", 'quote " and \\ backslash', "x" * 5000]


def _stamps() -> list[dict[str, float]]:
    clock = ResponseClock(received=100.0)
    clock.route_ms, clock.queue_ms = 0.1234567, 2.5
    return [clock.stamp(100.0 + 0.013 * i) for i in range(1, 4)]


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
@pytest.mark.parametrize("seam", [None, Seam(worker="w-2", reason="worker_lost")])
def test_fast_token_values_equal_the_record_encoder(encoding: str, seam: Seam | None) -> None:
    for seq, (text, stats) in enumerate(zip(TEXTS, _stamps() * 2, strict=False)):
        fast = token_values("r_abc", seq, text, stats, dataclasses.asdict(seam) if seam else None)
        record = Token(response_id="r_abc", seq=seq, text=text, stats=TokenStats(**stats), seam=seam)
        assert fast == to_wire(record)
        assert list(fast) == list(to_wire(record))  # same key order: same bytes on the wire
        assert encode_values(fast, encoding) == encode(record, encoding)  # type: ignore[arg-type]


def test_stamp_gives_token_stats_fields_in_order() -> None:
    stats = _stamps()[0]
    assert list(stats) == [f.name for f in dataclasses.fields(TokenStats)]


def test_documented_token_and_error_fields_are_on_the_records() -> None:
    """docs/protocol.md: a token has seq_last when merged and seam after a worker switch;
    an error may carry response_id."""
    token = Token(response_id="r", seq=4, text="ab", stats=TokenStats(1, 2, 3, 4, 5), seq_last=6,
                  seam=Seam(worker="w", reason="worker_lost"))
    wire = to_wire(token)
    assert wire["seq_last"] == 6 and wire["seam"] == {"worker": "w", "reason": "worker_lost"}
    assert "seq_last" not in to_wire(dataclasses.replace(token, seq_last=None))
    err = to_wire(error_frame(ErrorCode.WORKER_LOST, "lost", ref="m1", response_id="r"))
    assert (err["response_id"], err["ref"], err["code"]) == ("r", "m1", "worker_lost")
    assert "response_id" not in to_wire(error_frame(ErrorCode.BUSY, "busy"))
