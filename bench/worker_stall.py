"""Does a long prefill stall a worker? Event-loop lag and the other streams' ITL, side by side.

    python bench/worker_stall.py [--prompt-tokens 2000] [--others 8] [--configs inline:2048 process:2048 process:256]

For each config (``HOST:CHUNK``: ``--engine-host`` and ``--prefill-chunk``) one real
``rtserver worker --engine openvino`` (the embedded SmolLM2) is started and spoken to on
its raw wire. ``raw:CHUNK`` runs the same scenario on openvino's pipeline itself, stepped
in the bench's process at the budget the engine would use (no worker, no pings): what the
engine alone does, to compare with in the same run.

1. ``--others`` greedy streams run (``max_tokens`` large enough to outlast the prefill);
2. once each has streamed 8 tokens, a ``gen`` with a prompt of about ``--prompt-tokens``
   tokens (unique per config: no prefix cache) is sent;
3. meanwhile a ``ping`` goes out every 10 ms and its ``pong`` is timed: the round trip
   is the worker's event-loop lag plus two loopback hops (the baseline is measured
   before step 2);
4. the window ends when the long request's first token (its prefill done) arrives.

Reported per config: pong RTT p50/p99/max during the window, the worker's heartbeat
gap max, the others' inter-token gap p50 before the window and p50/p99 inside it
(per token: an arrival of n tokens after g ms counts as n gaps of g/n), the longest
gap and when it began, the others' tokens/s and the prompt's tokens/s (prompt tokens
over the prefill time, which is the long prompt's TTFT). With ``--repeat R`` the
long prompt is sent R times on the same worker (a fresh prefix each time); the row
shown is the run with the median ITL p99, every run is in the JSON. Results: bench/results/worker_stall.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, percentile, popen_python, stop, table, wait_line, write_results
from rtserver.workers.wire import FrameReader, pack

READY = re.compile(rb"READY (\S+)")


def long_prompt(tokens: int) -> str:
    tag = secrets.token_hex(4)  # a fresh prefix: nothing of it is in the prefix cache
    n = max(1, tokens // 20)  # about 20 tokens an item
    return f"[{tag}] " + " ".join(f"Item {i} of list {tag} is a short sentence about nothing much." for i in range(n))


async def scenario(address: str, prompt_tokens: int, others: int, other_tokens: int) -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    decoder = FrameReader()
    tok_times: dict[int, list[tuple[float, int]]] = {i: [] for i in range(1, others + 1)}  # (arrival, tokens)
    pong_rtt: list[tuple[float, float]] = []  # (sent at, rtt)
    loads: list[float] = []
    first_long: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    long_done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    long_id = 1000

    async def read() -> None:
        while data := await reader.read(65536):
            now = time.perf_counter()
            for f in decoder.feed(data):
                t = f["t"]
                if t == "tok":
                    if f["id"] == long_id:
                        if not first_long.done():
                            first_long.set_result(now)
                    else:
                        arrivals = tok_times[f["id"]]
                        if arrivals and arrivals[-1][0] == now:  # two frames in one read: one arrival
                            arrivals[-1] = (now, arrivals[-1][1] + f["n"])
                        else:
                            arrivals.append((now, f["n"]))
                elif t == "pong":
                    pong_rtt.append((f["ts"], now - f["ts"]))
                elif t == "load":
                    loads.append(now)
                elif t == "done" and f["id"] == long_id and not long_done.done():
                    long_done.set_result(f)
                elif t == "ready" and not ready.done():
                    ready.set_result(None)

    async def pinger() -> None:
        while True:
            writer.write(pack({"t": "ping", "ts": time.perf_counter()}))
            await asyncio.sleep(0.01)

    rd = asyncio.create_task(read())
    await ready
    for i in range(1, others + 1):
        writer.write(pack({"t": "gen", "id": i, "rid": f"o{i}", "messages": [["user", f"Count from {i} to 500."]],
                           "params": {"max_tokens": other_tokens, "temperature": 0.0}}))
    pg = asyncio.create_task(pinger())
    while min(sum(n for _, n in v) for v in tok_times.values()) < 8:
        await asyncio.sleep(0.01)
    before_start = time.perf_counter()
    await asyncio.sleep(1.5)  # the steady state, for the baseline
    t0 = time.perf_counter()
    writer.write(pack({"t": "gen", "id": long_id, "rid": "long",
                       "messages": [["user", long_prompt(prompt_tokens) + " Summarise the list."]],
                       "params": {"max_tokens": 4, "temperature": 0.0}}))
    t1 = await asyncio.wait_for(first_long, 300)
    done = await asyncio.wait_for(long_done, 60)
    pg.cancel()
    for i in range(1, others + 1):
        writer.write(pack({"t": "cancel", "id": i}))
    await asyncio.sleep(0.2)
    rd.cancel()
    writer.close()

    base_rtt = [r * 1000 for s, r in pong_rtt if before_start <= s < t0]
    win_rtt = [r * 1000 for s, r in pong_rtt if t0 <= s <= t1]
    win_loads = [t for t in loads if t0 - 1 <= t <= t1 + 1]
    hb_gap = max((b - a for a, b in itertools.pairwise(win_loads)), default=float("nan")) * 1000
    return {
        **itl_stats(tok_times, before_start, t0, t1, done.get("prompt") or 0),
        "pong_rtt_ms_baseline_p50": percentile(base_rtt, 0.5),
        "pong_rtt_ms_p50": percentile(win_rtt, 0.5),
        "pong_rtt_ms_p99": percentile(win_rtt, 0.99),
        "pong_rtt_ms_max": max(win_rtt, default=None),
        "pongs_in_window": len(win_rtt),
        "heartbeat_gap_ms_max": hb_gap,
    }


def gaps(tok_times: dict[int, list[tuple[float, int]]], lo: float, hi: float,
         t0: float) -> tuple[list[float], float, float]:
    """Per-token gaps (an arrival of n tokens after g ms counts n gaps of g/n) of arrivals in
    [lo, hi], the gap that spans into the window included; plus the longest gap and its start - t0."""
    out: list[float] = []
    worst, worst_at = 0.0, 0.0
    for arrivals in tok_times.values():
        prev = [a for a in arrivals if a[0] < lo][-1:]
        inside = [a for a in arrivals if lo <= a[0] <= hi]
        after = [a for a in arrivals if a[0] > hi][:1]
        seq = [*prev, *inside, *after] if inside else []
        for (ta, _), (tb, n) in itertools.pairwise(seq):
            g = (tb - ta) * 1000
            out += [g / n] * n
            if g > worst:
                worst, worst_at = g, ta - t0
    return out, worst, worst_at


def itl_stats(tok_times: dict[int, list[tuple[float, int]]], before_start: float, t0: float, t1: float,
              prompt_tokens: int) -> dict[str, Any]:
    """The others' ITL before the long prompt (from ``before_start`` to ``t0``, when it was sent)
    and during its prefill (``t0`` to ``t1``, its first token)."""
    itl_before, _, _ = gaps(tok_times, before_start, t0, t0)
    itl_during, worst, worst_at = gaps(tok_times, t0, t1, t0)
    others_tokens = sum(n for arrivals in tok_times.values() for t, n in arrivals if t0 <= t <= t1)
    p50_before = percentile(itl_before, 0.5)
    p50_during = percentile(itl_during, 0.5)
    p99_during = percentile(itl_during, 0.99)
    return {
        "prompt_tokens": prompt_tokens,
        "prefill_s": t1 - t0,
        "itl_ms_p50_before": p50_before,
        "itl_ms_p50_during": p50_during,
        "itl_ms_p99_during": p99_during,
        "itl_p99_during_over_p50_before": (p99_during / p50_before) if p50_before and p99_during else None,
        "itl_ms_p99_during_over_p50_during": (p99_during / p50_during) if p50_during and p99_during else None,
        "itl_ms_max_during": worst,
        "itl_max_starts_s_after_prompt": worst_at,
        "others_tokens_per_s_during": others_tokens / (t1 - t0),
        "prompt_tokens_per_s": prompt_tokens / (t1 - t0),
    }


def raw_scenario(chunk: int, prompt_tokens: int, others: int, other_tokens: int) -> dict[str, Any]:
    """The same scenario on openvino's pipeline itself, stepped in this process: no worker, no
    wire, no event loop. Each step's new tokens count as arriving when the step returns."""
    import openvino_genai as og

    from rtserver.engines.base import SamplingParams
    from rtserver.engines.models import DEFAULT_MODEL, resolve_model
    from rtserver.engines.openvino import generation_config, scheduler_config

    pipe = og.ContinuousBatchingPipeline(str(resolve_model(DEFAULT_MODEL)), scheduler_config(others + 1, chunk),
                                         "CPU", {})  # as the engine builds it
    tok = pipe.get_tokenizer()

    def prompt(text: str) -> str:
        return str(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True))

    def config(max_tokens: int) -> Any:  # as the engine builds it for the bench's gen frames
        return generation_config(SamplingParams(max_tokens=max_tokens, temperature=0.0))

    tok_times: dict[int, list[tuple[float, int]]] = {i: [] for i in range(1, others + 1)}
    handles = {i: pipe.add_request(i, prompt(f"Count from {i} to 500."), config(other_tokens))
               for i in range(1, others + 1)}

    def step() -> None:
        pipe.step()
        now = time.perf_counter()
        for i, h in handles.items():
            if h.can_read():
                n = sum(len(o.generated_ids) for o in h.read().values())
                if n:
                    tok_times[i].append((now, n))

    while min(sum(n for _, n in v) for v in tok_times.values()) < 8:
        step()
    before_start = time.perf_counter()
    while time.perf_counter() - before_start < 1.5:
        step()
    text = prompt(long_prompt(prompt_tokens) + " Summarise the list.")
    n_prompt = int(tok.encode(text).input_ids.get_shape()[-1])
    t0 = time.perf_counter()
    long = pipe.add_request(0, text, config(4))
    while not long.can_read() and long.get_status() == og.GenerationStatus.RUNNING:
        step()
    t1 = time.perf_counter()
    for h in [*handles.values(), long]:
        h.cancel()
    for _ in range(4):
        pipe.step()
    return itl_stats(tok_times, before_start, t0, t1, n_prompt)


def run_config(host: str, chunk: int, args: argparse.Namespace) -> dict[str, Any]:
    if host == "raw":
        runs = [raw_scenario(chunk, args.prompt_tokens, args.others, args.other_tokens) for _ in range(args.repeat)]
        runs_sorted = sorted(runs, key=lambda r: r["itl_ms_p99_during"] or 0.0)
        return {"engine_host": host, "prefill_chunk": chunk, "pong_rtt_ms_p50": None, "pong_rtt_ms_p99": None,
                "pong_rtt_ms_max": None, "heartbeat_gap_ms_max": None,
                **runs_sorted[(len(runs) - 1) // 2], "runs": runs}
    proc = popen_python(["-m", "rtserver", "worker", "--engine", "openvino", "--listen", "127.0.0.1:0",
                         "--name", f"stall-{host}-{chunk}", "--capacity", str(args.others + 1),
                         "--engine-host", host, "--prefill-chunk", str(chunk), "--log-level", "warning"])
    try:
        address = wait_line(proc, READY, 300).group(1).decode()
        runs = [asyncio.run(scenario(address, args.prompt_tokens, args.others, args.other_tokens))
                for _ in range(args.repeat)]
    finally:
        stop(proc)
    # the median run by the others' ITL p99 during the prefill; every run is kept
    runs_sorted = sorted(runs, key=lambda r: r["itl_ms_p99_during"] or 0.0)
    return {"engine_host": host, "prefill_chunk": chunk, **runs_sorted[(len(runs) - 1) // 2], "runs": runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt-tokens", type=int, default=2000)
    p.add_argument("--others", type=int, default=8)
    p.add_argument("--other-tokens", type=int, default=400)
    p.add_argument("--configs", nargs="+", default=["inline:2048", "process:2048", "process:256", "process:64"])
    p.add_argument("--repeat", type=int, default=1, help="long prompts per config, one after the other (same worker)")
    p.add_argument("--name", default="worker_stall")
    args = p.parse_args()
    rows: list[dict[str, Any]] = []
    for config in args.configs:
        host, _, chunk = config.partition(":")
        rows.append(run_config(host, int(chunk), args))
        print({k: v for k, v in rows[-1].items() if k != "runs"}, flush=True)

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)

    print(table(
        ["host", "chunk", "prompt tok", "prefill s", "pong p50 ms", "pong p99 ms", "pong max ms", "hb gap max ms",
         "ITL p50 before", "ITL p50 during", "ITL p99 during", "p99/p50 before", "p99/p50 during", "others tok/s",
         "prompt tok/s"],
        [[r["engine_host"], r["prefill_chunk"], r["prompt_tokens"], f(r["prefill_s"]), f(r["pong_rtt_ms_p50"]),
          f(r["pong_rtt_ms_p99"]), f(r["pong_rtt_ms_max"]), f(r["heartbeat_gap_ms_max"]), f(r["itl_ms_p50_before"]),
          f(r["itl_ms_p50_during"]), f(r["itl_ms_p99_during"]), f(r["itl_p99_during_over_p50_before"]),
          f(r["itl_ms_p99_during_over_p50_during"]),
          f(r["others_tokens_per_s_during"]), f(r["prompt_tokens_per_s"])] for r in rows],
    ))
    path = write_results(args.name, {"machine": machine(), "args": vars(args), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
