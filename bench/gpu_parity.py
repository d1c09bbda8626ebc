"""GPU correctness check of the gpu engine: greedy output against transformers' ``generate``.

A tiny random Qwen2 and Llama on CUDA, in float32 and bf16, with the engine's decode
replayed from CUDA graphs: four prompts of mixed lengths in one batch, then a second
turn served from retained KV. Prints one line per case (tokens matching / total) and
writes bench/results/gpu_parity.json (or ``--out``). float32 must match exactly; bf16
may drift after a near-tie, so its match fraction is reported, not required.

    python bench/gpu_parity.py [--device cuda] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rtserver.engines.base import ChatMessage, GenerateRequest, SamplingParams, TokenEvent  # noqa: E402
from tests.fixtures.tiny_model import SPECIALS, build_tokenizer, tiny_config  # noqa: E402

VOCAB = 512


def model(kind: str, dtype: Any, device: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_config(kind, VOCAB, initializer_range=0.2, tie_word_embeddings=False)
    m = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    with torch.no_grad():
        m.get_output_embeddings().weight[: len(SPECIALS)].zero_()
    m.generation_config.eos_token_id, m.generation_config.pad_token_id = 2, 3
    return m


def request(words: int, start: int, rid: str, key: str | None = None) -> GenerateRequest:
    text = " ".join(f"t{len(SPECIALS) + (start + 13 * j) % (VOCAB - len(SPECIALS))}" for j in range(words))
    return GenerateRequest(rid, (ChatMessage("user", text),), SamplingParams(max_tokens=24, temperature=0.0,
                                                                             repetition_penalty=1.0), conversation=key)


async def case(kind: str, dtype_name: str, device: str) -> dict[str, Any]:
    import torch

    from rtserver.engines.gpu.engine import GpuEngine

    dtype = getattr(torch, dtype_name)
    ref = model(kind, dtype, device)
    eng = GpuEngine.from_objects(model(kind, dtype, device), build_tokenizer(VOCAB), model_id="tiny", capacity=4,
                                 slots=8, max_len=512, prefill_chunk=16)
    await eng.start()

    async def run(r: GenerateRequest) -> tuple[list[str], int]:
        evs = [e async for e in eng.generate(r)]
        return "".join(e.text for e in evs if isinstance(e, TokenEvent)).split(), getattr(evs[-1], "cached_tokens", 0)

    def want(r: GenerateRequest) -> list[str]:
        ids = eng._encode(r)
        with torch.no_grad():
            out = ref.generate(torch.tensor([ids], device=device), max_new_tokens=24, do_sample=False)
        return [f"t{i}" for i in out[0, len(ids):].tolist() if i >= len(SPECIALS)]

    reqs = [request(n, 7 * i, f"m{i}", key=f"k{i}") for i, n in enumerate((3, 37, 90, 200))]
    got = await asyncio.gather(*(run(r) for r in reqs))
    match = total = 0
    for r, (words, _) in zip(reqs, got, strict=True):
        w = want(r)
        total += len(w)
        match += next((i for i, (a, b) in enumerate(zip(words, w, strict=False)) if a != b), min(len(words), len(w)))
    r2 = dataclasses.replace(reqs[2], request_id="turn2", messages=(
        *reqs[2].messages, ChatMessage("assistant", " ".join(got[2][0])), ChatMessage("user", "t40 t41 t42")))
    words2, cached = await run(r2)
    w2 = want(r2)
    match2 = next((i for i, (a, b) in enumerate(zip(words2, w2, strict=False)) if a != b), min(len(words2), len(w2)))
    await eng.close()
    return {"model": kind, "dtype": dtype_name, "batch_tokens_matching": match, "batch_tokens": total,
            "turn2_tokens_matching": match2, "turn2_tokens": len(w2), "turn2_reused": cached,
            "exact": match == total and match2 == len(w2)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_parity.json"))
    args = p.parse_args()
    rows = []
    for kind in ("qwen2", "llama"):
        for dtype in ("float32", "bfloat16"):
            try:
                row = asyncio.run(case(kind, dtype, args.device))
            except Exception as exc:
                row = {"model": kind, "dtype": dtype, "error": f"{type(exc).__name__}: {exc}"[:500]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    ok = all(r.get("exact") for r in rows if r["dtype"] == "float32")
    print("fp32 parity:", "PASS" if ok else "FAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
