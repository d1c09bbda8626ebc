"""Routing benchmark: classifier and router latency, bypass cost and rate, loop lag.

Run from the repository root::

    python bench/routing.py [--out bench/results/routing.json] [--repeat 5]

Prints a table and writes the numbers as JSON. What is measured:

* classifier latency: ``IntentClassifier.classify`` on one thread over every
  validation text, after a warm-up, ``--repeat`` passes;
* full routing: ``Router.route(None, text, ...)`` (first messages, so always a
  model call through a one-thread executor), over the validation texts;
* bypass decision: ``extract_signals`` + ``decide_bypass`` on every follow-up
  turn of ``bench/conversations/*.jsonl``, in microseconds;
* validation macro accuracy of the shipped model;
* bypass rate: share of follow-up turns routed with no model call, and how often
  the route agrees with the scripts' ``expect`` labels;
* event-loop lag: max delay of a 1 ms asyncio ticker while 50 new conversations
  are routed concurrently (classifier in a thread pool), next to the same load
  with the classifier called inline on the loop (what the executor prevents).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtserver.routing.classifier import DEFAULT_MODEL_DIR, IntentClassifier  # noqa: E402
from rtserver.routing.router import Router, RouteState  # noqa: E402
from rtserver.routing.training.dataset import VAL_FILE, load_examples  # noqa: E402
from rtserver.routing.usecases import USE_CASES  # noqa: E402

CONVERSATIONS = ROOT / "bench" / "conversations"
MODELS = {uc: f"{uc}-model" for uc in USE_CASES}
TARGETS = {
    "bypass_p99_us": 20.0,
    "route_p50_ms": 1.5,
    "route_p99_ms": 5.0,
    "val_macro_accuracy": 0.93,
    "bypass_rate": 0.90,
}


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def machine() -> dict[str, object]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def load_conversations() -> dict[str, list[dict[str, object]]]:
    return {
        path.stem: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for path in sorted(CONVERSATIONS.glob("*.jsonl"))
    }


def bench_classifier(
    clf: IntentClassifier, texts: Sequence[str], repeat: int
) -> tuple[list[list[float]], list[list[float]]]:
    """``repeat`` passes over ``texts``: wall and thread-CPU milliseconds, one list per pass.

    With one intra-op thread onnxruntime computes on the calling thread, so its
    CPU time is the classifier's cost even when other processes steal the core.
    """
    for text in texts[:20]:
        clf.classify(text)
    wall: list[list[float]] = []
    cpu: list[list[float]] = []
    for _ in range(repeat):
        w, c = [], []
        for text in texts:
            c0, w0 = time.thread_time(), time.perf_counter()
            clf.classify(text)
            w.append((time.perf_counter() - w0) * 1000.0)
            c.append((time.thread_time() - c0) * 1000.0)
        wall.append(w)
        cpu.append(c)
    return wall, cpu


async def bench_route_first(router: Router, texts: Sequence[str], repeat: int) -> list[list[float]]:
    """Like ``bench_classifier`` for ``Router.route`` on first messages."""
    for text in texts[:20]:
        await router.route(None, text, [], None)
    passes: list[list[float]] = []
    for _ in range(repeat):
        passes.append([(await router.route(None, text, [], None)).route_ms for text in texts])
    return passes


def stats(passes: list[list[float]], qs: Sequence[int]) -> dict[str, float]:
    """Percentiles of every sample, and (``best_*``) of each text's fastest pass.

    On a shared machine the raw numbers include time stolen by other processes;
    the best-of-passes numbers estimate what the code costs on a quiet core.
    """
    flat = [x for p in passes for x in p]
    best = [min(col) for col in zip(*passes, strict=True)]
    out = {f"p{q}": pct(flat, q) for q in qs}
    out.update({f"best_p{q}": pct(best, q) for q in qs})
    return out


async def replay(
    router: Router, conversations: dict[str, list[dict[str, object]]]
) -> tuple[dict[str, object], list[tuple[RouteState, str, list[str]]]]:
    """Route every script; return rates and the (state, text, attachments) of each follow-up turn."""
    follow_ups: list[tuple[RouteState, str, list[str]]] = []
    per_script: dict[str, dict[str, object]] = {}
    total_follow = total_free = total_turns = total_agree = 0
    decisions: dict[str, int] = {"full": 0, "bypass": 0, "reroute": 0}
    for name, turns in conversations.items():
        state: RouteState | None = None
        free = agree = 0
        for turn in turns:
            text = str(turn["text"])
            raw = turn.get("attachments", [])
            attachments = [str(a) for a in raw] if isinstance(raw, list) else []
            if state is not None:
                follow_ups.append((state, text, attachments))
            decision = await router.route(state, text, attachments, None)
            decisions[decision.decision] += 1
            if state is not None and decision.decision == "bypass" and decision.classifier_ms is None:
                free += 1
            agree += decision.use_case == turn.get("expect", decision.use_case)
            state = decision.state
        n_follow = len(turns) - 1
        per_script[name] = {"turns": len(turns), "bypass_rate": round(free / n_follow, 4), "agreement": agree}
        total_follow += n_follow
        total_free += free
        total_turns += len(turns)
        total_agree += agree
    summary: dict[str, object] = {
        "scripts": len(conversations),
        "turns": total_turns,
        "follow_ups": total_follow,
        "bypass_rate": round(total_free / total_follow, 4),
        "route_agreement": round(total_agree / total_turns, 4),
        "decisions": decisions,
        "per_script": per_script,
    }
    return summary, follow_ups


def bench_bypass(router: Router, follow_ups: Sequence[tuple[RouteState, str, list[str]]], rounds: int) -> list[float]:
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for state, text, attachments in follow_ups:
            start = clock()
            router.decide_bypass(state, router.signals(text, attachments, None))
            samples.append((clock() - start) / 1000.0)
    return samples[len(follow_ups) :]  # first round is warm-up


async def loop_lag(router: Router, texts: Sequence[str], inline: IntentClassifier | None) -> float:
    """Max lateness (ms) of a 1 ms ticker while 50 first messages are routed concurrently."""
    stop = asyncio.Event()
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            worst = max(worst, (loop.time() - due) * 1000.0)

    async def one(text: str) -> None:
        if inline is not None:
            inline.classify(text)  # what happens without the executor
            await asyncio.sleep(0)
        else:
            await router.route(None, text, [], None)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    worst = 0.0
    await asyncio.gather(*(one(t) for t in texts[:50]))
    stop.set()
    await task
    return worst


def accuracy(clf: IntentClassifier) -> tuple[float, dict[str, float]]:
    val = load_examples(VAL_FILE)
    per = {uc: float(np.mean([clf.classify(e.text).use_case == uc for e in val if e.label == uc])) for uc in USE_CASES}
    return float(np.mean(list(per.values()))), per


async def run(args: argparse.Namespace) -> dict[str, object]:
    clf = IntentClassifier.load()
    texts = [e.text for e in load_examples(VAL_FILE)]
    conversations = load_conversations()
    classify_ms, classify_cpu_ms = bench_classifier(clf, texts, args.repeat)
    cores = os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="route") as one:
        route_ms = await bench_route_first(Router(clf, MODELS, executor=one), texts, args.repeat)
    with concurrent.futures.ThreadPoolExecutor(max_workers=cores, thread_name_prefix="route") as pool:
        router = Router(clf, MODELS, executor=pool)
        rates, follow_ups = await replay(router, conversations)
        bypass_us = bench_bypass(router, follow_ups, rounds=201)
        lag_inline = await loop_lag(router, texts, clf)
    lag_by_threads: dict[str, float] = {}
    for threads in sorted({1, max(1, cores - 1), cores}):
        with concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="route") as pool:
            sized = Router(clf, MODELS, executor=pool)
            await loop_lag(sized, texts, None)  # warm every pool thread
            lag_by_threads[str(threads)] = await loop_lag(sized, texts, None)
    macro, per_class = accuracy(clf)
    tokens = [clf.token_count(t) for t in texts]
    return {
        "command": "python bench/routing.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "machine": machine(),
        "model": {
            "bytes": (DEFAULT_MODEL_DIR / "intent.onnx").stat().st_size,
            "val_texts": len(texts),
            "val_tokens_p50": pct(tokens, 50),
            "val_tokens_p90": pct(tokens, 90),
        },
        "passes": args.repeat,
        "classifier_ms": stats(classify_ms, (50, 90, 99)),
        "classifier_cpu_ms": stats(classify_cpu_ms, (50, 90, 99)),
        "route_first_ms": stats(route_ms, (50, 90, 99)),
        "bypass_decision_us": {"p50": pct(bypass_us, 50), "p99": pct(bypass_us, 99), "samples": len(bypass_us)},
        "val_macro_accuracy": macro,
        "val_per_class_accuracy": per_class,
        "conversations": rates,
        "loop_lag_ms": {
            "executor_by_threads": lag_by_threads,
            "inline_classifier": lag_inline,
            "concurrent_routes": 50,
        },
        "targets": TARGETS,
    }


def table(r: dict[str, object]) -> str:
    c = r["classifier_ms"]
    cc = r["classifier_cpu_ms"]
    assert isinstance(cc, dict)
    f = r["route_first_ms"]
    b = r["bypass_decision_us"]
    conv = r["conversations"]
    lag = r["loop_lag_ms"]
    m = r["machine"]
    assert isinstance(c, dict) and isinstance(f, dict) and isinstance(b, dict)
    assert isinstance(conv, dict) and isinstance(lag, dict) and isinstance(m, dict)
    acc = float(r["val_macro_accuracy"])  # type: ignore[arg-type]

    def ok(value: float, target: float, higher: bool = False) -> str:
        return "yes" if (value >= target if higher else value <= target) else "NO"

    best = f"best of {r['passes']}"
    rows = [
        (
            "classifier p50 / p90 / p99 (1 thread)",
            f"{c['p50']:.2f} / {c['p90']:.2f} / {c['p99']:.2f} ms",
            "~1 ms p50",
            "",
        ),
        (
            f"  same, {best} passes per text",
            f"{c['best_p50']:.2f} / {c['best_p90']:.2f} / {c['best_p99']:.2f} ms",
            "",
            "",
        ),
        ("  its thread CPU time p50 / p90 / p99", f"{cc['p50']:.2f} / {cc['p90']:.2f} / {cc['p99']:.2f} ms", "", ""),
        (
            "full route p50 / p99 (first message)",
            f"{f['p50']:.2f} / {f['p99']:.2f} ms",
            "1.5 / 5 ms",
            ok(f["p50"], 1.5) + " / " + ok(f["p99"], 5.0),
        ),
        (
            f"  same, {best} passes per text",
            f"{f['best_p50']:.2f} / {f['best_p99']:.2f} ms",
            "1.5 / 5 ms",
            ok(f["best_p50"], 1.5) + " / " + ok(f["best_p99"], 5.0),
        ),
        ("bypass decision p50 / p99", f"{b['p50']:.1f} / {b['p99']:.1f} us", "p99 <= 20 us", ok(b["p99"], 20.0)),
        ("validation macro accuracy", f"{acc:.4f}", ">= 0.93", ok(acc, 0.93, higher=True)),
        (
            f"bypass rate ({conv['follow_ups']} follow-ups, {conv['scripts']} scripts)",
            f"{float(conv['bypass_rate']) * 100:.1f} %",
            ">= 90 %",
            ok(float(conv["bypass_rate"]), 0.90, higher=True),
        ),
        ("route agrees with script labels", f"{float(conv['route_agreement']) * 100:.1f} %", "", ""),
        *[
            (f"loop lag, 50 concurrent routes, {n}-thread pool", f"{v:.2f} ms", "", "")
            for n, v in lag["executor_by_threads"].items()
        ],
        ("loop lag, same load, classifier inline", f"{lag['inline_classifier']:.2f} ms", "(what not to do)", ""),
    ]
    w0 = max(len(x[0]) for x in rows)
    w1 = max(len(x[1]) for x in rows)
    lines = [
        f"command: {r['command']}",
        f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, load average at start {m['loadavg_at_start']}",
        f"date:    {r['date']}",
        "",
        f"{'metric':<{w0}}  {'value':<{w1}}  target          met",
        f"{'-' * w0}  {'-' * w1}  --------------  ---",
    ]
    lines += [f"{a:<{w0}}  {b_:<{w1}}  {t:<14}  {o}" for a, b_, t, o in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "routing.json")
    p.add_argument("--repeat", type=int, default=5, help="passes over the validation texts")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    text = table(result)
    result["table"] = text
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
