"""What a client that never reads costs the gateway before its stream is paused at the worker.

    python bench/stalled_client_cost.py [--clients 5] [--repeat 3] [--old-root DIR]

A gateway (``Gateway`` in a child interpreter, run from a checkout: this one, and with
``--old-root`` another, in alternation: before and after in one run) with an embedded
synthetic worker process (unpaced, 200k-token answers; flow control is on the worker
wire), and ``--clients`` WebSocket clients that send one message and never read (4 KiB
receive buffer, as in bench/slow_client.py). Counted every 0.5 s for ``--wait-s``: the
token frames the gateway has handed to those sockets' outboxes (``Outbox.charge``
calls: each token went through stats, the replay log and the outbox, and will be
encoded and written), which is what the stalled clients cost it. A flat count means
their streams are paused at the worker. Results: bench/results/stalled_client_cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

if "--child" not in sys.argv:  # the child imports rtserver from the checkout it runs in
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


async def child(clients: int, wait_s: float) -> list[int]:
    import orjson
    from websockets.asyncio.client import connect

    import rtserver.server.outbox as outbox
    from rtserver.config import load_settings
    from rtserver.server.app import Gateway

    charged = [0]
    charge = outbox.Outbox.charge

    def counting(self: Any, credit: Any) -> None:
        charged[0] += 1
        charge(self, credit)

    outbox.Outbox.charge = counting  # type: ignore[method-assign]
    gw = Gateway(load_settings(env={}, overrides=dict(
        port=0, embedded_engine="synthetic", embedded_mode="process", model_id="synthetic",
        synthetic_tokens=200_000, synthetic_rate=0, max_tokens=200_000, slow_consumer_timeout_s=30.0,
        log_level="warning")))
    counts: list[int] = []
    async with gw.lifespan():
        sockets = []
        for _ in range(clients):
            ws = await connect(f"ws://127.0.0.1:{gw.port}/ws", max_queue=1, ping_interval=None)
            ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sockets.append(ws)
        for i, ws in enumerate(sockets):
            await ws.send(orjson.dumps({"type": "message", "id": f"s{i}", "text": "flood"}).decode())
        for _ in range(int(wait_s / 0.5)):
            await asyncio.sleep(0.5)
            counts.append(charged[0])
        for ws in sockets:
            ws.transport.abort()
    return counts


def run(root: Path, args: argparse.Namespace) -> list[int]:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "--clients", str(args.clients),
                          "--wait-s", str(args.wait_s)], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                         capture_output=True, text=True, timeout=120, check=True)
    return [int(v) for v in json.loads(out.stdout.strip().splitlines()[-1])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--wait-s", type=float, default=3.0, help="how long the clients hold their sockets unread")
    p.add_argument("--old-root", default="")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.clients, args.wait_s))))
        return
    from bench.common import ROOT, machine, table, write_results

    roots = {"now": ROOT} | ({"before": Path(args.old_root).resolve()} if args.old_root else {})
    runs: dict[str, list[list[int]]] = {k: [] for k in roots}
    for rep in range(args.repeat):
        for target in list(roots) if rep % 2 == 0 else list(reversed(roots)):
            counts = run(roots[target], args)
            runs[target].append(counts)
            print(f"run {rep + 1} {target:6} tokens handed to the stalled sockets every 0.5 s: {counts}", flush=True)
    per_client = {t: [rs[-1] / args.clients for rs in r] for t, r in runs.items()}
    print(table(["gateway", "tokens per stalled client, end of each run", "median"],
                [[t, " / ".join(f"{v:,.0f}" for v in vs), f"{statistics.median(vs):,.0f}"]
                 for t, vs in per_client.items()]))
    path = write_results("stalled_client_cost", {"machine": machine(), "args": vars(args), "runs": runs,
                                                 "tokens_per_client": per_client})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
