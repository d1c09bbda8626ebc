"""The load tester's report math: what a user reads in the table must be right."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest.report import (
    ConnectionStats,
    TurnRecord,
    distribution,
    format_table,
    healthy,
    percentile,
    record_turn,
    seq_problems,
    summarize,
)


def tok(seq: int, *, last: int | None = None, ttft: float = 5.0, gap: float = 0.0) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "token",
        "response_id": "r_1",
        "seq": seq,
        "text": "x ",
        "stats": {"ttft_ms": ttft, "gap_ms": gap, "route_ms": 0.1, "queue_ms": 0.0, "elapsed_ms": ttft + gap},
    }
    if last is not None:
        frame["seq_last"] = last
    return frame


def done(last_seq: int, reason: str = "stop") -> dict[str, Any]:
    return {
        "type": "done",
        "response_id": "r_1",
        "finish_reason": reason,
        "last_seq": last_seq,
        "usage": {"prompt_tokens": 3, "completion_tokens": last_seq + 1},
        "stats": {"ttft_ms": 5.0},
    }


def test_nearest_rank_percentiles_pick_real_measurements() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.9) == 90.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0  # unsorted input


def test_distribution_of_nothing_is_empty_not_zero() -> None:
    assert distribution([]) == {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}


@pytest.mark.parametrize(
    ("seqs", "last_seq", "expected"),
    [
        ([(0, 0), (1, 1), (2, 2)], 2, (0, 0)),
        ([(0, 0), (1, 4), (5, 5)], 5, (0, 0)),  # merged frames are contiguous
        ([(0, 0), (2, 2)], 2, (1, 0)),  # seq 1 never arrived
        ([(0, 0), (1, 1)], 3, (2, 0)),  # done says 4 tokens, 2 seen
        ([(0, 0), (1, 1), (1, 1), (2, 2)], 2, (0, 1)),  # a repeat
        ([(0, 0), (2, 2), (1, 1)], 2, (1, 1)),  # swapped: 1 looks lost, then late
        ([], -1, (0, 0)),  # no tokens at all, done.last_seq -1
        ([], None, (0, 0)),
    ],
)
def test_seq_problems(seqs: list[tuple[int, int]], last_seq: int | None, expected: tuple[int, int]) -> None:
    assert seq_problems(seqs, last_seq) == expected


def test_record_turn_measures_client_and_server_times() -> None:
    tokens = [tok(0, ttft=4.0), tok(1, gap=2.0), tok(2, last=4, gap=3.0)]
    rec = record_turn(
        1,
        0,
        sent_at=10.0,
        ended_at=10.050,
        route={"decision": "bypass"},
        tokens=tokens,
        token_times=[10.005, 10.007, 10.010],
        done=done(4),
        errors=[],
    )
    assert rec.completed
    assert rec.decision == "bypass"
    assert rec.ttft_client_ms == pytest.approx(5.0)
    assert rec.ttft_server_ms == 4.0
    assert rec.gaps_client_ms == pytest.approx((2.0, 3.0))
    assert rec.gaps_server_ms == (2.0, 3.0)
    assert rec.turn_ms == pytest.approx(50.0)
    assert (rec.tokens, rec.frames, rec.merged_frames) == (5, 3, 1)
    assert (rec.seq_lost, rec.seq_out_of_order) == (0, 0)
    assert rec.stream_tokens_per_s == pytest.approx(4 / 0.005)


def test_a_warning_does_not_fail_a_turn_but_an_error_does() -> None:
    warn = record_turn(
        0,
        0,
        sent_at=0.0,
        ended_at=0.1,
        route=None,
        tokens=[tok(0)],
        token_times=[0.01],
        done=done(0),
        errors=[{"type": "error", "code": "attachment_unsupported"}],
    )
    assert warn.completed and warn.warnings == ("attachment_unsupported",)
    busy = record_turn(
        0,
        1,
        sent_at=0.0,
        ended_at=0.1,
        route=None,
        tokens=[],
        token_times=[],
        done=None,
        errors=[{"type": "error", "code": "busy"}],
    )
    assert not busy.completed and busy.errors == ("busy",) and busy.turn_ms is None
    timeout = record_turn(
        0,
        2,
        sent_at=0.0,
        ended_at=0.1,
        route=None,
        tokens=[],
        token_times=[],
        done=None,
        errors=[],
        extra_errors=["turn_timeout"],
    )
    assert not timeout.completed and timeout.errors == ("turn_timeout",)


def _turns() -> list[TurnRecord]:
    out = []
    for i in range(10):
        out.append(
            TurnRecord(
                conversation=i % 2,
                index=i // 2,
                finish_reason="stop",
                decision="full" if i < 2 else "bypass",
                ttft_client_ms=float(i + 1),
                ttft_server_ms=float(i),
                gaps_client_ms=(1.0, 2.0),
                gaps_server_ms=(1.5,),
                turn_ms=100.0 + i,
                stream_ms=10.0,
                tokens=11,
                frames=11,
            )
        )
    out.append(
        TurnRecord(
            conversation=0, index=5, finish_reason=None, error_codes=("closed_4008",), tokens=3, frames=3, seq_lost=2
        )
    )
    return out


def test_summarize_counts_what_happened() -> None:
    conns = ConnectionStats(opened=2, failed=1)
    conns.failures["connect_timeout"] += 1
    report = summarize(_turns(), conns, wall_s=2.0, config={"conversations": 3})
    assert report["connections"] == {"opened": 2, "failed": 1, "not_started": 0}
    assert report["turns"]["completed"] == 10
    assert report["turns"]["failed"] == 1
    assert report["turns"]["by_finish_reason"] == {"stop": 10, "None": 1}
    assert report["errors_by_code"] == {"closed_4008": 1, "connect_timeout": 1}
    assert report["ttft_ms"]["client"]["p50"] == 5.0
    assert report["ttft_ms"]["client"]["p99"] == 10.0
    assert report["ttft_ms"]["server"]["n"] == 10
    assert report["gap_ms"]["client"]["n"] == 20
    assert report["gap_ms"]["server"]["p50"] == 1.5
    assert report["tokens"] == 113
    assert report["tokens_per_s"]["aggregate"] == 56.5
    assert report["tokens_per_s"]["per_stream"]["p50"] == 1000.0  # 10 tokens after the first in 10 ms
    assert report["routing"] == {"decisions": {"full": 2, "bypass": 8}, "bypass_rate": 0.8}
    assert report["seq"] == {"lost": 2, "out_of_order": 0}
    assert not healthy(report)
    assert "lost 2" in format_table(report)


def test_a_clean_run_is_healthy_and_prints_every_section() -> None:
    report = summarize(_turns()[:10], ConnectionStats(opened=2), wall_s=1.0)
    assert healthy(report)
    table = format_table(report)
    for label in ("TTFT client", "TTFT server", "token gap client", "turn end-to-end", "bypass rate", "seq"):
        assert label in table


def test_no_route_frames_means_no_bypass_rate() -> None:
    report = summarize([], ConnectionStats(), wall_s=0.0)
    assert report["routing"]["bypass_rate"] is None
    assert report["tokens_per_s"]["aggregate"] is None
