"""Gateway overhead on time-to-first-token: direct to a worker vs through the gateway.

    python bench/gateway_overhead.py [--levels 1 100 1000] [--turns 5] [--think-ms 1000] [--repeat 3]

One synthetic worker process (``rtserver worker --engine synthetic``, first token
without delay, ``--rate`` tokens/s per stream) serves both paths, in alternation:

* ``direct``: this process talks the worker wire with ``rtserver.workers.client.WorkerClient``
  (TTFT = ``generate()`` called → first ``TokenEvent``).
* ``gateway``: ``rtserver serve --worker unix:…`` in front of the same worker; this
  process runs the load tester (``loadtest.runner.LoadRun``): TTFT = message sent →
  first token frame received. The frames' own ``stats.ttft_ms`` is reported too.

Same workload on both: C conversations opened at ``--ramp``/s, each playing
``--turns`` turns of the built-in text scenarios with ``--think-ms`` between turns and
the conversation history resent each turn. Turns after the first are routing bypasses;
the headline compares those (``bypass``), the first turns (classifier) are listed
separately. Processes are pinned: gateway, worker and client on different cores
where there are enough. ``--client-procs N`` splits each phase's conversations over N
client processes (on the remaining cores), so that at 1,000 conversations the client's
own event loop does not dominate the measurement. Results: bench/results/gateway_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    cpus,
    gateway,
    min_median,
    percentile,
    pin,
    popen_python,
    read_json_line,
    run_uvloop,
    stop,
    table,
    wait_line,
    write_results,
)
from loadtest.runner import LoadConfig, LoadRun
from loadtest.scenario import Scenario, ScenarioTurn, load_scenarios
from rtserver.engines.base import ChatMessage, GenerateRequest, SamplingParams, TokenEvent

SCENARIOS = ["coding", "small_talk", "creative", "homework"]  # text only: the synthetic model takes no images


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _dist(values: list[float]) -> dict[str, float | None]:
    return {"n": len(values), **{f"p{q}": percentile(values, q / 100) for q in (50, 90, 99)}}


async def direct_phase(
    address: str,
    conversations: int,
    turns: int,
    think_ms: float,
    ramp: float,
    scenarios: list[Scenario],
    budget_s: float,
) -> dict[str, Any]:
    from rtserver.workers.client import WorkerClient

    wc = WorkerClient(address, heartbeat_timeout_s=30.0)
    await wc.connect()
    first: list[float] = []
    later: list[float] = []
    errors = 0

    async def conv(i: int) -> None:
        nonlocal errors
        await asyncio.sleep(i / ramp if ramp > 0 else 0.0)
        history: list[ChatMessage] = []
        sc = scenarios[i % len(scenarios)]
        for t in range(turns):
            history.append(ChatMessage("user", sc.turn(t).text))
            req = GenerateRequest(f"d{i}-{t}", tuple(history), SamplingParams(max_tokens=256))
            t0 = time.perf_counter()
            got: float | None = None
            parts: list[str] = []
            async for ev in wc.generate(req):
                if isinstance(ev, TokenEvent):
                    if got is None:
                        got = time.perf_counter()
                        (first if t == 0 else later).append((got - t0) * 1000.0)
                    parts.append(ev.text)
                elif ev.reason not in ("stop", "length"):
                    errors += 1
            history.append(ChatMessage("assistant", "".join(parts)))
            if t + 1 < turns:
                await asyncio.sleep(think_ms / 1000.0)

    try:
        await asyncio.wait_for(asyncio.gather(*(conv(i) for i in range(conversations))), budget_s)
    finally:
        await wc.close()
    return {"first": first, "bypass": later, "errors": errors}


async def gateway_phase(
    url: str, conversations: int, turns: int, think_ms: float, ramp: float, scenarios: list[Scenario], budget_s: float
) -> dict[str, Any]:
    cfg = LoadConfig(
        url=url,
        conversations=conversations,
        turns=turns,
        ramp=ramp,
        think_ms=think_ms,
        duration_s=budget_s,
        turn_timeout_s=30.0,
        connect_timeout_s=30.0,
        progress_every_s=0,
    )
    run = LoadRun(cfg, scenarios)
    report = await run.run(progress=None)
    done = [r for r in run.records if r.completed]
    return {
        "first": [r.ttft_client_ms for r in done if r.index == 0 and r.ttft_client_ms is not None],
        "bypass": [r.ttft_client_ms for r in done if r.index > 0 and r.ttft_client_ms is not None],
        "server_bypass": [r.ttft_server_ms for r in done if r.index > 0 and r.ttft_server_ms is not None],
        "decisions": report["routing"]["decisions"],
        "errors": report["errors_by_code"],
        "failed_turns": report["turns"]["failed"],
        "connections_failed": report["connections"]["failed"],
    }


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, list):
                out.setdefault(k, []).extend(v)
            elif isinstance(v, dict):
                acc = out.setdefault(k, {})
                for kk, vv in v.items():
                    acc[kk] = acc.get(kk, 0) + vv
            else:
                out[k] = out.get(k, 0) + v
    return out


def run_phase(
    kind: str,
    target: str,
    level: int,
    args: argparse.Namespace,
    scenarios: list[Scenario],
    budget: float,
    client_cores: list[int],
) -> dict[str, Any]:
    """One phase with ``level`` conversations, in this process or split over ``--client-procs`` processes."""
    procs = max(1, min(args.client_procs, level))
    if procs == 1:
        if kind == "direct":
            return dict(
                run_uvloop(direct_phase(target, level, args.turns, args.think_ms, args.ramp, scenarios, budget))
            )
        return dict(run_uvloop(gateway_phase(target, level, args.turns, args.think_ms, args.ramp, scenarios, budget)))
    children = []
    offset = 0
    for i in range(procs):
        k = level // procs + (1 if i < level % procs else 0)
        cmd = [
            "bench/gateway_overhead.py",
            "--role",
            kind,
            "--target",
            target,
            "--levels",
            str(k),
            "--offset",
            str(offset),
            "--turns",
            str(args.turns),
            "--think-ms",
            str(args.think_ms),
            "--ramp",
            str(args.ramp / procs),
            "--budget-s",
            str(budget),
        ]
        if args.override:
            cmd.append("--override")
        children.append(popen_python(cmd, [client_cores[i % len(client_cores)]]))
        offset += k
    return _merge([dict(read_json_line(c, budget + 60)) for c in children])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 100, 1000])
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--think-ms", type=float, default=1000.0)
    p.add_argument("--ramp", type=float, default=500.0, help="conversations opened per second")
    p.add_argument("--rate", type=float, default=100.0, help="synthetic tokens/s per stream")
    p.add_argument("--tokens", type=int, default=8, help="synthetic tokens per response")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--client-procs", type=int, default=1, help="spread each phase's conversations over this many client processes"
    )
    p.add_argument("--serve-flags", default="", help="extra rtserver serve flags, e.g. --serve-flags='--classifier-batch 1'")
    p.add_argument("--out", default="", help="results file name under bench/results/ (default: by mode)")
    p.add_argument("--role", choices=("main", "direct", "gateway"), default="main", help=argparse.SUPPRESS)
    p.add_argument("--target", default="", help=argparse.SUPPRESS)
    p.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--budget-s", type=float, default=120.0, help=argparse.SUPPRESS)
    p.add_argument(
        "--override",
        action="store_true",
        help="send context use_case=chat on every turn: routing never calls the classifier",
    )
    args = p.parse_args(argv)

    from bench.common import raise_nofile

    raise_nofile(max(4096, 3 * max(args.levels) + 256))
    scenarios = load_scenarios(SCENARIOS)
    if args.override:
        scenarios = [
            Scenario(s.name, tuple(ScenarioTurn(t.text, t.attachments, {"use_case": "chat"}) for t in s.turns))
            for s in scenarios
        ]
    if args.role != "main":  # one client process of a split phase
        n = args.offset % len(scenarios)
        scenarios = scenarios[n:] + scenarios[:n]
        res = run_phase(
            args.role,
            args.target,
            args.levels[0],
            argparse.Namespace(**{**vars(args), "client_procs": 1}),
            scenarios,
            args.budget_s,
            [],
        )
        print(json.dumps(res), flush=True)
        return 0
    avail = cpus()
    gw_core, worker_core = [avail[0]], [avail[1 % len(avail)]]
    client_cores = avail[2:] or [avail[-1]]
    client_core = client_cores[:1]
    pin(0, client_core)
    tmp = tempfile.mkdtemp(prefix="rt-bench-")
    address = f"unix:{os.path.join(tmp, 'worker.sock')}"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtserver",
            "worker",
            "--engine",
            "synthetic",
            "--model-id",
            "synthetic",
            "--listen",
            address,
            "--name",
            "bench",
            "--capacity",
            "4096",
            "--max-queue",
            "4096",
            "--synthetic-rate",
            str(args.rate),
            "--synthetic-tokens",
            str(args.tokens),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    import re

    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    try:
        pin(worker.pid, worker_core)
        wait_line(worker, re.compile(rb"READY"), 60)
        flags = [
            "--worker",
            address,
            "--model-id",
            "synthetic",
            "--max-connections-per-ip",
            "100000",
            "--idle-timeout-s",
            "3600",
            "--max-tokens",
            "256",
            *args.serve_flags.split(),
        ]
        with gateway(*flags, cores=gw_core) as (_, port):
            url = f"ws://127.0.0.1:{port}/ws"
            for rep in range(args.repeat):
                for level in args.levels:
                    budget = level / args.ramp + args.turns * (args.think_ms / 1000 + 2.0) + 60
                    d = run_phase("direct", address, level, args, scenarios, budget, client_cores)
                    g = run_phase("gateway", url, level, args, scenarios, budget, client_cores)
                    results.setdefault(level, {"direct": [], "gateway": []})
                    results[level]["direct"].append(d)
                    results[level]["gateway"].append(g)
                    dp, gp = percentile(d["bypass"], 0.99), percentile(g["bypass"], 0.99)
                    print(
                        f"run {rep + 1}/{args.repeat} C={level:<5} bypass TTFT p99 direct {dp:.3f} ms "
                        f"gateway {gp:.3f} ms  errors {d['errors']}/{g['errors']} "
                        f"failed turns {g['failed_turns']}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        stop(worker)

    rows: list[list[Any]] = []
    summary: dict[str, Any] = {}
    for level, res in results.items():
        per_run = []
        for d, g in zip(res["direct"], res["gateway"], strict=True):
            dd, gd, sd = _dist(d["bypass"]), _dist(g["bypass"]), _dist(g["server_bypass"])
            fd, fg = _dist(d["first"]), _dist(g["first"])
            per_run.append(
                {
                    "direct_bypass": dd,
                    "gateway_bypass": gd,
                    "gateway_server_stats_bypass": sd,
                    "direct_first": fd,
                    "gateway_first": fg,
                    "added_ms": {k: _minus(gd[k], dd[k]) for k in ("p50", "p90", "p99")},
                    "added_first_p99_ms": (fg["p99"] - fd["p99"])
                    if fg["p99"] is not None and fd["p99"] is not None
                    else None,
                    "decisions": g["decisions"],
                    "gateway_errors": g["errors"],
                    "direct_errors": d["errors"],
                }
            )
        agg: dict[str, Any] = {}
        for key in ("p50", "p90", "p99"):
            vals = [r["added_ms"][key] for r in per_run if r["added_ms"][key] is not None]
            agg[f"added_{key}_ms"] = min_median(vals) if vals else None
        for name in ("direct_bypass", "gateway_bypass", "gateway_server_stats_bypass"):
            vals = [r[name]["p99"] for r in per_run if r[name]["p99"] is not None]
            agg[f"{name}_p99_ms"] = min_median(vals) if vals else None
        fvals = [r["added_first_p99_ms"] for r in per_run if r["added_first_p99_ms"] is not None]
        agg["added_first_turn_p99_ms"] = min_median(fvals) if fvals else None
        summary[str(level)] = {**agg, "runs": per_run}

        def med(x: dict[str, float] | None) -> float | None:
            return None if x is None else x["median"]

        def mn(x: dict[str, float] | None) -> float | None:
            return None if x is None else x["min"]

        rows.append(
            [
                level,
                med(agg["direct_bypass_p99_ms"]),
                med(agg["gateway_bypass_p99_ms"]),
                med(agg["gateway_server_stats_bypass_p99_ms"]),
                med(agg["added_p50_ms"]),
                mn(agg["added_p99_ms"]),
                med(agg["added_p99_ms"]),
                med(agg["added_first_turn_p99_ms"]),
            ]
        )
    print(
        table(
            [
                "conversations",
                "direct p99",
                "gateway p99",
                "server stats p99",
                "added p50",
                "added p99 min",
                "added p99 median",
                "added p99 1st turn",
            ],
            rows,
        )
    )
    print("(TTFT in ms, bypass turns; medians over runs unless marked min)")
    path = write_results(
        args.out or ("gateway_overhead_override" if args.override else "gateway_overhead"),
        {
            "params": {k: v for k, v in vars(args).items()},
            "cores": {
                "gateway": gw_core,
                "worker": worker_core,
                "client": client_cores if args.client_procs > 1 else client_core,
            },
            "results": summary,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
