"""Memory per idle conversation: RSS of one gateway process holding N open sockets.

    python bench/idle_conns.py [--conns 10000] [--clients 4] [--repeat 3]

Each client socket opens, sends ``hello`` and waits for the ``session`` frame, then
stays idle. Targets (each pinned to one core; the clients, several processes, on the others):

* ``bare``: a websockets + uvloop server that answers ``hello`` with a session-shaped
  frame and then waits on the socket (the library's own cost per socket).
* ``gateway``: ``rtserver serve`` (synthetic engine in-process, memory session store):
  socket, connection shell, bounded outbox, conversation record, session.

RSS per conversation = (RSS with N sockets − RSS with 1 socket) / (N − 1), read from
/proc/PID/status after the last client is connected and a short settle.
RLIMIT_NOFILE is raised in every process. Results: bench/results/idle_conns.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    READY,
    cpus,
    gateway,
    min_median,
    pin,
    popen_python,
    raise_nofile,
    rss_kb,
    run_uvloop,
    stop,
    table,
    wait_line,
    write_results,
)

CONNECTED = re.compile(rb"CONNECTED (\d+) FAILED (\d+)")


async def bare_server() -> None:
    import msgpack
    import orjson
    import websockets

    async def handler(ws: Any) -> None:
        enc = "msgpack" if ws.subprotocol == "rt.v1.msgpack" else "json"
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in ws:
                frame = {
                    "type": "session",
                    "session_id": "s_" + os.urandom(12).hex(),
                    "resume_token": os.urandom(24).hex(),
                    "resumed": False,
                    "limits": {},
                    "route": None,
                }
                await ws.send(orjson.dumps(frame).decode() if enc == "json" else msgpack.packb(frame))

    async with websockets.serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=["rt.v1.json", "rt.v1.msgpack"],  # type: ignore[list-item]
        compression=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"rtserver ready on http://127.0.0.1:{port}/  (bare websockets)", flush=True)
        await asyncio.Event().wait()


async def hold_clients(url: str, n: int, hold_s: float) -> None:
    """Open ``n`` conversations (hello → session), report, then hold until stdin closes or ``hold_s``."""
    from rtserver.client import Client

    sem = asyncio.Semaphore(64)
    clients: list[Client] = []
    failed: dict[str, int] = {}

    async def one() -> None:
        async with sem:
            try:
                clients.append(await asyncio.wait_for(Client.connect(url, open_timeout=30.0), 60.0))
            except Exception as exc:
                failed[type(exc).__name__] = failed.get(type(exc).__name__, 0) + 1

    await asyncio.gather(*(one() for _ in range(n)))
    if failed:
        print(f"connect failures: {failed}", file=sys.stderr, flush=True)
    print(f"CONNECTED {len(clients)} FAILED {sum(failed.values())}", flush=True)
    loop = asyncio.get_running_loop()
    eof = loop.create_future()

    def on_stdin() -> None:
        if not eof.done():
            eof.set_result(None)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(eof, hold_s)
    os._exit(0)  # leave without closing handshakes: the server sees the sockets drop


def connect_clients(url: str, n: int, procs: int, cores: list[int], timeout: float) -> tuple[list[Any], int, int]:
    per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    clients = []
    for i, k in enumerate(per):
        if k == 0:
            continue
        proc = subprocess.Popen(
            [sys.executable, "bench/idle_conns.py", "--role", "client", "--url", url, "--conns", str(k)],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            stderr=None,
        )
        pin(proc.pid, [cores[i % len(cores)]])
        clients.append(proc)
    ok = bad = 0
    for proc in clients:
        m = wait_line(proc, CONNECTED, timeout)
        ok, bad = ok + int(m.group(1)), bad + int(m.group(2))
    return clients, ok, bad


def release(clients: list[Any]) -> None:
    for proc in clients:
        with contextlib.suppress(Exception):
            proc.stdin.close()
    for proc in clients:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def measure(pid: int, url: str, args: argparse.Namespace, client_cores: list[int]) -> dict[str, Any]:
    warm, ok0, _ = connect_clients(url, 1, 1, client_cores, 30)
    time.sleep(0.5)
    base = rss_kb(pid)
    t0 = time.perf_counter()
    clients, ok, bad = connect_clients(url, args.conns - 1, args.clients, client_cores, args.connect_timeout_s)
    connect_s = time.perf_counter() - t0
    time.sleep(args.settle_s)
    full = rss_kb(pid)
    release(clients + warm)
    n = ok + ok0
    per = (full - base) / max(1, n - 1)
    return {
        "connected": n,
        "failed": bad,
        "rss_base_kb": base,
        "rss_full_kb": full,
        "kb_per_conversation": per,
        "connect_s": connect_s,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=("main", "bare", "client"), default="main")
    p.add_argument("--url", default="")
    p.add_argument("--conns", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=4, help="client processes")
    p.add_argument("--targets", nargs="+", default=["bare", "gateway"])
    p.add_argument("--settle-s", type=float, default=2.0)
    p.add_argument("--connect-timeout-s", type=float, default=240.0)
    p.add_argument("--hold-s", type=float, default=300.0, help="client processes exit after this at the latest")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    raise_nofile(args.conns + 1024)
    if args.role == "bare":
        run_uvloop(bare_server())
        return 0
    if args.role == "client":
        run_uvloop(hold_clients(args.url, args.conns, args.hold_s))
        return 0

    avail = cpus()
    server_core = [avail[0]]
    client_cores = avail[1:] or avail
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in args.targets}
    for rep in range(args.repeat):
        for target in args.targets:
            if target == "bare":
                server = popen_python(
                    ["bench/idle_conns.py", "--role", "bare", "--conns", str(args.conns)], server_core
                )
                try:
                    port = int(wait_line(server, READY, 30).group(1))
                    res = measure(server.pid, f"ws://127.0.0.1:{port}/ws", args, client_cores)
                finally:
                    stop(server)
            else:
                flags = [
                    "--embedded-engine",
                    "synthetic",
                    "--model-id",
                    "synthetic",
                    "--embedded-mode",
                    "inproc",
                    "--max-connections-per-ip",
                    str(args.conns * 2),
                    "--idle-timeout-s",
                    "3600",
                ]
                with gateway(*flags, cores=server_core) as (proc, port):
                    res = measure(proc.pid, f"ws://127.0.0.1:{port}/ws", args, client_cores)
            runs[target].append(res)
            print(
                f"run {rep + 1}/{args.repeat} {target:8} {res['connected']:,} connected ({res['failed']} failed) "
                f"in {res['connect_s']:.1f} s: {res['kb_per_conversation']:.1f} KB each",
                file=sys.stderr,
                flush=True,
            )
    rows: list[list[Any]] = []
    summary: dict[str, Any] = {}
    for target, results in runs.items():
        kb = min_median([r["kb_per_conversation"] for r in results])
        summary[target] = {"kb_per_conversation": kb, "runs": results}
        rows.append(
            [
                target,
                results[-1]["connected"],
                results[-1]["rss_base_kb"] / 1024,
                results[-1]["rss_full_kb"] / 1024,
                kb["min"],
                kb["median"],
            ]
        )
    print(table(["target", "sockets", "RSS base MB", "RSS full MB", "KB/conv min", "KB/conv median"], rows))
    path = write_results(
        "idle_conns",
        {
            "params": {
                "conns": args.conns,
                "client_processes": args.clients,
                "settle_s": args.settle_s,
                "repeat": args.repeat,
                "server_core": server_core,
                "client_cores": client_cores,
            },
            "results": summary,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
