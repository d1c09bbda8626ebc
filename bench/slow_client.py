"""Do slow clients hurt the others? Inter-token gaps of normal conversations with and
without clients that stop reading, in the same run, against one gateway process.

    python bench/slow_client.py [--conversations 20] [--slow 5] [--repeat 3] [--old-root DIR]

Two synthetic worker processes: normal conversations go to one at 50 tokens/s per
stream (so the expected gap is 20 ms); the slow clients are routed (use case
override) to the other, which streams 100k-token answers at ``--flood-rate``
tokens/s each (0: unpaced), and never read, until the gateway closes them (4008). Each
gateway first runs one phase without slow clients that is not counted (a fresh gateway's
first phase had a p99 gap 2-2.5x the later ones), then the phase without slow clients,
then the one with them; each repetition starts a fresh gateway. Not the other way round:
a dropped socket's response goes on for ``resume_grace_s`` (15 s) so its client can
resume, and the flood worker's streams are unpaced, so a phase after the slow clients'
one ran with their streams still pouring in (its p99 gap 75-110 ms against 23-25 ms).
A phase's slow clients are aborted when it ends. Prints a table, writes bench/results/slow_client.json.
With ``--old-root`` each repetition also runs a gateway from another checkout (e.g.
``git archive`` of the commit before a change), in alternation with this one, against
the same two workers: before and after in one run. Also counted per phase: tokens the
flood worker streamed (its ``tok`` frames are what a slow client costs the gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools
import re

import orjson
from websockets.asyncio.client import connect

from bench.common import (
    ROOT,
    gateway,
    machine,
    min_median,
    percentile,
    popen_python,
    run_uvloop,
    stop,
    table,
    wait_line,
    write_results,
)
from rtserver.client import Client

READY_WORKER = re.compile(rb"READY (\S+)")


async def normal(url: str, n: int) -> list[float]:
    async def one(i: int) -> list[float]:
        async with await Client.connect(url) as c:
            t = await c.ask(f"conversation {i}", context={"use_case": "chat"}, timeout=60)
            times = t.token_times
            return [(b - a) * 1000 for a, b in itertools.pairwise(times)]

    gaps: list[float] = []
    for g in await asyncio.gather(*(one(i) for i in range(n))):
        gaps.extend(g)
    return gaps


async def slow_client(url: str) -> None:
    ws = await connect(url, max_queue=1)
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await ws.send(orjson.dumps({"type": "message", "id": "s", "text": "flood",
                                "context": {"use_case": "creative"}}).decode())  # routed to the flood worker
    try:
        await asyncio.sleep(30)  # never read
    finally:  # cancelled at the end of its phase: close it then, not in the next phase
        ws.transport.abort()


async def phase(url: str, conversations: int, slow: int) -> dict[str, float | None]:
    hogs = [asyncio.create_task(slow_client(url)) for _ in range(slow)]
    await asyncio.sleep(1.0 if slow else 0)
    t0 = time.perf_counter()
    gaps = sorted(await normal(url, conversations))
    for h in hogs:
        h.cancel()
    await asyncio.gather(*hogs, return_exceptions=True)
    return {"gap_p50_ms": percentile(gaps, 0.5), "gap_p99_ms": percentile(gaps, 0.99),
            "gap_max_ms": gaps[-1] if gaps else None, "seconds": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--conversations", type=int, default=20)
    ap.add_argument("--slow", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--flood-rate", type=float, default=200.0, help="tokens/s per slow client's stream (0: unpaced)")
    ap.add_argument("--old-root", default="", help="a checkout whose gateway runs as 'before', in the same run")
    ap.add_argument("--name", default="")
    args = ap.parse_args()
    roots = {"now": ROOT} | ({"before": Path(args.old_root).resolve()} if args.old_root else {})
    runs_by: dict[str, list[dict[str, object]]] = {k: [] for k in roots}
    paced = popen_python(["-m", "rtserver", "worker", "--engine", "synthetic", "--model-id", "synthetic",
                          "--synthetic-rate", "50", "--synthetic-tokens", "100", "--listen", "127.0.0.1:0",
                          "--name", "paced", "--capacity", "256"])
    flood = popen_python(["-m", "rtserver", "worker", "--engine", "synthetic", "--model-id", "flood",
                          "--synthetic-rate", str(args.flood_rate), "--synthetic-tokens", "100000", "--listen", "127.0.0.1:0",
                          "--name", "flood", "--capacity", "256"])
    try:
        addrs = [wait_line(p, READY_WORKER, 60).group(1).decode() for p in (paced, flood)]
        flags = ("--worker", addrs[0], "--worker", addrs[1], "--model-id", "synthetic", "--models", "creative=flood",
                 "--max-tokens", "100000", "--messages-per-second", "100", "--outbox-frames", "256")
        for rep in range(args.repeat):
            order = list(roots) if rep % 2 == 0 else list(reversed(roots))
            for target in order:
                with gateway(*flags, root=roots[target]) as (_, port):
                    url = f"ws://127.0.0.1:{port}/ws"
                    run_uvloop(phase(url, args.conversations, 0))  # warm-up: a fresh gateway's first phase ran slower
                    # without, then with: the slow clients' streams go on for resume_grace_s
                    # after their sockets close, unpaced, and would weigh on a phase after them
                    base = run_uvloop(phase(url, args.conversations, 0))
                    hurt = run_uvloop(phase(url, args.conversations, args.slow))
                    run = {"without": base, "with": hurt, "ratio_p99": hurt["gap_p99_ms"] / base["gap_p99_ms"]}  # type: ignore[operator]
                    runs_by[target].append(run)
                    print(f"run {rep + 1} {target:6} p99 {base['gap_p99_ms']:.1f} -> {hurt['gap_p99_ms']:.1f} ms "
                          f"({run['ratio_p99']:.2f}x)", flush=True)
    finally:
        stop(paced)
        stop(flood)
    rows = []
    for target, runs in runs_by.items():
        for key in ("gap_p50_ms", "gap_p99_ms", "gap_max_ms"):
            a = [float(r["without"][key]) for r in runs]  # type: ignore[index]
            b = [float(r["with"][key]) for r in runs]  # type: ignore[index]
            rows.append([target, key, f"{min_median(a)['median']:.1f}", f"{min_median(b)['median']:.1f}",
                         f"{min_median(b)['median'] / max(1e-9, min_median(a)['median']):.2f}"])
        ratios = [float(r["ratio_p99"]) for r in runs]  # type: ignore[arg-type]
        rows.append([target, "p99 ratio per run (median)", "", "", f"{min_median(ratios)['median']:.2f}"])
    print(table(["gateway", "inter-token gap (client)", "without slow clients", f"with {args.slow} slow clients",
                 "ratio"], rows))
    name = args.name or ("slow_client" if args.flood_rate > 0 else "slow_client_unpaced")
    write_results(name, {"machine": machine(), "args": vars(args), "runs": runs_by.get("now"), "runs_by": runs_by})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
