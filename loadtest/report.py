"""Report math for the load tester; pure (no I/O, no clock).

A finished turn becomes a :class:`TurnRecord` (``record_turn``); ``summarize`` folds
records and connection counts into the report dict that ``--json`` writes and
``format_table`` prints. Percentiles are nearest-rank: p99 of 100 values is the 99th
smallest, never an interpolation between two measurements.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtserver.protocol.stats import percentile as percentile  # the one definition (re-exported)

# Error frames that do not fail a turn: the text is still answered.
WARNING_CODES = frozenset({"attachment_unsupported"})




def distribution(values: Sequence[float], qs: Iterable[float] = (0.5, 0.9, 0.99)) -> dict[str, Any]:
    """``{"n", "p50", "p90", "p99", "max"}`` (values rounded to µs for milliseconds)."""
    out: dict[str, Any] = {"n": len(values)}
    for q in qs:
        v = percentile(values, q)
        out[f"p{q * 100:g}"] = None if v is None else round(v, 3)
    out["max"] = round(max(values), 3) if values else None
    return out


def seq_problems(seqs: Sequence[tuple[int, int]], last_seq: int | None) -> tuple[int, int]:
    """(lost, out_of_order) for one response's token frames, given as ``(seq, seq_last)`` pairs.

    ``lost`` counts sequence numbers never seen (gaps, and a ``done.last_seq`` past the
    last frame); ``out_of_order`` counts frames whose ``seq`` is below the next expected
    one (a repeat or a reordering). Both must be 0 against a correct server.
    """
    expected, lost, disorder = 0, 0, 0
    for seq, seq_last in seqs:
        if seq > expected:
            lost += seq - expected
        elif seq < expected:
            disorder += 1
            continue
        expected = max(expected, seq_last + 1)
    if last_seq is not None and last_seq + 1 > expected:
        lost += last_seq + 1 - expected
    return lost, disorder


@dataclass(frozen=True)
class TurnRecord:
    """What one turn looked like to the client; times in milliseconds."""

    conversation: int
    index: int
    finish_reason: str | None  # None: no done frame (timeout, socket closed, rejected)
    error_codes: tuple[str, ...] = ()
    decision: str | None = None
    ttft_client_ms: float | None = None
    ttft_server_ms: float | None = None
    gaps_client_ms: tuple[float, ...] = ()
    gaps_server_ms: tuple[float, ...] = ()
    turn_ms: float | None = None
    stream_ms: float | None = None  # first token → last token, client clock
    tokens: int = 0
    frames: int = 0
    merged_frames: int = 0
    seq_lost: int = 0
    seq_out_of_order: int = 0

    @property
    def completed(self) -> bool:
        return self.finish_reason in ("stop", "length") and not self.errors

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(c for c in self.error_codes if c not in WARNING_CODES)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(c for c in self.error_codes if c in WARNING_CODES)

    @property
    def stream_tokens_per_s(self) -> float | None:
        if self.stream_ms is None or self.stream_ms <= 0 or self.tokens < 2:
            return None
        return (self.tokens - 1) / (self.stream_ms / 1000.0)


def record_turn(
    conversation: int,
    index: int,
    *,
    sent_at: float,
    ended_at: float,
    route: Mapping[str, Any] | None,
    tokens: Sequence[Mapping[str, Any]],
    token_times: Sequence[float],
    done: Mapping[str, Any] | None,
    errors: Sequence[Mapping[str, Any]],
    extra_errors: Sequence[str] = (),
) -> TurnRecord:
    """Fold the frames of one turn (times in seconds from one monotonic clock) into a record."""
    pairs = [(int(t["seq"]), int(t.get("seq_last", t["seq"]))) for t in tokens]
    last_seq = int(done["last_seq"]) if done is not None and done.get("last_seq") is not None else None
    lost, disorder = seq_problems(pairs, last_seq)
    n_tokens = sum(max(1, b - a + 1) for a, b in pairs)
    server_gaps = tuple(float(t["stats"]["gap_ms"]) for t in tokens[1:] if t.get("stats"))
    server_ttft = float(tokens[0]["stats"]["ttft_ms"]) if tokens and tokens[0].get("stats") else None
    if server_ttft is None and done is not None and done.get("stats", {}).get("ttft_ms") is not None:
        server_ttft = float(done["stats"]["ttft_ms"])
    client_gaps = tuple((b - a) * 1000.0 for a, b in itertools.pairwise(token_times))
    return TurnRecord(
        conversation=conversation,
        index=index,
        finish_reason=None if done is None else str(done.get("finish_reason")),
        error_codes=tuple(str(e.get("code", "unknown")) for e in errors) + tuple(extra_errors),
        decision=None if route is None else str(route.get("decision")),
        ttft_client_ms=(token_times[0] - sent_at) * 1000.0 if token_times else None,
        ttft_server_ms=server_ttft,
        gaps_client_ms=client_gaps,
        gaps_server_ms=server_gaps,
        turn_ms=(ended_at - sent_at) * 1000.0 if done is not None else None,
        stream_ms=(token_times[-1] - token_times[0]) * 1000.0 if len(token_times) > 1 else None,
        tokens=n_tokens,
        frames=len(tokens),
        merged_frames=sum(1 for a, b in pairs if b > a),
        seq_lost=lost,
        seq_out_of_order=disorder,
    )


@dataclass
class ConnectionStats:
    opened: int = 0
    failed: int = 0
    not_started: int = 0  # the --duration-s cap came before its ramp slot
    turns_cut: int = 0  # still streaming when the --duration-s cap came (not an error)
    failures: Counter[str] = field(default_factory=Counter)

    def add(self, other: ConnectionStats) -> None:
        """Fold ``other`` (another process's counts) into these."""
        self.opened += other.opened
        self.failed += other.failed
        self.not_started += other.not_started
        self.turns_cut += other.turns_cut
        self.failures.update(other.failures)


def summarize(
    records: Sequence[TurnRecord],
    conns: ConnectionStats,
    *,
    wall_s: float,
    config: Mapping[str, Any] | None = None,
    elapsed_s: float | None = None,
    planned: int | None = None,
    capped: bool = False,
) -> dict[str, Any]:
    """The load-test report (a JSON-ready dict).

    ``wall_s``: start → end of the last finished turn (the span rates are computed over);
    ``elapsed_s``: start → end of the run (default ``wall_s``); ``planned``: conversations x
    turns (default: the turns sent); ``capped``: the ``--duration-s`` cap stopped the run.
    Turns add up: ``planned = sent + not_sent`` and ``sent = completed + failed + cut``.
    """
    sent = len(records) + conns.turns_cut
    planned = sent if planned is None else planned
    done = [r for r in records if r.completed]
    errors: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    for r in records:
        errors.update(r.errors)
        warnings.update(r.warnings)
    errors.update(conns.failures)
    decisions = Counter(r.decision for r in records if r.decision is not None)
    routed = sum(decisions.values())
    tokens = sum(r.tokens for r in records)
    rates = [v for r in done if (v := r.stream_tokens_per_s) is not None]
    return {
        "config": dict(config or {}),
        "wall_s": round(wall_s, 3),
        "elapsed_s": round(wall_s if elapsed_s is None else elapsed_s, 3),
        "stopped_by_duration_cap": capped,
        "connections": {"opened": conns.opened, "failed": conns.failed, "not_started": conns.not_started},
        "turns": {
            "planned": planned,
            "sent": sent,
            "completed": len(done),
            "failed": len(records) - len(done),
            "cut_by_duration": conns.turns_cut,
            "not_sent": max(0, planned - sent),
            "by_finish_reason": dict(Counter(str(r.finish_reason) for r in records)),
        },
        "errors_by_code": dict(errors),
        "warnings_by_code": dict(warnings),
        "ttft_ms": {
            "client": distribution([r.ttft_client_ms for r in done if r.ttft_client_ms is not None]),
            "server": distribution([r.ttft_server_ms for r in done if r.ttft_server_ms is not None]),
        },
        "gap_ms": {
            "client": distribution([g for r in done for g in r.gaps_client_ms]),
            "server": distribution([g for r in done for g in r.gaps_server_ms]),
        },
        "turn_ms": distribution([r.turn_ms for r in done if r.turn_ms is not None]),
        "tokens": tokens,
        "frames": sum(r.frames for r in records),
        "merged_frames": sum(r.merged_frames for r in records),
        "tokens_per_s": {
            "aggregate": round(tokens / wall_s, 2) if wall_s > 0 else None,
            "per_stream": {
                "n": len(rates),
                "p50": _round(percentile(rates, 0.5)),
                "p10": _round(percentile(rates, 0.1)),  # the slow tail of a rate is the low end
                "p1": _round(percentile(rates, 0.01)),
            },
        },
        "routing": {
            "decisions": dict(decisions),
            "bypass_rate": round(decisions.get("bypass", 0) / routed, 4) if routed else None,
        },
        "seq": {
            "lost": sum(r.seq_lost for r in records),
            "out_of_order": sum(r.seq_out_of_order for r in records),
        },
    }


def _round(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


def healthy(report: Mapping[str, Any]) -> bool:
    """No failed connection, no failed turn, no lost or reordered frame."""
    return bool(
        report["connections"]["failed"] == 0
        and report["turns"]["failed"] == 0
        and report["seq"]["lost"] == 0
        and report["seq"]["out_of_order"] == 0
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def format_table(report: Mapping[str, Any]) -> str:
    """A plain-text table of the report, for a terminal."""
    lines: list[str] = []
    c, t = report["connections"], report["turns"]
    cfg = report.get("config") or {}
    elapsed = report.get("elapsed_s", report["wall_s"])
    if report.get("stopped_by_duration_cap"):
        lines.append(f"run          {elapsed:.2f} s, stopped by the --duration-s cap; "
                     f"the last turn finished at {report['wall_s']:.2f} s")
    else:
        lines.append(f"run          {elapsed:.2f} s (last turn finished at {report['wall_s']:.2f} s)")
    lines.append(f"connections  opened {c['opened']}  failed {c['failed']}  not started {c['not_started']}")
    lines.append(
        f"turns        planned {t['planned']}  sent {t['sent']} (completed {t['completed']}, failed {t['failed']}, "
        f"cut by the cap {t['cut_by_duration']})  not sent {t['not_sent']}"
    )
    lines.append(f"finish       {t['by_finish_reason'] or 'no turn finished'}")
    if t["cut_by_duration"] or t["not_sent"] or c["not_started"]:
        cap = cfg.get("duration_s")
        lines.append(
            f"note         the {'' if cap is None else f'{cap:g} s '}cap ended the run early: raise --duration-s, "
            "or lower --conversations/--turns (a CPU worker streams tens of tokens/s, shared by every stream)"
        )
    lines.append(f"errors       {report['errors_by_code'] or 'none'}")
    if report["warnings_by_code"]:
        lines.append(f"warnings     {report['warnings_by_code']}")
    lines.append("")
    header = f"{'latency (ms)':<22}{'n':>8}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}"
    lines.append(header)
    lines.append("-" * len(header))
    rows = [
        ("TTFT client", report["ttft_ms"]["client"]),
        ("TTFT server (stats)", report["ttft_ms"]["server"]),
        ("token gap client", report["gap_ms"]["client"]),
        ("token gap server", report["gap_ms"]["server"]),
        ("turn end-to-end", report["turn_ms"]),
    ]
    for name, d in rows:
        lines.append(
            f"{name:<22}{_fmt(d['n']):>8}{_fmt(d['p50']):>10}{_fmt(d['p90']):>10}"
            f"{_fmt(d['p99']):>10}{_fmt(d['max']):>10}"
        )
    lines.append("")
    tps = report["tokens_per_s"]
    ps = tps["per_stream"]
    lines.append(f"tokens {report['tokens']:,} in {report['frames']:,} frames ({report['merged_frames']:,} merged)")
    lines.append(
        f"tokens/s     aggregate {_fmt(tps['aggregate'])}  per stream p50 {_fmt(ps['p50'])}  "
        f"p10 {_fmt(ps['p10'])}  p1 {_fmt(ps['p1'])}"
    )
    r = report["routing"]
    lines.append(f"routing      {r['decisions'] or 'no route frames'}  bypass rate {_fmt(r['bypass_rate'])}")
    s = report["seq"]
    lines.append(f"seq          lost {s['lost']}  out of order {s['out_of_order']}")
    return "\n".join(lines)
