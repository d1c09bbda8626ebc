"""Merging the shares of a run split over processes: exact percentiles, counts that add up."""

from __future__ import annotations

import random
from collections import Counter

from loadtest.report import ConnectionStats, TurnRecord, format_table, percentile
from loadtest.runner import LoadConfig, RunParts


def _record(conv: int, index: int, ttft: float, gaps: tuple[float, ...]) -> TurnRecord:
    return TurnRecord(conversation=conv, index=index, finish_reason="stop", decision="full" if index == 0 else "bypass",
                      ttft_client_ms=ttft, ttft_server_ms=ttft / 2, gaps_client_ms=gaps, gaps_server_ms=gaps,
                      turn_ms=ttft + sum(gaps), stream_ms=sum(gaps), tokens=len(gaps) + 1, frames=len(gaps) + 1)


def _split(records: list[TurnRecord], n: int) -> list[RunParts]:
    parts = []
    for k in range(n):
        mine = [r for r in records if r.conversation % n == k]
        parts.append(RunParts(mine, ConnectionStats(opened=len({r.conversation for r in mine})),
                              wall_s=10.0 + k, elapsed_s=11.0 + k, capped=False))
    return parts


def test_merged_percentiles_equal_those_of_all_samples_not_an_average() -> None:
    rng = random.Random(3)
    records = []
    for conv in range(30):
        slow = conv % 3 == 0  # one process's share is much slower: averaging its p99 would hide it
        for index in range(2):
            ttft = rng.uniform(200, 400) if slow else rng.uniform(5, 15)
            records.append(_record(conv, index, ttft, tuple(rng.uniform(1, 3) for _ in range(5))))
    cfg = LoadConfig(conversations=30, turns=2)
    whole = RunParts(list(records), ConnectionStats(opened=30), wall_s=12.0, elapsed_s=13.0, capped=False)
    parts = _split(records, 3)
    merged = RunParts.merge(parts).report(cfg, ["x"])
    assert merged == whole.report(cfg, ["x"])
    ttfts = [r.ttft_client_ms for r in records if r.ttft_client_ms is not None]
    assert merged["ttft_ms"]["client"]["p99"] == round(percentile(ttfts, 0.99) or 0.0, 3)
    averaged = sum(percentile([r.ttft_client_ms for r in p.records if r.ttft_client_ms], 0.99) or 0.0
                   for p in parts) / 3
    assert merged["ttft_ms"]["client"]["p99"] != round(averaged, 3)
    assert merged["turns"]["completed"] == 60 and merged["connections"]["opened"] == 30
    assert merged["elapsed_s"] == 13.0 and merged["wall_s"] == 12.0  # the slowest share bounds the run


def test_merged_connection_failures_and_cut_turns_are_summed() -> None:
    a = RunParts([], ConnectionStats(opened=1, failed=1, turns_cut=2, failures=Counter({"connect_timeout": 1})),
                 wall_s=1.0, elapsed_s=5.0, capped=True)
    b = RunParts([_record(1, 0, 10.0, (1.0,))], ConnectionStats(opened=1, failures=Counter({"connect_timeout": 2})),
                 wall_s=2.0, elapsed_s=3.0, capped=False)
    report = RunParts.merge([a, b]).report(LoadConfig(conversations=2, turns=3), ["x"])
    assert report["connections"] == {"opened": 2, "failed": 1, "not_started": 0}
    assert report["errors_by_code"] == {"connect_timeout": 3}
    t = report["turns"]
    assert (t["planned"], t["sent"], t["completed"], t["failed"], t["cut_by_duration"], t["not_sent"]) == (
        6, 3, 1, 0, 2, 3)
    assert t["planned"] == t["sent"] + t["not_sent"]
    assert t["sent"] == t["completed"] + t["failed"] + t["cut_by_duration"]
    assert report["stopped_by_duration_cap"] is True


def test_a_capped_run_says_so_and_its_turns_add_up() -> None:
    parts = RunParts([_record(c, 0, 10.0, (1.0,)) for c in range(5)], ConnectionStats(opened=50, turns_cut=5),
                     wall_s=38.94, elapsed_s=60.0, capped=True)
    table = format_table(parts.report(LoadConfig(conversations=50, turns=5, duration_s=60.0), ["x"]))
    assert "60.00 s, stopped by the --duration-s cap" in table
    assert "the last turn finished at 38.94 s" in table
    assert "planned 250  sent 10 (completed 5, failed 0, cut by the cap 5)  not sent 240" in table
    assert "raise --duration-s" in table


def test_shares_play_disjoint_conversations_covering_all() -> None:
    shares = [LoadConfig(conversations=10, index_offset=k, index_stride=3) for k in range(3)]
    seen = [i for s in shares for i in s.indices]
    assert sorted(seen) == list(range(10))
