"""GPU worker benchmark: the ``gpu`` engine against today's ``transformers`` engine, one run.

Random weights in the shape of Qwen2.5-7B (a ``Qwen2Config`` built here, bf16 on the GPU;
nothing is downloaded) and a word-level tokenizer covering every id. Workload (issue 13):

* single stream: one conversation with a 1k-token history, a 256-token answer;
* turn 1: 64 conversations arrive one every ``--arrival-ms``, each with a 1k-token
  history (earlier user/assistant turns), each answering 256 tokens;
* turn 2: the same 64 conversations come back (their answer + a short new question),
  on the same engine with their retained KV, then the same prompts cold (no key);
  and, unloaded, 8 conversations one at a time, retained vs cold (the TTFT ratio);
* baseline: turn 1 again on ``TransformersEngine`` (transformers continuous batching),
  bounded by ``--baseline-s``.

Sampling is the wire's default (temperature 0.7, top-p 0.9, repetition penalty 1.15).
TTFT is submit → first token; ITL the gap between token events per token.

    python bench/gpu_worker.py                          # the real run (CUDA, < 8 min)
    python bench/gpu_worker.py --tiny --device cpu      # CPU smoke test of this script

Prints progress to stderr and a markdown table to stdout; writes bench/results/gpu_worker.json
(``--tiny``: gpu_worker_tiny.json). A watchdog writes what was measured and exits 3 after
``--timeout`` s. Imports only torch, transformers, tokenizers and rtserver's engine modules.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import gc
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

RESULTS: dict[str, Any] = {"benchmark": "gpu_worker", "phases": {}, "targets": {}, "notes": []}
T0 = time.monotonic()
TARGETS = {"agg_tok_s": (">=", 5000.0), "itl_p50_ms": ("<=", 13.0), "itl_p99_ms": ("<=", 30.0),
           "ttft_p50_ms": ("<=", 100.0), "single_tok_s": (">=", 150.0), "turn2_ttft_ratio": ("<=", 0.5)}


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
    RESULTS["targets"] = targets()
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


# ------------------------------------------------------------------ model and prompts
def build(args: argparse.Namespace) -> tuple[Any, Any, str]:
    import torch
    from transformers import AutoModelForCausalLM

    if args.tiny:
        config, name = tiny_config("qwen2", 512, tie_word_embeddings=False, initializer_range=0.2), "tiny-qwen2-random"
    else:
        config, name = tiny_config("qwen2", **QWEN25_7B), "qwen2.5-7b-shape-random"
    config._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    say(f"building {name} ({config.num_hidden_layers} layers, hidden {config.hidden_size}) on {args.device} in {dtype}")
    t = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    with torch.no_grad():  # special ids get logit 0 so sampling rarely ends a stream early
        model.get_output_embeddings().weight[: len(SPECIALS)].zero_()
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 3
    params = sum(p.numel() for p in model.parameters())
    RESULTS["model"] = {"name": name, "params": params, "dtype": str(dtype), "init_s": round(time.perf_counter() - t, 1)}
    say(f"model ready: {params / 1e9:.2f} B parameters in {time.perf_counter() - t:.1f} s")
    tokenizer = build_tokenizer(config.vocab_size)
    return model, tokenizer, name


def words(rng: random.Random, n: int, vocab: int) -> str:
    return " ".join(f"t{rng.randrange(len(SPECIALS), vocab)}" for _ in range(n))


def history(rng: random.Random, tokens: int, vocab: int) -> tuple[ChatMessage, ...]:
    """Earlier turns totalling about ``tokens`` tokens (3 template tokens a message, 2 for the prompt)."""
    turns = 4
    per = max(1, (tokens - 2) // turns - 3)
    roles = ("user", "assistant")
    msgs = [ChatMessage(roles[i % 2], words(rng, per, vocab)) for i in range(turns - 1)]  # type: ignore[arg-type]
    return (*msgs, ChatMessage("user", words(rng, per, vocab)))


# ------------------------------------------------------------------ driving an engine
async def one(engine: Any, req: GenerateRequest, started: float | None = None) -> dict[str, Any]:
    t0 = started if started is not None else time.perf_counter()
    times: list[float] = []
    counts: list[int] = []
    text: list[str] = []
    finish: FinishEvent | None = None
    async for ev in engine.generate(req):
        if isinstance(ev, TokenEvent):
            times.append(time.perf_counter())
            counts.append(ev.tokens)
            text.append(ev.text)
        else:
            finish = ev
    gaps = [(b - a) * 1000.0 / max(1, c) for a, b, c in zip(times, times[1:], counts[1:], strict=False)]
    return {
        "t0": t0, "first": times[0] if times else None, "end": time.perf_counter(),
        "ttft_ms": (times[0] - t0) * 1000.0 if times else None, "gaps_ms": gaps, "times": times, "counts": counts,
        "tokens": finish.completion_tokens if finish else sum(counts), "reason": finish.reason if finish else "cut",
        "error": finish.error if finish else None, "cached": finish.cached_tokens if finish else 0,
        "prompt": finish.prompt_tokens if finish else 0, "text": "".join(text), "rid": req.request_id,
    }


async def wave(engine: Any, reqs: list[GenerateRequest], arrival_s: float, limit_s: float | None = None) -> dict[str, Any]:
    """Submit ``reqs`` one every ``arrival_s``; summarise when all end (or cut them at ``limit_s``)."""
    start = time.perf_counter()

    async def later(i: int, req: GenerateRequest) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start + i * arrival_s - time.perf_counter()))
        return await one(engine, req)

    tasks = [asyncio.create_task(later(i, r)) for i, r in enumerate(reqs)]
    done, pending = await asyncio.wait(tasks, timeout=limit_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    runs = [t.result() for t in tasks if t in done and not t.cancelled() and t.exception() is None]
    end = max((r["end"] for r in runs), default=time.perf_counter()) if not pending else time.perf_counter()
    tokens = sum(r["tokens"] for r in runs)
    # tokens of cut streams count too (what they streamed before the cut)
    wall = end - start
    stamps = sorted(t for r in runs for t in r["times"])
    peak = 0
    j = 0
    for i, t in enumerate(stamps):  # most token events in any 1 s window
        while stamps[j] < t - 1.0:
            j += 1
        peak = max(peak, i - j + 1)
    ttfts = [r["ttft_ms"] for r in runs if r["ttft_ms"] is not None]
    gaps = [g for r in runs for g in r["gaps_ms"]]
    return {
        "requests": len(reqs), "finished": len(runs), "cut": len(pending),
        "prompt_tokens_p50": pct([r["prompt"] for r in runs], 50), "tokens": tokens, "wall_s": round(wall, 3),
        "agg_tok_s": tokens / wall if wall else None, "peak_1s_tok_s": float(peak),
        "ttft_p50_ms": pct(ttfts, 50), "ttft_p99_ms": pct(ttfts, 99),
        "itl_p50_ms": pct(gaps, 50), "itl_p99_ms": pct(gaps, 99),
        "cached_p50": pct([r["cached"] for r in runs], 50),
        "finish": sorted({r["reason"] for r in runs}), "errors": sorted({r["error"] for r in runs if r["error"]})[:3],
        "_runs": runs,
    }


def public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


async def gpu_phases(args: argparse.Namespace, model: Any, tokenizer: Any, name: str) -> None:
    from rtserver.engines.gpu.engine import GpuEngine

    vocab = model.config.vocab_size
    t = time.perf_counter()
    engine = GpuEngine.from_objects(model, tokenizer, model_id=name, capacity=args.conversations,
                                    slots=2 * args.conversations, max_len=args.max_len,
                                    prefill_chunk=args.chunk, decode_mode=args.mode)
    await engine.start()
    runner = engine.runner
    RESULTS["gpu_engine"] = {"start_s": round(time.perf_counter() - t, 1), "mode": runner.mode if runner else "?",
                             "slots": 2 * args.conversations, "max_len": args.max_len, "prefill_chunk": args.chunk}
    say(f"gpu engine started in {time.perf_counter() - t:.1f} s ({RESULTS['gpu_engine']['mode']})")
    params = SamplingParams(max_tokens=args.answer)
    rng = random.Random(1)
    try:
        # single stream
        req = GenerateRequest("single", history(rng, args.history, vocab), params)
        r = await one(engine, req)
        decode_s = (r["end"] - r["first"]) if r["first"] else 0.0
        RESULTS["phases"]["gpu_single"] = {
            "prompt_tokens": r["prompt"], "tokens": r["tokens"], "ttft_ms": r["ttft_ms"],
            "tok_s": (r["tokens"] - 1) / decode_s if decode_s else None,
            "itl_p50_ms": pct(r["gaps_ms"], 50), "itl_p99_ms": pct(r["gaps_ms"], 99),
        }
        say(f"single stream: {RESULTS['phases']['gpu_single']['tok_s']:.0f} tok/s, TTFT {r['ttft_ms']:.0f} ms")
        write(args)
        # turn 1: conversations arriving continuously
        hist = [history(rng, args.history, vocab) for _ in range(args.conversations)]
        turn1 = [GenerateRequest(f"c{i}-t1", hist[i], params, conversation=f"conv-{i}")
                 for i in range(args.conversations)]
        before = dict(engine._sched.profile) if engine._sched is not None else {}
        w1 = await wave(engine, turn1, args.arrival_ms / 1000.0)
        RESULTS["phases"]["gpu_turn1"] = public(w1)
        if engine._sched is not None:  # where the step thread's time went during turn 1
            RESULTS["phases"]["gpu_turn1"]["profile"] = {k: v - before.get(k, 0) for k, v in engine._sched.profile.items()}
        say(f"turn 1: {w1['agg_tok_s']:.0f} tok/s (peak 1 s {w1['peak_1s_tok_s']:.0f}); TTFT p50 "
            f"{w1['ttft_p50_ms']:.0f} ms; ITL p50/p99 {w1['itl_p50_ms']:.1f}/{w1['itl_p99_ms']:.1f} ms")
        write(args)
        # turn 2, loaded: retained KV, then the same prompts cold
        answers = {x["rid"]: x["text"] for x in w1["_runs"]}
        turn2 = [GenerateRequest(f"c{i}-t2", (*hist[i], ChatMessage("assistant", answers.get(f"c{i}-t1", "")),
                                               ChatMessage("user", words(rng, args.question, vocab))),
                                 params, conversation=f"conv-{i}") for i in range(args.conversations)]
        iso = min(8, args.conversations // 2)  # these come back one at a time, the rest under load
        w2 = await wave(engine, turn2[iso:], args.arrival_ms / 1000.0)
        RESULTS["phases"]["gpu_turn2_retained"] = public(w2)
        cold = [dataclasses.replace(r_, request_id=r_.request_id + "-cold", conversation=None) for r_ in turn2[iso:]]
        w2c = await wave(engine, cold, args.arrival_ms / 1000.0)
        RESULTS["phases"]["gpu_turn2_cold"] = public(w2c)
        say(f"turn 2 loaded: TTFT p50 retained {w2['ttft_p50_ms']:.0f} ms (reused p50 {w2['cached_p50']}) "
            f"vs cold {w2c['ttft_p50_ms']:.0f} ms")
        write(args)
        # turn 2, unloaded: one at a time, retained then cold
        warm_ms, cold_ms, reused = [], [], []
        for r_ in turn2[:iso]:
            a = await one(engine, r_)
            b = await one(engine, dataclasses.replace(r_, request_id=r_.request_id + "-cold", conversation=None))
            warm_ms.append(a["ttft_ms"])
            cold_ms.append(b["ttft_ms"])
            reused.append(a["cached"])
        RESULTS["phases"]["gpu_turn2_single"] = {
            "conversations": iso, "prompt_tokens_p50": pct([float(len(engine._encode(x))) for x in turn2[:iso]], 50),
            "reused_tokens_p50": pct([float(x) for x in reused], 50),
            "ttft_retained_p50_ms": pct(warm_ms, 50), "ttft_cold_p50_ms": pct(cold_ms, 50),
            "ratio": (pct(warm_ms, 50) or 0) / (pct(cold_ms, 50) or 1),
        }
        RESULTS["gpu_engine"]["kv"] = dataclasses.asdict(engine.kv_stats())
        if engine._sched is not None:
            RESULTS["gpu_engine"]["profile"] = dict(engine._sched.profile)
        say(f"turn 2 one at a time: retained {pct(warm_ms, 50):.0f} ms vs cold {pct(cold_ms, 50):.0f} ms")
        write(args)
    finally:
        await engine.close()


async def baseline(args: argparse.Namespace, model: Any, tokenizer: Any, name: str, limit_s: float) -> None:
    from rtserver.engines.transformers import TransformersEngine

    t = time.perf_counter()
    engine = TransformersEngine.from_objects(model, tokenizer, model_id=name, capacity=args.conversations,
                                             max_new_tokens=args.answer)
    await engine.start()
    say(f"transformers engine started in {time.perf_counter() - t:.1f} s")
    rng = random.Random(1)
    vocab = model.config.vocab_size
    history(rng, args.history, vocab)  # the single-stream prompt of the gpu run: same turn-1 prompts follow
    reqs = [GenerateRequest(f"b{i}", history(rng, args.history, vocab), SamplingParams(max_tokens=args.answer))
            for i in range(args.conversations)]
    try:
        w = await wave(engine, reqs, args.arrival_ms / 1000.0, limit_s=limit_s)
    finally:
        await engine.close()
    RESULTS["phases"]["transformers_turn1"] = public(w)
    if w["cut"]:
        RESULTS["notes"].append(f"baseline: {w['cut']} of {w['requests']} streams cut at {limit_s:.0f} s "
                                "(their tokens are not counted; tok/s is over the cut wall time)")
    say(f"baseline turn 1: {w['agg_tok_s']:.0f} tok/s; TTFT p50 {w['ttft_p50_ms'] or 0:.0f} ms; "
        f"ITL p50 {w['itl_p50_ms'] or 0:.1f} ms")


# ------------------------------------------------------------------ report
def targets() -> dict[str, Any]:
    ph = RESULTS["phases"]
    t1, single, t2 = ph.get("gpu_turn1", {}), ph.get("gpu_single", {}), ph.get("gpu_turn2_single", {})
    got = {"agg_tok_s": t1.get("agg_tok_s"), "itl_p50_ms": t1.get("itl_p50_ms"), "itl_p99_ms": t1.get("itl_p99_ms"),
           "ttft_p50_ms": t1.get("ttft_p50_ms"), "single_tok_s": single.get("tok_s"), "turn2_ttft_ratio": t2.get("ratio")}
    out = {}
    for k, (op, goal) in TARGETS.items():
        v = got[k]
        met = None if v is None else (v >= goal if op == ">=" else v <= goal)
        out[k] = {"measured": v, "target": f"{op} {goal:g}", "met": met}
    base = ph.get("transformers_turn1", {})
    if base.get("agg_tok_s") and t1.get("agg_tok_s"):
        out["vs_transformers_agg_tok_s_ratio"] = t1["agg_tok_s"] / base["agg_tok_s"]
    return out


def markdown() -> str:
    env = RESULTS.get("env", {})
    lines = [f"GPU worker bench: {env.get('card', '?')}, {env.get('date', '?')}, torch {env.get('torch', '?')}, "
             f"transformers {env.get('transformers', '?')}, {RESULTS.get('model', {}).get('name', '?')}", "",
             "| phase | streams | prompt tok p50 | tokens | agg tok/s | peak 1 s tok/s | TTFT p50 ms | TTFT p99 ms | "
             "ITL p50 ms | ITL p99 ms | reused p50 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def f(v: Any, d: int = 1) -> str:
        return "-" if v is None else f"{v:,.{d}f}"

    for key, row in RESULTS["phases"].items():
        if "agg_tok_s" in row:
            lines.append(f"| {key} | {row['requests']} | {f(row['prompt_tokens_p50'], 0)} | {row['tokens']} | "
                         f"{f(row['agg_tok_s'], 0)} | {f(row['peak_1s_tok_s'], 0)} | {f(row['ttft_p50_ms'])} | "
                         f"{f(row['ttft_p99_ms'])} | {f(row['itl_p50_ms'])} | {f(row['itl_p99_ms'])} | "
                         f"{f(row['cached_p50'], 0)} |")
    s = RESULTS["phases"].get("gpu_single")
    if s:
        lines.append(f"| gpu_single | 1 | {s['prompt_tokens']} | {s['tokens']} | {f(s['tok_s'], 0)} | - | "
                     f"{f(s['ttft_ms'])} | - | {f(s['itl_p50_ms'])} | {f(s['itl_p99_ms'])} | - |")
    s2 = RESULTS["phases"].get("gpu_turn2_single")
    if s2:
        lines.append(f"\nTurn 2 one at a time ({s2['conversations']} conversations): TTFT p50 retained "
                     f"{f(s2['ttft_retained_p50_ms'])} ms (reused {f(s2['reused_tokens_p50'], 0)} of "
                     f"{f(s2['prompt_tokens_p50'], 0)} tokens) vs cold {f(s2['ttft_cold_p50_ms'])} ms: "
                     f"ratio {f(s2['ratio'], 3)}")
    lines += ["", "| target | measured | goal | met |", "|---|---:|---|---|"]
    for k, v in targets().items():
        if isinstance(v, dict):
            lines.append(f"| {k} | {f(v['measured'], 2)} | {v['target']} | {v['met']} |")
        else:
            lines.append(f"| {k} | {f(v, 2)} | - | - |")
    lines += [f"\nNote: {n}" for n in RESULTS["notes"]]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a tiny random Qwen2 and a small workload (CPU smoke test)")
    p.add_argument("--conversations", type=int, default=64)
    p.add_argument("--history", type=int, default=1024, help="tokens of history per conversation")
    p.add_argument("--answer", type=int, default=256, help="tokens per answer")
    p.add_argument("--question", type=int, default=32, help="words of the turn-2 question")
    p.add_argument("--arrival-ms", type=float, default=30.0, help="gap between conversation arrivals")
    p.add_argument("--max-len", type=int, default=2048, help="KV positions per slot")
    p.add_argument("--chunk", type=int, default=512, help="prefill chunk while others decode")
    p.add_argument("--mode", default="graphs", choices=("graphs", "compile", "eager"))
    p.add_argument("--baseline-s", type=float, default=150.0, help="time bound of the transformers baseline")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--timeout", type=float, default=450.0, help="watchdog: write partial results and exit 3")
    p.add_argument("--out", default="")
    args = p.parse_args()
    if args.tiny:
        RESULTS["notes"].append("--tiny: a smoke test of this script; the targets apply to the 7B run on a GPU only")
        args.conversations, args.history, args.answer, args.question = 6, 48, 12, 4
        args.arrival_ms, args.max_len, args.chunk, args.baseline_s = 5.0, 256, 16, 60.0
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
    RESULTS["workload"] = {k: getattr(args, k) for k in ("conversations", "history", "answer", "question",
                                                          "arrival_ms", "max_len", "chunk", "mode")}
    say(f"{card}; torch {torch.__version__}; transformers {transformers.__version__}")
    model, tokenizer, name = build(args)
    asyncio.run(gpu_phases(args, model, tokenizer, name))
    gc.collect()  # the gpu engine's weights, KV cache and graphs go before the baseline sizes its cache
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
        RESULTS["gpu_memory_after_gpu_engine_gib"] = round(torch.cuda.memory_allocated() / 2**30, 1)
    if not args.no_baseline:
        left = args.timeout - (time.monotonic() - T0) - 40.0
        if left > 30:
            try:
                asyncio.run(baseline(args, model, tokenizer, name, min(args.baseline_s, left)))
            except Exception as exc:  # keep the gpu numbers
                RESULTS["notes"].append(f"baseline failed: {type(exc).__name__}: {str(exc)[:300]}")
                say(f"baseline failed: {exc}")
        else:
            RESULTS["notes"].append(f"baseline skipped: {left:.0f} s left")
    path = write(args)
    print(markdown(), flush=True)
    say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
