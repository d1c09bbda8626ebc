"""What a client that never reads costs the gateway before its stream is paused at the worker.

    python bench/stalled_client_cost.py [--clients 5] [--repeat 3] [--old-root DIR]

``rtserver serve`` with an embedded synthetic worker process (unpaced, 200k-token
answers; flow control is on the worker wire), ``--clients`` WebSocket clients that
send one message and never read (4 KiB receive buffer, as in bench/slow_client.py).
Each is closed with 4008 after ``slow_consumer_timeout_s`` (2 s here) without
progress and its generation cancelled; the gateway's ``rtserver_tokens_total`` then
holds every token the worker streamed for them, which is what they cost the gateway
(each went through stats, the replay log, encoding and the outbox). With
``--old-root`` a gateway from another checkout runs in alternation: before and after
in one run. Results: bench/results/stalled_client_cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from websockets.asyncio.client import connect

from bench.common import ROOT, gateway, machine, table, write_results

TOKENS = re.compile(rb'^rtserver_tokens_total\{[^}]*\} (\S+)$', re.M)
SLOW_CLOSES = re.compile(rb'^rtserver_closes_total\{reason="slow_consumer"\} (\S+)$', re.M)


def scrape(port: int) -> tuple[float, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    tokens = sum(float(v) for v in TOKENS.findall(body))
    closes = sum(float(v) for v in SLOW_CLOSES.findall(body))
    return tokens, closes


async def stalled_clients(url: str, n: int, wait_s: float) -> None:
    async def one(i: int) -> None:
        ws = await connect(url, max_queue=1, ping_interval=None)
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await ws.send(orjson.dumps({"type": "message", "id": f"s{i}", "text": "flood",
                                    "context": {"use_case": "chat"}}).decode())
        await asyncio.sleep(wait_s)  # never read
        ws.transport.abort()

    await asyncio.gather(*(one(i) for i in range(n)))


def run(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    flags = ("--embedded-engine", "synthetic", "--model-id", "synthetic", "--synthetic-tokens", "200000",
             "--synthetic-rate", "0", "--max-tokens", "200000", "--slow-consumer-timeout-s", "2",
             "--messages-per-second", "100")
    with gateway(*flags, root=root) as (_, port):
        t0 = time.perf_counter()
        asyncio.run(stalled_clients(f"ws://127.0.0.1:{port}/ws", args.clients, args.wait_s))
        deadline = time.perf_counter() + 20
        tokens, closes = scrape(port)
        while closes < args.clients and time.perf_counter() < deadline:  # every stream closed and counted
            time.sleep(0.5)
            tokens, closes = scrape(port)
        time.sleep(1.0)  # the cancelled generations' done frames
        tokens, closes = scrape(port)
    return {"tokens": tokens, "tokens_per_client": tokens / args.clients, "slow_closes": closes,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--wait-s", type=float, default=4.0, help="how long each client holds its socket unread")
    p.add_argument("--old-root", default="")
    args = p.parse_args()
    roots = {"now": ROOT} | ({"before": Path(args.old_root).resolve()} if args.old_root else {})
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in roots}
    for rep in range(args.repeat):
        for target in list(roots) if rep % 2 == 0 else list(reversed(roots)):
            r = run(roots[target], args)
            runs[target].append(r)
            print(f"run {rep + 1} {target:6} {r['tokens_per_client']:,.0f} tokens per stalled client "
                  f"({r['slow_closes']:.0f} closed 4008)", flush=True)
    print(table(["gateway", "tokens per stalled client (runs)", "median"],
                [[t, " / ".join(f"{r['tokens_per_client']:,.0f}" for r in rs),
                  f"{statistics.median(r['tokens_per_client'] for r in rs):,.0f}"] for t, rs in runs.items()]))
    path = write_results("stalled_client_cost", {"machine": machine(), "args": vars(args), "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
