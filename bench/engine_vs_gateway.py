"""What the server costs on top of its engine: the raw ContinuousBatchingPipeline vs ``rtserver serve``.

    python bench/engine_vs_gateway.py [--conc 16] [--max-tokens 128] [--repeat 2] [--old-root DIR] [--gateway-flag F ...]

Same run, the same prompt tokens on both sides, greedy, ``--conc`` requests at once, in
alternation:

* ``raw``: openvino-genai's ``ContinuousBatchingPipeline`` in this process with the
  scheduler settings of rtserver's engine (capacity = ``--conc``, the prefill chunk),
  prompts through the model's chat template; a loop of ``step()`` until every request
  is done. TTFT = requests added → first token of each.
* ``gateway``: ``rtserver serve`` (embedded SmolLM2 worker: its engine in an engine
  host process, the same prefill chunk), ``--conc`` WebSocket clients each sending one
  message at the same moment, each the first message of its conversation (no history,
  no system prompt, the raw side's repetition penalty). The server is warmed by one
  conversation of its own first, as the raw pipeline is by one request. TTFT = message
  sent → first token frame.
* ``gateway-old`` (with ``--old-root``): the same with the code of another checkout
  (e.g. ``git archive`` of the commit before a change), for a before/after.

tokens/s = completion tokens of all requests / wall time from the first request to
the last ``done``. Each run prints the prompt tokens of every request (the raw side
counts its templated prompts, the gateway side reads ``done.usage.prompt_tokens``); a
run whose counts differ from the raw side's is flagged ``unequal`` in the table.
Results: bench/results/engine_vs_gateway.json (``--name`` for another file).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, gateway, percentile, table, write_results
from rtserver.client import Client

TOPICS = ["a lighthouse", "a lost cat", "the moon", "a robot chef", "a dragon", "the sea", "a city at night",
          "a mountain", "a clock", "a library", "a train", "a garden", "a storm", "a violin", "a desert", "a river"]


REPETITION_PENALTY = 1.15  # both sides (the gateway gets it as --repetition-penalty)


def prompts(n: int) -> list[str]:
    return [f"Write a short story about {TOPICS[i % len(TOPICS)]}." for i in range(n)]


def run_raw(n: int, max_tokens: int, chunk: int) -> dict[str, Any]:
    import openvino_genai as og

    from rtserver.engines.base import SamplingParams
    from rtserver.engines.models import resolve_model
    from rtserver.engines.openvino import generation_config, scheduler_config

    # the engine's own scheduler and generation settings, for the gateway's greedy requests
    pipe = og.ContinuousBatchingPipeline(str(resolve_model("smollm2-135m")), scheduler_config(n, chunk), "CPU", {})
    tok = pipe.get_tokenizer()
    gc = generation_config(SamplingParams(max_tokens=max_tokens, temperature=0.0, repetition_penalty=REPETITION_PENALTY))
    warm = pipe.add_request(0, tok.apply_chat_template([{"role": "user", "content": "Say hello."}],
                                                       add_generation_prompt=True), gc)
    while warm.get_status() == og.GenerationStatus.RUNNING:
        pipe.step()
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True) for p in prompts(n)]
    prompt_tokens = [int(tok.encode(t).input_ids.get_shape()[-1]) for t in texts]
    t0 = time.perf_counter()
    handles = [pipe.add_request(i + 1, t, gc) for i, t in enumerate(texts)]
    first: dict[int, float] = {}
    tokens = [0] * n
    while any(h.get_status() == og.GenerationStatus.RUNNING or h.can_read() for h in handles):
        pipe.step()
        now = time.perf_counter()
        for i, h in enumerate(handles):
            if h.can_read():
                for out in h.read().values():
                    if out.generated_ids:
                        tokens[i] += len(out.generated_ids)
                        first.setdefault(i, now)
    wall = time.perf_counter() - t0
    ttft = [(first[i] - t0) * 1000 for i in first]
    return {"tokens": sum(tokens), "wall_s": wall, "tokens_per_s": sum(tokens) / wall,
            "ttft_ms_p50": statistics.median(ttft), "ttft_ms_p99": percentile(ttft, 0.99),
            "prompt_tokens": prompt_tokens}


async def _clients(url: str, n: int) -> dict[str, Any]:
    async with await Client.connect(url) as warm:  # a conversation of its own: no history for the measured ones
        await warm.ask("Say hello.")
    clients = [await Client.connect(url) for _ in range(n)]  # hello / session outside the measurement
    try:
        t0 = time.perf_counter()
        turns = await asyncio.gather(*(c.ask(p) for c, p in zip(clients, prompts(n), strict=True)))
        wall = time.perf_counter() - t0
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    tokens = sum((t.done or {}).get("usage", {}).get("completion_tokens", 0) for t in turns)
    ttft = [(t.first_token_at - t.sent_at) * 1000 for t in turns if t.first_token_at is not None]
    errors = sum(len(t.errors) for t in turns)
    prompt_tokens = [(t.done or {}).get("usage", {}).get("prompt_tokens", 0) for t in turns]
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall, "ttft_ms_p50": statistics.median(ttft),
            "ttft_ms_p99": percentile(ttft, 0.99), "errors": errors, "prompt_tokens": prompt_tokens}


def run_gateway(n: int, max_tokens: int, chunk: int, root: str | None, extra: list[str]) -> dict[str, Any]:
    flags = [*extra, "--capacity", str(n), "--max-tokens", str(max_tokens), "--temperature", "0", "--system-prompt", "",
             "--repetition-penalty", str(REPETITION_PENALTY), "--prefill-chunk", str(chunk),
             "--messages-per-second", "1000", "--message-burst", "1000", "--log-level", "warning"]
    with gateway(*flags, root=Path(root) if root else ROOT, timeout=300) as (_, port):
        return asyncio.run(_clients(f"ws://127.0.0.1:{port}/ws", n))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conc", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--chunk", type=int, default=256, help="prefill chunk of both sides (the engine's step_budget applies)")
    p.add_argument("--old-root", default="", help="a checkout to run as gateway-old")
    p.add_argument("--name", default="engine_vs_gateway", help="results file under bench/results/")
    p.add_argument("--gateway-flag", action="append", default=[], metavar="FLAG",
                   help="one more `rtserver serve` argument for both gateways (repeat it: "
                        "--gateway-flag=--embedded-mode --gateway-flag=inproc)")
    args = p.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(args.repeat):
        targets = ["raw", "gateway"] + (["gateway-old"] if args.old_root else [])
        for target in targets if rep % 2 == 0 else list(reversed(targets)):
            if target == "raw":
                res = run_raw(args.conc, args.max_tokens, args.chunk)
            else:
                root = os.path.abspath(args.old_root) if target == "gateway-old" else None
                res = run_gateway(args.conc, args.max_tokens, args.chunk, root, args.gateway_flag)
            runs.setdefault(target, []).append(res)
            print(f"run {rep + 1} {target:12} {res['tokens_per_s']:7.1f} tok/s  TTFT p50 {res['ttft_ms_p50']:7.0f} ms  "
                  f"prompt tokens {res['prompt_tokens']} (sum {sum(res['prompt_tokens'])})", flush=True)
    raw_prompts = sorted(runs["raw"][0]["prompt_tokens"])
    raw_tps = statistics.median(r["tokens_per_s"] for r in runs["raw"])
    raw_ttft = statistics.median(r["ttft_ms_p50"] for r in runs["raw"])
    summary = {}
    for target, rs in runs.items():
        tps = statistics.median(r["tokens_per_s"] for r in rs)
        ttft = statistics.median(r["ttft_ms_p50"] for r in rs)
        equal = all(sorted(r["prompt_tokens"]) == raw_prompts for r in rs)
        summary[target] = {"tokens_per_s": tps, "ttft_ms_p50": ttft, "of_raw": tps / raw_tps,
                           "ttft_added_ms": ttft - raw_ttft, "prompt_tokens_equal_to_raw": equal,
                           "prompt_tokens_sum": sum(rs[0]["prompt_tokens"])}
    print(table(["target", "tok/s (median)", "of raw", "TTFT p50 ms", "TTFT added ms", "prompt tokens"],
                [[t, f"{s['tokens_per_s']:.1f}", f"{s['of_raw']:.0%}", f"{s['ttft_ms_p50']:.0f}",
                  f"{s['ttft_added_ms']:+.0f}",
                  f"{s['prompt_tokens_sum']} ({'same as raw' if s['prompt_tokens_equal_to_raw'] else 'unequal'})"]
                 for t, s in summary.items()]))
    path = write_results(args.name, {"args": vars(args), "runs": runs, "summary": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
