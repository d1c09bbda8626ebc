"""Are busy workers taken for dead ones? Many long prompts at once on two real model workers.

    python bench/long_prompts.py [--conc 20] [--prompt-tokens 1500] [--old-root DIR] [--deadline-s 600]

Two ``rtserver worker --engine openvino`` processes (the embedded SmolLM2) behind one
``rtserver serve --worker A --worker B`` (default ``--heartbeat-timeout-s`` 3), and
``--conc`` WebSocket clients each sending one prompt of about ``--prompt-tokens``
tokens at the same moment (``--max-tokens`` 16). Counted: answers that ended in an
error, by code, and the gateway's ``worker … lost`` log lines (every one a false
loss: no worker died). With ``--old-root`` the same runs first with the code of another
checkout (workers and gateway), for a before/after in one run. ``--deadline-s`` bounds
the wait for the answers: one not done by then counts as ``unfinished`` (not an error).
Results: bench/results/long_prompts.json (``--name`` to change).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import READY, ROOT, stop, table, wait_line, write_results
from rtserver.client import Client

WORKER_READY = re.compile(rb"READY (\S+)")


def prompt(i: int, tokens: int) -> str:
    body = " ".join(f"Entry {k} of ledger {i} records a small ordinary event." for k in range(max(1, tokens // 13)))
    return f"{body} Which entry of ledger {i} came first?"


async def _clients(url: str, conc: int, tokens: int, deadline_s: float) -> dict[str, Any]:
    clients = [await Client.connect(url) for _ in range(conc)]
    t0 = time.perf_counter()
    tasks: list[asyncio.Future[Any]] = []
    try:
        tasks += [asyncio.ensure_future(c.ask(prompt(i, tokens), timeout=deadline_s)) for i, c in enumerate(clients)]
        await asyncio.wait(tasks, timeout=deadline_s)
        wall = time.perf_counter() - t0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    codes: dict[str, int] = {}
    ok = unfinished = 0
    for task in tasks:
        if task.cancelled() or task.exception() is not None:
            unfinished += 1
            continue
        turn = task.result()
        for e in turn.errors:
            codes[e["code"]] = codes.get(e["code"], 0) + 1
        ok += bool(turn.done and turn.done["finish_reason"] in ("stop", "length"))
    return {"ok": ok, "errors": codes, "unfinished": unfinished, "wall_s": wall}


def run(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    log = tempfile.NamedTemporaryFile(prefix="long_prompts-", suffix=".log", delete=False)
    workers = [subprocess.Popen([sys.executable, "-m", "rtserver", "worker", "--engine", "openvino", "--listen",
                                 "127.0.0.1:0", "--name", f"w{i}", "--capacity", str(args.capacity),
                                 "--log-level", "warning"],
                                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=root, env=env)
               for i in (1, 2)]
    gw = None
    try:
        addresses = [wait_line(w, WORKER_READY, 300).group(1).decode() for w in workers]
        flags = [f"--worker={a}" for a in addresses]
        gw = subprocess.Popen([sys.executable, "-m", "rtserver", "serve", "--port", "0", *flags, "--max-tokens", "16",
                               "--history-max-tokens", str(args.prompt_tokens * 2), "--max-text-chars", "64000",
                               "--messages-per-second", "1000", "--message-burst", "1000"],
                              stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=root, env=env)
        port = int(wait_line(gw, READY, 120).group(1))
        result = asyncio.run(_clients(f"ws://127.0.0.1:{port}/ws", args.conc, args.prompt_tokens, args.deadline_s))
    finally:
        for p in [gw, *workers]:
            if p is not None:
                stop(p)
        log.close()
    text = Path(log.name).read_text(errors="replace")
    result["worker_lost_logs"] = len(re.findall(r"worker \S+ lost", text))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conc", type=int, default=20)
    p.add_argument("--prompt-tokens", type=int, default=1500)
    p.add_argument("--capacity", type=int, default=10)
    p.add_argument("--old-root", default="")
    p.add_argument("--deadline-s", type=float, default=600.0, help="answers not done by then count as unfinished")
    p.add_argument("--name", default="long_prompts")
    args = p.parse_args()
    results: dict[str, Any] = {}
    if args.old_root:
        results["before"] = run(Path(args.old_root).resolve(), args)
        print("before", results["before"], flush=True)
    results["after"] = run(ROOT, args)
    print("after", results["after"], flush=True)
    print(table(["code", "answered ok", "errors", "unfinished at the deadline", "'worker lost' logs", "wall s"],
                [[k, f"{v['ok']}/{args.conc}", v["errors"] or "-", v["unfinished"], v["worker_lost_logs"],
                  f"{v['wall_s']:.1f}"] for k, v in results.items()]))
    path = write_results(args.name, {"args": vars(args), "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
