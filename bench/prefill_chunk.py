"""Which prefill chunk? The engine's own steps while a long prompt prefills beside decoding streams.

    python bench/prefill_chunk.py [--chunks 32 64 128 256 512] [--repeat 2] [--prompt-tokens 2000] [--others 8]

For each chunk (``max_num_batched_tokens`` with dynamic split-fuse, as rtserver's
openvino engine sets it) one ``ContinuousBatchingPipeline`` (the embedded SmolLM2,
capacity ``--others`` + 1, 1 GB KV cache, prefix caching) is loaded in this process, no
sockets; the repetitions run interleaved across the chunks (forward, then backward), so
a busy spell of the machine does not fall on one chunk only. In each: ``--others`` greedy streams decode; after 12 decode-only steps (the baseline) a
prompt of about ``--prompt-tokens`` tokens (a fresh prefix each time) is added and the
loop steps until its first token. Every step gives each decoding stream one token, so
a step's duration is the other streams' inter-token gap.

Per step both the wall time and the process's CPU time (every thread: openvino's own
included) are recorded. On a machine shared with other jobs the wall times carry the
machine's noise; the CPU time of a step is what the chunk itself costs, and its
ratios (prefill steps against decode-only steps) are what a quiet machine with the
same cores would show as wall-time ratios, roughly.

Reported per chunk (median over ``--repeat``): decode-only step p50, steps during the
prefill p50 / p99 / max, p99 during over p50 decode-only (the issue's target: ≤ 3), the
long prompt's TTFT (added → first token), prompt tokens/s, and the others' tokens/s
during the prefill. Results: bench/results/prefill_chunk.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, percentile, table, write_results
from bench.worker_stall import long_prompt


def setup(chunk: int, args: argparse.Namespace) -> Callable[[], dict[str, Any]]:
    """Load and warm a pipeline with this chunk; returns one repetition of the scenario."""
    import openvino_genai as og

    from rtserver.engines.models import resolve_model

    sc = og.SchedulerConfig()
    sc.cache_size = 1
    sc.enable_prefix_caching = True
    sc.max_num_seqs = args.others + 1
    sc.dynamic_split_fuse = True
    sc.max_num_batched_tokens = chunk
    pipe = og.ContinuousBatchingPipeline(str(resolve_model("smollm2-135m")), sc, "CPU", {})
    tok = pipe.get_tokenizer()

    def config(max_tokens: int, ignore_eos: bool = False) -> Any:
        gc = og.GenerationConfig()
        gc.max_new_tokens = max_tokens
        gc.ignore_eos = ignore_eos  # the other streams decode through the whole prefill
        gc.do_sample = False
        gc.repetition_penalty = 1.05
        return gc

    def template(text: str) -> str:
        return str(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True))

    next_id = 0

    def add(text: str, max_tokens: int, ignore_eos: bool = False) -> Any:
        nonlocal next_id
        next_id += 1
        return pipe.add_request(next_id, template(text), config(max_tokens, ignore_eos))

    def running(h: Any) -> bool:
        return bool(h.get_status() == og.GenerationStatus.RUNNING)

    # warm-up: a short request, and one longer than a chunk (as the engine does at start)
    for text in ("Say hello.", " ".join(f"w{i}" for i in range(min(chunk, 512) + 16))):
        h = add(text, 2)
        while running(h):
            pipe.step()
    def once() -> dict[str, Any]:
        nonlocal next_id
        others = [add(f"Count from {i} to 500.", args.other_tokens, True) for i in range(1, args.others + 1)]
        for _ in range(args.others * 2 + 8):  # their prompts, and a few tokens each
            pipe.step()

        def step(others: list[Any] = others) -> tuple[float, float]:
            w0, c0 = time.perf_counter(), time.process_time()
            pipe.step()
            for h in others:
                if h.can_read():
                    h.read()
            return (time.perf_counter() - w0) * 1000, (time.process_time() - c0) * 1000

        decode = [step() for _ in range(12)]
        text = template(long_prompt(args.prompt_tokens) + " Summarise the list.")
        prompt_tokens = int(tok.encode(text).input_ids.get_shape()[-1])
        next_id += 1
        t0, cpu0 = time.perf_counter(), time.process_time()
        long = pipe.add_request(next_id, text, config(4))
        during: list[tuple[float, float]] = []
        first = False
        while not first:
            during.append(step())
            if long.can_read():
                first = any(out.generated_ids for out in long.read().values())
            if not running(long) and not first:
                raise RuntimeError("the long request ended without a token")
        ttft_s = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
        alive = sum(1 for h in others if running(h))
        for h in [*others, long]:
            h.cancel()
        while pipe.has_non_finished_requests():
            pipe.step()
        dw, dc = [w for w, _ in decode], [c for _, c in decode]
        pw, pc = [w for w, _ in during], [c for _, c in during]
        run = {
            "prompt_tokens": prompt_tokens, "steps": len(during), "others_alive_at_end": alive,
            "decode_ms_p50": statistics.median(dw), "decode_cpu_ms_p50": statistics.median(dc),
            "during_ms_p50": statistics.median(pw), "during_ms_p99": percentile(pw, 0.99), "during_ms_max": max(pw),
            "during_cpu_ms_p50": statistics.median(pc), "during_cpu_ms_p99": percentile(pc, 0.99),
            "ratio_p99_wall": (percentile(pw, 0.99) or 0) / statistics.median(dw),
            "ratio_p99_cpu": (percentile(pc, 0.99) or 0) / statistics.median(dc),
            "ttft_s": ttft_s, "prefill_cpu_s": cpu_s, "prompt_tokens_per_s": prompt_tokens / ttft_s,
            "others_tokens_per_s": alive * len(during) / ttft_s,
        }
        print(f"chunk {chunk}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in run.items()), flush=True)
        return run

    return once


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chunks", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=2000)
    p.add_argument("--others", type=int, default=8)
    p.add_argument("--other-tokens", type=int, default=400)
    p.add_argument("--name", default="prefill_chunk")
    args = p.parse_args()
    scenarios = {chunk: setup(chunk, args) for chunk in args.chunks}  # one pipeline per chunk, all loaded
    results: dict[int, list[dict[str, Any]]] = {c: [] for c in args.chunks}
    for rep in range(args.repeat):  # interleaved, so the machine's load falls on every chunk alike
        for chunk in args.chunks if rep % 2 == 0 else list(reversed(args.chunks)):
            results[chunk].append(scenarios[chunk]())

    def med(rs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in rs))

    keys = ["decode_ms_p50", "during_ms_p50", "during_ms_p99", "ratio_p99_wall", "decode_cpu_ms_p50",
            "during_cpu_ms_p99", "ratio_p99_cpu", "ttft_s", "prompt_tokens_per_s", "others_tokens_per_s"]
    print(table(["chunk", "decode p50 ms", "prefill-step p50 ms", "p99 ms", "p99/decode p50",
                 "decode CPU ms", "prefill-step CPU p99 ms", "CPU p99/p50", "TTFT s", "prompt tok/s", "others tok/s"],
                [[c, *(f"{med(rs, k):.1f}" if k.startswith(("ratio", "ttft")) else f"{med(rs, k):.0f}" for k in keys)]
                 for c, rs in results.items()]))
    path = write_results(args.name, {"machine": machine(), "args": vars(args), "runs": results,
                                     "median": {c: {k: med(rs, k) for k in keys} for c, rs in results.items()}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
