"""End to end with the embedded CPU model: TTFT and tokens/s at 1, 4 and 16 conversations.

    python bench/e2e_cpu.py [--levels 1 4 16] [--turns 3] [--max-tokens 64] [--repeat 3]

A real ``rtserver serve`` with its defaults (SmolLM2-135M via OpenVINO in the embedded
worker process, real intent routing) and the load tester (``loadtest.runner.LoadRun``)
in this process: C conversations, all opened at once, each playing ``--turns`` turns
of the built-in text scenarios with no think time. The model cache must hold the
model (``rtserver fetch-model``). Results: bench/results/e2e_cpu.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import gateway, min_median, run_uvloop, table, write_results
from loadtest.runner import LoadConfig, LoadRun
from loadtest.scenario import load_scenarios

SCENARIOS = ["coding", "small_talk", "creative", "homework"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--duration-s", type=float, default=300.0, help="cap per run")
    p.add_argument("--flags", nargs=argparse.REMAINDER, default=[], help="more `rtserver serve` flags")
    args = p.parse_args(argv)
    scenarios = load_scenarios(SCENARIOS)
    runs: dict[int, list[dict[str, Any]]] = {}
    flags = [
        "--max-tokens",
        str(args.max_tokens),
        "--messages-per-second",
        "100",
        "--message-burst",
        "100",
        *args.flags,
    ]
    with gateway(*flags, timeout=600.0) as (_, port):
        url = f"ws://127.0.0.1:{port}/ws"
        warm = LoadConfig(url=url, conversations=1, turns=1, duration_s=120.0, progress_every_s=0)
        run_uvloop(LoadRun(warm, scenarios).run(progress=None))
        for rep in range(args.repeat):
            for level in args.levels:
                cfg = LoadConfig(
                    url=url,
                    conversations=level,
                    turns=args.turns,
                    ramp=0,
                    duration_s=args.duration_s,
                    turn_timeout_s=120.0,
                    connect_timeout_s=30.0,
                    progress_every_s=0,
                )
                report = run_uvloop(LoadRun(cfg, scenarios).run(progress=None))
                runs.setdefault(level, []).append(report)
                t = report["ttft_ms"]["client"]
                print(
                    f"run {rep + 1}/{args.repeat} C={level:<3} turns {report['turns']['completed']}/"
                    f"{report['turns']['sent']}  TTFT p50 {t['p50']} ms p99 {t['p99']} ms  "
                    f"{report['tokens_per_s']['aggregate']} tok/s  errors {report['errors_by_code']}",
                    file=sys.stderr,
                    flush=True,
                )
    rows: list[list[Any]] = []
    summary: dict[str, Any] = {}
    for level, reports in runs.items():

        def mm(get: Any, rs: list[dict[str, Any]] = reports) -> dict[str, float] | None:
            vals = [v for r in rs if (v := get(r)) is not None]
            return min_median(vals) if vals else None

        agg: dict[str, Any] = {
            "ttft_client_p50_ms": mm(lambda r: r["ttft_ms"]["client"]["p50"]),
            "ttft_client_p99_ms": mm(lambda r: r["ttft_ms"]["client"]["p99"]),
            "ttft_server_p50_ms": mm(lambda r: r["ttft_ms"]["server"]["p50"]),
            "gap_client_p50_ms": mm(lambda r: r["gap_ms"]["client"]["p50"]),
            "tokens_per_s_aggregate": mm(lambda r: r["tokens_per_s"]["aggregate"]),
            "tokens_per_s_per_stream_p50": mm(lambda r: r["tokens_per_s"]["per_stream"]["p50"]),
            "turns_completed": [r["turns"]["completed"] for r in reports],
            "errors": [r["errors_by_code"] for r in reports],
        }
        summary[str(level)] = {**agg, "reports": reports}

        def med(x: dict[str, float] | None) -> float | None:
            return None if x is None else x["median"]

        rows.append(
            [
                level,
                med(agg["ttft_client_p50_ms"]),
                med(agg["ttft_client_p99_ms"]),
                med(agg["ttft_server_p50_ms"]),
                med(agg["gap_client_p50_ms"]),
                med(agg["tokens_per_s_per_stream_p50"]),
                med(agg["tokens_per_s_aggregate"]),
                (agg["tokens_per_s_aggregate"] or {}).get("min"),
            ]
        )
    print(
        table(
            [
                "conversations",
                "TTFT p50",
                "TTFT p99",
                "TTFT p50 (stats)",
                "gap p50",
                "tok/s per stream",
                "tok/s total median",
                "tok/s total min",
            ],
            rows,
        )
    )
    print("(ms; medians over runs)")
    path = write_results(
        "e2e_cpu",
        {
            "params": {
                "levels": args.levels,
                "turns": args.turns,
                "max_tokens": args.max_tokens,
                "repeat": args.repeat,
                "flags": flags,
            },
            "results": summary,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
