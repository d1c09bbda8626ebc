"""``rtserver serve --processes N`` scaling: relay throughput of N gateway processes vs 1.

    python bench/processes.py [--processes 1 2 4 8] [--workers 4] [--client-procs 4] [--conns 16]

Needs ``redis-server`` on the PATH (``--processes > 1`` requires Redis; the 1-process
run uses it too, so both sides pay the same session writes). Started here:

* one ``redis-server`` (no persistence) and ``--workers`` synthetic workers
  (``rtserver worker --engine synthetic --synthetic-rate 0``: unpaced tokens), so the
  workers are not what limits the gateway;
* per level N: ``rtserver serve --processes N`` with every worker, pinned to N cores;
  ``--client-procs`` client processes (bench/relay.py's client: ``--conns`` streams
  each of ``--tokens``-token responses) on the cores left; token frames/s summed over
  the clients in a ``--window-s`` window after ``--warmup-s``.

Reported: frames/s per level (median of ``--repeat``), the ratio to 1 process and that
ratio divided by N (the target is >= 0.8). The machine must have cores for the
gateway processes, the workers and the clients apart: on fewer cores everything
shares them and the ratio says nothing about the gateway (the script warns).
Results: bench/results/processes.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cpus, gateway, pin, popen_python, read_json_line, stop, table, wait_line, write_results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench/processes.py needs redis-server on the PATH")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("redis-server did not start")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--workers", type=int, default=0, help="synthetic workers (default: the largest N)")
    p.add_argument("--client-procs", type=int, default=0, help="client processes (default: the largest N)")
    p.add_argument("--conns", type=int, default=16, help="streams per client process")
    p.add_argument("--tokens", type=int, default=2000)
    p.add_argument("--encoding", default="msgpack")
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--window-s", type=float, default=4.0)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    top = max(args.processes)
    n_workers = args.workers or top
    n_clients = args.client_procs or top
    avail = cpus()
    need = top + n_workers + n_clients
    if len(avail) < need:
        print(f"warning: {len(avail)} cores for {top} gateway processes + {n_workers} workers + {n_clients} "
              f"client processes ({need}): they share cores, the ratio does not measure the gateway",
              file=sys.stderr, flush=True)
    gw_cores = avail[:top]
    worker_cores = avail[top:top + n_workers] or avail
    client_cores = avail[top + n_workers:] or avail
    tmp = tempfile.mkdtemp(prefix="rt-processes-")
    redis, url = _redis(tmp)
    workers: list[subprocess.Popen[bytes]] = []
    results: dict[int, list[float]] = {n: [] for n in args.processes}
    try:
        addresses = []
        for i in range(n_workers):
            address = f"unix:{os.path.join(tmp, f'w{i}.sock')}"
            w = subprocess.Popen(
                [sys.executable, "-m", "rtserver", "worker", "--engine", "synthetic", "--model-id", "synthetic",
                 "--listen", address, "--name", f"w{i}", "--capacity", "4096", "--max-queue", "4096",
                 "--synthetic-rate", "0", "--synthetic-tokens", str(args.tokens), "--log-level", "warning"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            pin(w.pid, [worker_cores[i % len(worker_cores)]])
            workers.append(w)
            addresses += ["--worker", address]
        import re

        for w in workers:
            wait_line(w, re.compile(rb"READY"), 60)
        for rep in range(args.repeat):
            for n in args.processes:
                flags = ["--processes", str(n), "--redis", url, "--key-prefix", f"bench{rep}x{n}",
                         *addresses, "--model-id", "synthetic", "--max-tokens", str(args.tokens),
                         "--max-connections-per-ip", "100000", "--messages-per-second", "1000",
                         "--message-burst", "1000"]
                with gateway(*flags, cores=gw_cores[:n]) as (_, port):
                    clients = [
                        popen_python(["bench/relay.py", "--role", "client", "--encoding", args.encoding,
                                      "--conns", str(args.conns), "--warmup-s", str(args.warmup_s),
                                      "--window-s", str(args.window_s), "--url", f"ws://127.0.0.1:{port}/ws"],
                                     [client_cores[i % len(client_cores)]])
                        for i in range(n_clients)
                    ]
                    timeout = args.warmup_s + args.window_s + 120
                    got = [dict(read_json_line(c, timeout)) for c in clients]
                fps = sum(g["frames_per_s"] for g in got)
                results[n].append(fps)
                errors = sum(g["errors"] for g in got)
                print(f"run {rep + 1}/{args.repeat} processes {n}: {fps:,.0f} frames/s (errors {errors})",
                      file=sys.stderr, flush=True)
    finally:
        for w in workers:
            stop(w)
        stop(redis)
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(results[min(args.processes)])
    rows: list[list[Any]] = []
    summary: dict[str, Any] = {}
    for n, runs in results.items():
        med = statistics.median(runs)
        ratio = med / base if base else None
        per = None if ratio is None else ratio / (n / min(args.processes))
        rows.append([n, med, None if ratio is None else round(ratio, 2), None if per is None else round(per, 2)])
        summary[str(n)] = {"frames_per_s": runs, "median": med, "ratio": ratio, "ratio_per_process": per}
    print(table(["processes", "frames/s median", "vs 1 process", "per process (target >= 0.8)"], rows))
    path = write_results("processes", {
        "params": vars(args), "cores": {"gateway": gw_cores, "workers": worker_cores, "clients": client_cores},
        "shared_cores": len(avail) < need, "results": summary,
    })
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
