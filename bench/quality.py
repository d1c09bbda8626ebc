"""Answer quality: score sampling settings on 47 short prompts with checkable answers.

    python bench/quality.py                                 # start a worker; old defaults vs the card's
    python bench/quality.py --variants old,greedy-1.05,greedy-1.1+sys   # others (see VARIANTS)
    python bench/quality.py --worker unix:/tmp/w.sock       # a running `rtserver worker`
    python bench/quality.py --gateway ws://127.0.0.1:8000/ws  # what a running gateway serves

The prompts and their checks are data: ``bench/quality/prompts.jsonl`` (facts, arithmetic,
one-sentence instructions, tiny code tasks whose unit test runs in a subprocess); the
checks are ``bench/quality_checks.py``. Each prompt is asked alone (a fresh conversation).

Without ``--worker`` or ``--gateway`` it starts one real ``rtserver worker`` process
(``--engine``, ``--model``) on a unix socket and talks to it over the worker wire, so
every variant (system prompt + sampling, see ``VARIANTS``) runs against the same loaded
model in one run. With ``--gateway`` it connects over the client protocol
(``rtserver.client``), one socket per prompt, and scores the gateway's own settings.
Sampled variants use a fixed seed per prompt. Prints a table; writes
bench/results/quality.json (every answer and verdict included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import popen_python, stop, table, wait_line, write_results
from bench.quality_checks import check
from rtserver.engines.base import ChatMessage, FinishEvent, GenerateRequest, SamplingParams, TokenEvent
from rtserver.engines.models import ModelCard, card_for
from rtserver.workers.client import WorkerClient

PROMPTS = Path(__file__).resolve().parent / "quality" / "prompts.jsonl"
CATEGORIES = ("fact", "arithmetic", "instruction", "code")
READY = re.compile(rb"READY (\S+)")
SYSTEM = "Answer briefly and accurately."


@dataclass(frozen=True)
class Variant:
    name: str
    system_prompt: str
    temperature: float
    repetition_penalty: float
    top_p: float = 0.9


VARIANTS = {
    v.name: v
    for v in (
        Variant("old", "", 0.7, 1.15),  # the defaults before 2026-11-30
        Variant("greedy-1.15", "", 0.0, 1.15),
        Variant("greedy-1.05", "", 0.0, 1.05),
        Variant("greedy-1.0+sys", SYSTEM, 0.0, 1.0),
        Variant("greedy-1.05+sys", SYSTEM, 0.0, 1.05),
        Variant("greedy-1.1+sys", SYSTEM, 0.0, 1.1),
    )
}


def card_variant(card: ModelCard) -> Variant:
    """What ships for a model (rtserver/engines/models.py). `--variants card` names it; the table marks it."""
    return Variant("card", card.system_prompt, card.temperature, card.repetition_penalty, card.top_p)


def _same(a: Variant, b: Variant) -> bool:
    greedy = a.temperature == 0 and b.temperature == 0
    return (a.system_prompt, a.temperature, a.repetition_penalty) == (b.system_prompt, b.temperature,
                                                                       b.repetition_penalty) and (
        greedy or a.top_p == b.top_p)


def resolve(name: str, card: Variant) -> Variant:
    if name == "card":
        return next((v for v in VARIANTS.values() if _same(v, card)), card)
    return VARIANTS[name]


Ask = Callable[[dict[str, Any], int], Awaitable[tuple[str, dict[str, Any] | None]]]  # answer, done stats


def load_items(path: Path = PROMPTS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def worker_asker(client: WorkerClient, variant: Variant, max_tokens: int) -> Ask:
    async def ask(item: dict[str, Any], index: int) -> tuple[str, dict[str, Any] | None]:
        messages = [ChatMessage("user", item["prompt"])]
        if variant.system_prompt:
            messages.insert(0, ChatMessage("system", variant.system_prompt))
        params = SamplingParams(max_tokens=max_tokens, temperature=variant.temperature, top_p=variant.top_p,
                                repetition_penalty=variant.repetition_penalty, seed=1000 + index)
        request = GenerateRequest(f"q-{variant.name}-{item['id']}", tuple(messages), params)
        parts: list[str] = []
        async for ev in client.generate(request):
            if isinstance(ev, TokenEvent):
                parts.append(ev.text)
            elif isinstance(ev, FinishEvent) and ev.reason == "error":
                raise RuntimeError(f"{item['id']}: {ev.error}")
        return "".join(parts), None

    return ask


def gateway_asker(url: str) -> Ask:
    from rtserver.client import Client

    async def ask(item: dict[str, Any], index: int) -> tuple[str, dict[str, Any] | None]:
        async with await Client.connect(url) as c:
            turn = await c.ask(item["prompt"], timeout=300.0)
        if turn.errors or turn.done is None:
            raise RuntimeError(f"{item['id']}: {turn.errors}")
        return turn.text, {**turn.done["stats"], "completion_tokens": turn.done["usage"]["completion_tokens"]}

    return ask


async def score(name: str, ask: Ask, items: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)

    async def one(index: int, item: dict[str, Any]) -> dict[str, Any]:
        async with sem:
            answer, stats = await ask(item, index)
        verdict = await asyncio.to_thread(check, item["check"], answer)  # code checks run a subprocess
        return {"id": item["id"], "category": item["category"], "ok": verdict.ok, "why": verdict.why,
                "answer": answer, **({"stats": stats} if stats else {})}

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))
    by_cat = {c: [r["ok"] for r in results if r["category"] == c] for c in CATEGORIES}
    stats = [r["stats"] for r in results if "stats" in r]
    latency = {
        key: statistics.median(float(s[key]) for s in stats if s.get(key) is not None)
        for key in ("ttft_ms", "tokens_per_s", "route_ms", "completion_tokens") if any(s.get(key) is not None for s in stats)
    }
    return {
        "variant": name,
        "passed": sum(r["ok"] for r in results),
        "total": len(results),
        "score": sum(r["ok"] for r in results) / len(results),
        "by_category": {c: {"passed": sum(v), "total": len(v)} for c, v in by_cat.items() if v},
        "seconds": round(time.perf_counter() - t0, 1),
        **({"median_stats": latency, "concurrency": concurrency} if latency else {}),
        "items": results,
    }


async def run_worker(address: str, names: list[str], items: list[dict[str, Any]], args: argparse.Namespace
                     ) -> list[dict[str, Any]]:
    client = WorkerClient(address, heartbeat_timeout_s=60.0, connect_timeout_s=60.0)
    await client.connect()
    try:
        out = []
        for name in names:
            card = card_variant(card_for(args.model))
            variant = resolve(name, card)
            res = await score(variant.name, worker_asker(client, variant, args.max_tokens), items, args.concurrency)
            res["settings"] = dict(variant.__dict__)
            res["shipped"] = _same(variant, card)
            print(f"{variant.name}: {res['passed']}/{res['total']} in {res['seconds']} s", flush=True)
            out.append(res)
        return out
    finally:
        await client.close()


def recheck(path: Path, items: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Scores of stored answers under the current checks (no model needed); the file is updated."""
    data = json.loads(path.read_text())
    results: list[dict[str, Any]] = data["results"]
    for res in results:
        for it in res["items"]:
            verdict = check(items[it["id"]]["check"], it["answer"])
            it["ok"], it["why"] = verdict.ok, verdict.why
        res["passed"] = sum(it["ok"] for it in res["items"])
        res["score"] = res["passed"] / len(res["items"])
        for cat, counts in res["by_category"].items():
            counts["passed"] = sum(it["ok"] for it in res["items"] if it["category"] == cat)
    data["rechecked"] = " ".join(sys.argv[1:])
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    return results


def print_table(results: list[dict[str, Any]]) -> None:
    headers = ["variant", "system prompt", "temp", "rep. penalty", *CATEGORIES, "passed", "score"]
    rows = []
    for r in results:
        s = r.get("settings") or {}
        cats = [f"{r['by_category'][c]['passed']}/{r['by_category'][c]['total']}" if c in r["by_category"] else "-"
                for c in CATEGORIES]
        rows.append([r["variant"] + (" (shipped)" if r.get("shipped") else ""), "yes" if s.get("system_prompt") else ("no" if s else "?"),
                     s.get("temperature", "?"), s.get("repetition_penalty", "?"), *cats,
                     f"{r['passed']}/{r['total']}", f"{r['score']:.0%}"])
    print(table(headers, rows))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="old,card", help=f"comma-separated, of card, {', '.join(VARIANTS)}")
    ap.add_argument("--worker", default="", help="score a running worker at HOST:PORT or unix:PATH")
    ap.add_argument("--gateway", default="", help="score a running gateway at ws://…/ws with its own settings")
    ap.add_argument("--engine", default="openvino")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--limit", type=int, default=0, help="only the first N prompts (a smoke run)")
    ap.add_argument("--out", default="quality", help="result name under bench/results/")
    ap.add_argument("--recheck", default="", help="re-apply the checks to the answers stored in this results file")
    args = ap.parse_args()
    items = load_items()
    if args.limit:
        items = items[: args.limit]
    if args.recheck:
        print_table(recheck(Path(args.recheck), {it["id"]: it for it in items}))
        return 0
    if args.gateway:
        results = [asyncio.run(score("gateway", gateway_asker(args.gateway), items, args.concurrency))]
        target = {"gateway": args.gateway}
        print("median over the prompts (server stats):", results[0].get("median_stats"))
    else:
        names = [n.strip() for n in args.variants.split(",") if n.strip()]
        unknown = [n for n in names if n not in VARIANTS and n != "card"]
        if unknown:
            ap.error(f"unknown variants: {', '.join(unknown)}")
        target = {"engine": args.engine, "model": args.model}
        if args.worker:
            results = asyncio.run(run_worker(args.worker, names, items, args))
        else:
            tmp = tempfile.mkdtemp(prefix="rtq-")
            proc = popen_python(["-m", "rtserver", "worker", "--engine", args.engine, "--model", args.model,
                                 "--listen", f"unix:{tmp}/worker.sock", "--capacity", str(args.concurrency),
                                 "--log-level", "warning"])
            try:
                address = wait_line(proc, READY, 300.0).group(1).decode()
                results = asyncio.run(run_worker(address, names, items, args))
            finally:
                stop(proc)
    print_table(results)
    path = write_results(args.out, {"target": target, "max_tokens": args.max_tokens, "prompts": len(items),
                                    "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
