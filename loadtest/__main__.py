"""``python -m loadtest`` / ``rtserver-load``: run a load test, print a table, write JSON.

Exit status: 0 when every connection opened, every turn completed and no frame was
lost or reordered; 1 otherwise; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from loadtest.report import format_table, healthy
from loadtest.runner import LoadConfig, LoadRun, RunParts
from loadtest.scenario import builtin_names
from rtserver.runner import run_uvloop


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtserver-load",
        description="WebSocket load tester for rtserver (protocol v1): N concurrent scripted conversations.",
    )
    p.add_argument("--url", default="ws://127.0.0.1:8000/ws", help="WebSocket URL (add ?token=… for auth)")
    p.add_argument("-c", "--conversations", type=int, default=LoadConfig.conversations,
                   help=f"concurrent conversations (default {LoadConfig.conversations})")
    p.add_argument("-t", "--turns", type=int, default=LoadConfig.turns,
                   help=f"turns per conversation (default {LoadConfig.turns})")
    p.add_argument("--ramp", type=float, default=50.0, help="conversations opened per second; 0: all at once")
    p.add_argument("--think-ms", type=float, default=0.0, help="pause between a done and the next message")
    p.add_argument("--encoding", choices=("json", "msgpack"), default="json", help="subprotocol")
    p.add_argument(
        "--duration-s", type=float, default=LoadConfig.duration_s,
        help=f"hard cap on the whole run (default {LoadConfig.duration_s:g}: a CPU worker streams tens of "
        "tokens/s in all); "
        "turns still streaming then are counted as cut",
    )
    p.add_argument("--processes", type=int, default=1,
                   help="client processes sharing the conversations (default 1); percentiles merge exactly")
    p.add_argument("--turn-timeout-s", type=float, default=60.0, help="longest wait for the next frame of a turn")
    p.add_argument("--connect-timeout-s", type=float, default=10.0, help="handshake + session frame timeout")
    p.add_argument(
        "--scenario",
        action="append",
        default=None,
        metavar="NAME|FILE.jsonl",
        help=f"repeatable; built-in: {', '.join(builtin_names())} (default: all)",
    )
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot latency distributions (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = LoadConfig(
            url=args.url,
            conversations=args.conversations,
            turns=args.turns,
            ramp=args.ramp,
            think_ms=args.think_ms,
            encoding=args.encoding,
            duration_s=args.duration_s,
            turn_timeout_s=args.turn_timeout_s,
            connect_timeout_s=args.connect_timeout_s,
            scenarios=tuple(args.scenario or ()),
            progress_every_s=0.0 if args.quiet else 1.0,
        )
        run = LoadRun(cfg)
        if args.processes < 1:
            raise ValueError("--processes must be at least 1")
    except ValueError as exc:
        print(f"rtserver-load: {exc}", file=sys.stderr)
        return 2
    progress = None if args.quiet else sys.stderr
    parts: RunParts
    try:
        if args.processes > 1:
            from loadtest.multiproc import run_processes

            parts = run_processes(cfg, args.processes, progress)
        else:
            parts = run_uvloop(run.run_parts(progress))
    except KeyboardInterrupt:
        return 130
    report = parts.report(cfg, [s.name for s in run.scenarios])
    report["config"]["processes"] = args.processes
    print(format_table(report))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
        print(f"report written to {args.json}")
    if args.plot:
        from loadtest.plot import plot_latencies

        why = plot_latencies(parts.records, args.plot)
        print(why if why else f"plot written to {args.plot}", file=sys.stderr if why else sys.stdout)
    return 0 if healthy(report) else 1


if __name__ == "__main__":
    raise SystemExit(main())
