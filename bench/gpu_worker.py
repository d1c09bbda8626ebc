"""GPU worker benchmark: the transformers engine (continuous batching) under 1, 8 and 64 streams.

Random weights in the shape of Qwen2.5-7B (built from a ``Qwen2Config`` on the GPU in
bf16; nothing is downloaded), a word-level tokenizer whose vocabulary covers every id,
and the same ``TransformersEngine`` a ``rtserver worker --engine transformers`` runs.
For each concurrency it reports TTFT p50/p99 (submit → first token), inter-token gap
p50/p99 and aggregate tokens/s; then, if time allows, a single-stream baseline with
``model.generate`` on a static KV cache (transformers compiles its forward).

    python bench/gpu_worker.py                 # the real run (CUDA, < 8 min incl. init)
    python bench/gpu_worker.py --quick         # fewer tokens, no static baseline
    python bench/gpu_worker.py --tiny --device cpu   # the CPU smoke test of this script

Prints progress to stderr and a markdown table (card, date, versions) to stdout; writes
bench/results/gpu_worker.json (``--tiny`` runs write gpu_worker_tiny.json). A watchdog
writes what was measured and exits 3 once ``--timeout`` seconds have passed. Needs only
torch, transformers and tokenizers (not the rest of rtserver's dependencies).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import platform
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rtserver.engines.base import ChatMessage, FinishEvent, GenerateRequest, SamplingParams, TokenEvent  # noqa: E402
from tests.fixtures.tiny_model import QWEN25_7B, SPECIALS, build_tokenizer, tiny_config  # noqa: E402

RESULTS: dict[str, Any] = {"benchmark": "gpu_worker", "rounds": [], "static_baseline": None, "notes": []}
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def out_path(args: argparse.Namespace) -> Path:
    if args.out:
        return Path(args.out)
    return ROOT / "bench" / "results" / ("gpu_worker_tiny.json" if args.tiny else "gpu_worker.json")


def write(args: argparse.Namespace) -> Path:
    path = out_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    RESULTS["elapsed_s"] = round(time.monotonic() - T0, 1)
    path.write_text(json.dumps(RESULTS, indent=2))
    return path


def watchdog(args: argparse.Namespace) -> None:
    def fire() -> None:
        RESULTS["notes"].append(f"watchdog: stopped after {args.timeout:.0f} s; results are partial")
        say("watchdog fired: writing partial results")
        print(markdown(), flush=True)
        write(args)
        os._exit(3)

    timer = threading.Timer(args.timeout, fire)
    timer.daemon = True
    timer.start()


# ------------------------------------------------------------------ model
def build(args: argparse.Namespace) -> tuple[Any, Any, str]:
    import torch
    from transformers import AutoModelForCausalLM

    if args.tiny:
        config = tiny_config("qwen2", 512)
        name = "tiny-qwen2-random"
    else:
        config = tiny_config("qwen2", **QWEN25_7B)
        name = "qwen2.5-7b-shape-random"
    config._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    say(f"building {name} ({config.num_hidden_layers} layers, hidden {config.hidden_size}) on {args.device} in {dtype}")
    t = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    with torch.no_grad():  # special ids get logit 0 so random sampling rarely ends a stream early
        model.get_output_embeddings().weight[: len(SPECIALS)].zero_()
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 3
    params = sum(p.numel() for p in model.parameters())
    RESULTS["model"] = {"name": name, "params": params, "dtype": str(dtype), "init_s": round(time.perf_counter() - t, 1)}
    say(f"model ready: {params / 1e9:.2f} B parameters in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    tokenizer = build_tokenizer(config.vocab_size)
    say(f"tokenizer of {config.vocab_size} ids in {time.perf_counter() - t:.1f} s")
    return model, tokenizer, name


def prompt_text(rng: random.Random, n: int, vocab: int) -> str:
    return " ".join(f"t{rng.randrange(len(SPECIALS), vocab)}" for _ in range(n))


# ------------------------------------------------------------------ continuous batching rounds
async def one_stream(engine: Any, text: str, max_tokens: int, rid: str) -> dict[str, Any]:
    req = GenerateRequest(rid, (ChatMessage("user", text),), SamplingParams(max_tokens=max_tokens, temperature=0.7))
    t0 = time.perf_counter()
    times: list[float] = []
    counts: list[int] = []
    finish: FinishEvent | None = None
    async for ev in engine.generate(req):
        if isinstance(ev, TokenEvent):
            times.append(time.perf_counter())
            counts.append(ev.tokens)
        else:
            finish = ev
    assert finish is not None
    gaps = [(b - a) * 1000.0 / max(1, c) for a, b, c in zip(times, times[1:], counts[1:], strict=False)]
    return {
        "ttft_ms": (times[0] - t0) * 1000.0 if times else None,
        "gaps_ms": gaps,
        "tokens": finish.completion_tokens,
        "reason": finish.reason,
        "error": finish.error,
    }


async def cb_rounds(args: argparse.Namespace, model: Any, tokenizer: Any, name: str) -> None:
    from rtserver.engines.transformers import TransformersEngine

    streams = [int(s) for s in args.streams.split(",")]
    engine = TransformersEngine.from_objects(
        model, tokenizer, model_id=name, capacity=max(streams), max_new_tokens=args.max_tokens,
        compile_level=args.compile_level,
    )
    t = time.perf_counter()
    await engine.start()
    RESULTS["engine_start_s"] = round(time.perf_counter() - t, 1)
    say(f"continuous batching manager started and warmed in {time.perf_counter() - t:.1f} s")
    rng = random.Random(1)
    vocab = tokenizer.vocab_size if hasattr(tokenizer, "vocab_size") else len(tokenizer)
    try:
        for n in streams:
            t = time.perf_counter()  # warm-up at this width: graph capture and allocator growth are not measured
            await asyncio.gather(*(one_stream(engine, prompt_text(rng, args.prompt_tokens, vocab), 8, f"w{n}-{i}")
                                   for i in range(n)))
            say(f"{n:>3} streams: warm-up in {time.perf_counter() - t:.1f} s")
            t = time.perf_counter()
            runs = await asyncio.gather(*(
                one_stream(engine, prompt_text(rng, args.prompt_tokens, vocab), args.max_tokens, f"s{n}-{i}")
                for i in range(n)
            ))
            wall = time.perf_counter() - t
            errors = [r["error"] for r in runs if r["error"]]
            ttfts = [r["ttft_ms"] for r in runs if r["ttft_ms"] is not None]
            gaps = [g for r in runs for g in r["gaps_ms"]]
            tokens = sum(r["tokens"] for r in runs)
            row = {
                "streams": n, "prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens,
                "ttft_p50_ms": pct(ttfts, 50), "ttft_p99_ms": pct(ttfts, 99),
                "itl_p50_ms": pct(gaps, 50), "itl_p99_ms": pct(gaps, 99),
                "tokens": tokens, "wall_s": round(wall, 3), "agg_tok_s": tokens / wall if wall else None,
                "per_stream_tok_s": (tokens / n) / wall if wall else None,
                "finish": sorted({r["reason"] for r in runs}), "errors": errors[:3],
            }
            RESULTS["rounds"].append(row)
            say(f"{n:>3} streams: {tokens} tokens in {wall:.1f} s = {row['agg_tok_s']:.0f} tok/s; "
                f"TTFT p50 {row['ttft_p50_ms']:.0f} ms; ITL p50 {row['itl_p50_ms']:.1f} ms")
            write(args)
    finally:
        await engine.close()


# ------------------------------------------------------------------ static-cache baseline
def static_baseline(args: argparse.Namespace, model: Any, tokenizer: Any) -> None:
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):  # type: ignore[misc]
        def __init__(self) -> None:
            self.times: list[float] = []

        def put(self, value: Any) -> None:
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    rng = random.Random(2)
    text = prompt_text(rng, args.prompt_tokens, model.config.vocab_size)
    msgs = [{"role": "user", "content": text}]
    prompt = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)], device=model.device)
    kw = dict(max_new_tokens=args.max_tokens, min_new_tokens=args.max_tokens, do_sample=False,
              cache_implementation="static", pad_token_id=3)
    result: dict[str, Any] = {"prompt_tokens": int(ids.shape[1]), "max_tokens": args.max_tokens}
    for attempt in ("compile+warm-up", "measured"):
        clock = Clock()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, streamer=clock, **kw)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        say(f"static cache, single stream, {attempt}: {wall:.1f} s")
        result[f"{attempt}_s"] = round(wall, 2)
        if time.monotonic() - T0 > args.timeout - 60 and attempt != "measured":
            RESULTS["notes"].append("static baseline: no time left for the measured run")
            RESULTS["static_baseline"] = result
            return
    times = clock.times[1:]  # the first put() is the prompt
    gaps = [(b - a) * 1000.0 for a, b in itertools.pairwise(times)]
    result.update({
        "ttft_ms": (times[0] - t0) * 1000.0 if times else None,
        "itl_p50_ms": pct(gaps, 50), "itl_p99_ms": pct(gaps, 99),
        "tok_s": len(times) / wall if wall else None,
    })
    RESULTS["static_baseline"] = result


# ------------------------------------------------------------------ report
def markdown() -> str:
    env = RESULTS.get("env", {})
    lines = [
        f"GPU worker bench — {env.get('card', '?')} — {env.get('date', '?')} — torch {env.get('torch', '?')}, "
        f"transformers {env.get('transformers', '?')}, model {RESULTS.get('model', {}).get('name', '?')}",
        "",
        "| streams | prompt tok | max tok | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | agg tok/s | tok/s/stream |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(v: Any, d: int = 1) -> str:
        return "-" if v is None else f"{v:,.{d}f}"

    for r in RESULTS["rounds"]:
        lines.append(f"| {r['streams']} | {r['prompt_tokens']} | {r['max_tokens']} | {f(r['ttft_p50_ms'])} | "
                     f"{f(r['ttft_p99_ms'])} | {f(r['itl_p50_ms'])} | {f(r['itl_p99_ms'])} | {f(r['agg_tok_s'], 0)} | "
                     f"{f(r['per_stream_tok_s'])} |")
    s = RESULTS.get("static_baseline")
    if s and "ttft_ms" in s:
        lines.append(f"| 1 (static cache, compiled, `generate`) | {s['prompt_tokens']} | {s['max_tokens']} | "
                     f"{f(s['ttft_ms'])} | - | {f(s['itl_p50_ms'])} | {f(s['itl_p99_ms'])} | {f(s['tok_s'], 0)} | "
                     f"{f(s['tok_s'])} |")
    for note in RESULTS["notes"]:
        lines.append(f"\nNote: {note}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a tiny random Qwen2 instead of the 7B shape")
    p.add_argument("--quick", action="store_true", help="64 tokens per stream, no static baseline")
    p.add_argument("--streams", default="1,8,64")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=None, help="tokens per stream (default 256, quick 64)")
    p.add_argument("--compile-level", type=int, default=0, help="transformers' default_compile_level for CB")
    p.add_argument("--no-static", action="store_true", help="skip the static-cache single-stream baseline")
    p.add_argument("--timeout", type=float, default=450.0, help="watchdog: write partial results and exit 3")
    p.add_argument("--out", default="")
    args = p.parse_args()
    if args.max_tokens is None:
        args.max_tokens = 64 if args.quick else 256
    if args.tiny and args.max_tokens > 64:
        args.max_tokens = 32
    watchdog(args)

    import torch
    import transformers

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu (with --tiny)", file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    RESULTS["env"] = {
        "card": card, "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "device": args.device,
        "command": " ".join(["bench/gpu_worker.py", *sys.argv[1:]]),
    }
    say(f"{card}; torch {torch.__version__}; transformers {transformers.__version__}")
    model, tokenizer, name = build(args)
    asyncio.run(cb_rounds(args, model, tokenizer, name))
    if not args.quick and not args.no_static:
        left = args.timeout - (time.monotonic() - T0)
        if left > 120:
            try:
                static_baseline(args, model, tokenizer)
            except Exception as exc:  # the baseline is optional; keep the CB numbers
                RESULTS["notes"].append(f"static baseline failed: {type(exc).__name__}: {str(exc)[:300]}")
                say(f"static baseline failed: {exc}")
        else:
            RESULTS["notes"].append(f"static baseline skipped: {left:.0f} s left")
    path = write(args)
    print(markdown(), flush=True)
    say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
