"""What a worker costs per token: CPU time of the worker (and its engine host) per token relayed.

    python bench/worker_relay.py [--streams 16] [--tokens 5000] [--repeat 3] [--old-root DIR]

A synthetic worker (unpaced: ``--synthetic-rate 0``) is read on its raw wire by this
process: ``--streams`` requests at once, ``--tokens`` tokens each. Measured: tokens/s,
and CPU seconds (user + system, from /proc) of the worker process and its children
(the engine host) per token. CPU time per token is steadier than throughput on a busy
machine: it does not count the time the worker waits for a core. Targets, in
alternation: ``inline`` (the engine in the worker's loop) and ``process`` (the engine in
an engine host process), and with ``--old-root`` (a checkout before a change) the same
two of that checkout first, ``old-inline`` and ``old-process`` (so the old checkout must
have ``--engine-host``; earlier quotes in docs/BENCHMARKS.md used one target ``old``). Results:
bench/results/worker_relay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, children, stop, table, wait_line, write_results
from rtserver.workers.wire import FrameReader, pack

READY = re.compile(rb"READY (\S+)")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(") ", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return total


async def drive(address: str, streams: int, tokens: int) -> tuple[int, float]:
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    decoder = FrameReader()
    n = 0
    done = 0
    t0 = 0.0
    started = False
    while not started:
        for f in decoder.feed(await reader.read(65536)):
            if f["t"] == "ready":
                started = True
    t0 = time.perf_counter()
    writer.write(b"".join(pack({"t": "gen", "id": i, "messages": [["user", "go"]], "params": {"max_tokens": tokens}})
                          for i in range(1, streams + 1)))
    while done < streams:
        data = await reader.read(1 << 20)
        for f in decoder.feed(data):
            if f["t"] == "tok":
                n += f["n"]
            elif f["t"] == "done":
                done += 1
    wall = time.perf_counter() - t0
    writer.close()
    return n, wall


def run(target: str, args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.old_root).resolve() if target.startswith("old-") else ROOT
    cmd = [sys.executable, "-m", "rtserver", "worker", "--engine", "synthetic", "--listen", "127.0.0.1:0",
           "--synthetic-rate", "0", "--synthetic-tokens", str(args.tokens), "--log-level", "warning",
           "--engine-host", target.removeprefix("old-")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        address = wait_line(proc, READY, 60).group(1).decode()
        before = cpu_s(proc.pid)
        n, wall = asyncio.run(drive(address, args.streams, args.tokens))
        cpu = cpu_s(proc.pid) - before
    finally:
        stop(proc)
    return {"tokens": n, "wall_s": wall, "tokens_per_s": n / wall, "cpu_us_per_token": cpu / n * 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--tokens", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--old-root", default="")
    p.add_argument("--name", default="worker_relay", help="results file under bench/results/")
    args = p.parse_args()
    targets = (["old-inline", "old-process"] if args.old_root else []) + ["inline", "process"]
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    for rep in range(args.repeat):
        for t in targets if rep % 2 == 0 else list(reversed(targets)):
            r = run(t, args)
            runs[t].append(r)
            print(f"run {rep + 1} {t:11} {r['tokens_per_s']:10,.0f} tok/s  {r['cpu_us_per_token']:6.1f} µs CPU/token",
                  flush=True)
    base = statistics.median(r["cpu_us_per_token"] for r in runs[targets[0]])
    rows = []
    summary = {}
    for t, rs in runs.items():
        cpu = statistics.median(r["cpu_us_per_token"] for r in rs)
        tps = statistics.median(r["tokens_per_s"] for r in rs)
        summary[t] = {"cpu_us_per_token": cpu, "tokens_per_s": tps, "cpu_vs_first": cpu / base}
        old = summary.get(f"old-{t}")
        vs_old = f"{cpu / old['cpu_us_per_token']:.2f}x" if old else ""
        rows.append([t, f"{tps:,.0f}", f"{cpu:.1f}", f"{cpu / base:.2f}x", vs_old])
    print(table(["worker", "tok/s (median)", "CPU µs/token (median)", f"CPU vs {targets[0]}", "CPU vs old-same"],
                rows))
    path = write_results(args.name, {"args": vars(args), "runs": runs, "summary": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
