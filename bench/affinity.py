"""Why conversations are pinned: turn-2 TTFT on the warm worker vs a cold one.

    python bench/affinity.py [--conversations 5] [--doc-words 900] [--max-tokens 24]

Two real ``rtserver worker --engine openvino`` processes (SmolLM2-135M, prefix caching on)
on loopback, reached through the gateway's own ``WorkerClient``. Each conversation opens
with a long user message (a unique document of ``--doc-words`` words and a question):

* turn 1 on worker A: the whole prompt is prefilled (cold);
* turn 2 on worker A (pinned, what rtserver does): history + a new question, and the
  history's KV blocks are still in A's prefix cache;
* the same turn 2 on worker B (what an unpinned, least-loaded choice could do): B never
  saw the history and prefills all of it.

TTFT = ``generate()`` call → first token, in the gateway process. The documents differ
per conversation so no prefix is shared across conversations. The workers run one
after the other (never two prefills at once). Prints a table; writes
bench/results/affinity.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import re

from bench.common import popen_python, stop, table, wait_line, write_results
from rtserver.engines.base import ChatMessage, FinishEvent, GenerateRequest, SamplingParams, TokenEvent
from rtserver.workers.client import WorkerClient

READY = re.compile(rb"READY (\S+)")
WORDS = (
    "harbour lantern keeper tide granite gull ledger storm copper rope beacon fog winter chart compass "
    "island current signal ferry anchor timber salt morning evening north south quiet bright distant"
).split()


def document(rng: random.Random, words: int) -> str:
    out = []
    for i in range(words):
        out.append(rng.choice(WORDS) if i % 13 else f"({rng.randrange(10_000)})")
    return " ".join(out)


async def ttft(client: WorkerClient, messages: tuple[ChatMessage, ...], max_tokens: int, rid: str) -> dict[str, Any]:
    req = GenerateRequest(rid, messages, SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=1))
    t0 = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    finish: FinishEvent | None = None
    async for ev in client.generate(req):
        if isinstance(ev, TokenEvent):
            first = first or time.perf_counter()
            parts.append(ev.text)
        else:
            finish = ev
    assert finish is not None and first is not None, finish
    return {"ttft_ms": (first - t0) * 1000.0, "prompt_tokens": finish.prompt_tokens, "text": "".join(parts)}


async def run(args: argparse.Namespace, addresses: list[str]) -> list[dict[str, Any]]:
    a, b = (WorkerClient(addr, heartbeat_timeout_s=60.0, connect_timeout_s=30.0) for addr in addresses)
    await a.connect()
    await b.connect()
    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []
    try:
        await ttft(a, (ChatMessage("user", "hello"),), 4, "warm-a")  # first-request costs out of the way
        await ttft(b, (ChatMessage("user", "hello"),), 4, "warm-b")
        for i in range(args.conversations):
            system = ChatMessage("system", "You are a careful assistant. Answer briefly.")
            turn1 = (system, ChatMessage("user", document(rng, args.doc_words) + "\n\nWhat is this text about?"))
            t1 = await ttft(a, turn1, args.max_tokens, f"c{i}-t1")
            turn2 = (*turn1, ChatMessage("assistant", t1["text"]), ChatMessage("user", "Give it a title."))
            warm = await ttft(a, turn2, args.max_tokens, f"c{i}-t2-pinned")
            cold = await ttft(b, turn2, args.max_tokens, f"c{i}-t2-cold")
            rows.append({
                "conversation": i, "prompt_tokens_turn1": t1["prompt_tokens"],
                "prompt_tokens_turn2": warm["prompt_tokens"], "turn1_ttft_ms": t1["ttft_ms"],
                "turn2_pinned_ttft_ms": warm["ttft_ms"], "turn2_cold_ttft_ms": cold["ttft_ms"],
            })
            print(f"conversation {i}: turn 1 {t1['ttft_ms']:.0f} ms, turn 2 pinned {warm['ttft_ms']:.0f} ms, "
                  f"turn 2 cold {cold['ttft_ms']:.0f} ms ({warm['prompt_tokens']} prompt tokens)", file=sys.stderr)
    finally:
        await a.close()
        await b.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conversations", type=int, default=5)
    p.add_argument("--doc-words", type=int, default=900, help="words in each conversation's opening document")
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        addresses = []
        for name in ("affinity-a", "affinity-b"):
            proc = popen_python(["-m", "rtserver", "worker", "--engine", "openvino", "--model", args.model,
                                 "--listen", "127.0.0.1:0", "--name", name, "--capacity", "4", "--log-level", "warning"])
            procs.append(proc)
            addresses.append(wait_line(proc, READY, 300.0).group(1).decode())
        rows = asyncio.run(run(args, addresses))
    finally:
        for proc in procs:
            stop(proc)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    summary = {
        "turn1_ttft_ms": med("turn1_ttft_ms"),
        "turn2_pinned_ttft_ms": med("turn2_pinned_ttft_ms"),
        "turn2_cold_ttft_ms": med("turn2_cold_ttft_ms"),
        "prompt_tokens_turn2": med("prompt_tokens_turn2"),
    }
    summary["pinned_speedup"] = summary["turn2_cold_ttft_ms"] / summary["turn2_pinned_ttft_ms"]
    print(table(
        ["conv", "prompt tok t1", "prompt tok t2", "t1 TTFT ms", "t2 pinned ms", "t2 cold ms"],
        [[r["conversation"], r["prompt_tokens_turn1"], r["prompt_tokens_turn2"], r["turn1_ttft_ms"],
          r["turn2_pinned_ttft_ms"], r["turn2_cold_ttft_ms"]] for r in rows]
        + [["median", "", summary["prompt_tokens_turn2"], summary["turn1_ttft_ms"], summary["turn2_pinned_ttft_ms"],
            summary["turn2_cold_ttft_ms"]]],
    ))
    print(f"\nturn 2 on the pinned (warm) worker: {summary['pinned_speedup']:.1f}x faster to first token than on a "
          "cold worker")
    path = write_results("affinity", {"params": vars(args), "summary": summary, "conversations": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
