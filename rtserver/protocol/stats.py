"""Latency bookkeeping for one response; pure (the caller passes clock readings).

All inputs are seconds from one monotonic clock; all outputs are milliseconds.
``received`` is when the gateway read the user's message off the socket.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from rtserver.protocol.frames import Decision, DoneStats


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile, the one definition rtserver uses everywhere.

    With ``n`` values and ``q`` in 0..1 it is the ``ceil(q * n)``-th smallest value (rank
    clamped to 1..n): the smallest measurement with at least a ``q`` share of all values at
    or below it. It is always a real measurement, never an interpolation: p50 of
    ``[1, 2, 3, 4]`` is 2, p99 of 100 values the 99th smallest, p100 the maximum. ``values``
    may be unsorted; ``None`` when empty. ``done.stats`` (``gap_p50_ms``, ``gap_p95_ms``),
    the load tester and the benchmarks all call this function.
    """
    n = len(values)
    if n == 0:
        return None
    ordered = sorted(values)
    rank = min(n, max(1, math.ceil(q * n - 1e-9)))  # 1e-9: 0.1 * 30 is 3.0000000000000004
    return ordered[rank - 1]


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
        gaps = self.gaps_ms
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
