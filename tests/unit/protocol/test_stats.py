from __future__ import annotations

from rtserver.protocol.stats import ResponseClock, percentile


def test_token_stats_follow_the_clock() -> None:
    clock = ResponseClock(received=10.0, route_ms=0.02, queue_ms=1.5, decision="bypass")
    first = clock.stamp(10.050)
    assert first["ttft_ms"] == 50.0 and first["gap_ms"] == 0.0 and first["elapsed_ms"] == 50.0
    assert first["route_ms"] == 0.02 and first["queue_ms"] == 1.5
    second = clock.stamp(10.060)
    assert second["ttft_ms"] == 50.0 and abs(second["gap_ms"] - 10.0) < 1e-6
    assert abs(second["elapsed_ms"] - 60.0) < 1e-6
    clock.stamp(10.090)
    done = clock.summary(10.1, completion_tokens=3)
    assert done.ttft_ms == 50.0 and abs(done.total_ms - 100.0) < 1e-6
    assert abs(done.tokens_per_s - 2 / 0.05) < 0.01
    assert done.gap_p50_ms is not None and 10.0 <= done.gap_p50_ms <= 30.0 and done.decision == "bypass"


def test_no_tokens() -> None:
    done = ResponseClock(received=1.0).summary(1.5, completion_tokens=0)
    assert done.ttft_ms is None and done.tokens_per_s == 0.0 and done.gap_p95_ms is None


def test_percentile() -> None:
    assert percentile([], 0.5) is None
    assert percentile([1.0, 2.0, 3.0], 0.5) == 2.0
    assert percentile([1.0, 2.0, 3.0, 100.0], 0.95) == 100.0
