"""Latency bookkeeping for one response; pure (the caller passes clock readings).

All inputs are seconds from one monotonic clock; all outputs are milliseconds.
``received`` is when the gateway read the user's message off the socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rtserver.protocol.frames import Decision, DoneStats


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (``None`` when empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


@dataclass(slots=True)
class ResponseClock:
    received: float
    route_ms: float = 0.0
    queue_ms: float = 0.0
    decision: Decision = "full"
    first_token_at: float | None = None
    last_token_at: float | None = None
    gaps_ms: list[float] = field(default_factory=list)
    tokens: int = 0

    def stamp(self, now: float) -> dict[str, float]:
        """The ``stats`` object of a token frame sent at ``now``; call once per frame, in order.

        Returns the wire dict directly: this runs once per token on the hot path.
        """
        first = self.first_token_at
        if first is None:
            self.first_token_at = first = now
            gap = 0.0
        else:
            gap = (now - self.last_token_at) * 1000.0  # type: ignore[operator]
            self.gaps_ms.append(gap)
        self.last_token_at = now
        self.tokens += 1
        return {
            "ttft_ms": round((first - self.received) * 1000.0, 3),
            "gap_ms": round(gap, 3),
            "route_ms": round(self.route_ms, 3),
            "queue_ms": round(self.queue_ms, 3),
            "elapsed_ms": round((now - self.received) * 1000.0, 3),
        }

    def summary(self, now: float, completion_tokens: int) -> DoneStats:
        total_s = now - self.received
        gaps = sorted(self.gaps_ms)
        if self.first_token_at is not None and now > self.first_token_at and completion_tokens > 1:
            rate = (completion_tokens - 1) / (now - self.first_token_at)
        else:
            rate = 0.0
        p50 = percentile(gaps, 0.5)
        p95 = percentile(gaps, 0.95)
        return DoneStats(
            ttft_ms=None if self.first_token_at is None else round((self.first_token_at - self.received) * 1000.0, 3),
            total_ms=round(total_s * 1000.0, 3),
            tokens_per_s=round(rate, 2),
            gap_p50_ms=None if p50 is None else round(p50, 3),
            gap_p95_ms=None if p95 is None else round(p95, 3),
            route_ms=round(self.route_ms, 3),
            decision=self.decision,
        )
