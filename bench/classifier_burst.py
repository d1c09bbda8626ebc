"""Classifier under a burst of new conversations: batch sizes, windows, and the bounded queue.

    python bench/classifier_burst.py [--rate 500] [--seconds 2] [--repeat 3]

In one process, with the shipped int8 classifier (no sockets; the gateway adds its own
costs on top, see bench/gateway_overhead.py):

* ``batch cost``: ``classify_batch`` per message at batch sizes 1-16 over the validation
  texts, in arrival order (padded to the longest) and sorted by length (length bucketing);
  min over ``--repeat`` passes.
* ``burst``: ``--rate`` first messages per second (Poisson arrivals, fixed seed) for
  ``--seconds``, each through ``Router.route`` as a new conversation. Configurations, in
  alternation within one run: ``legacy`` (one thread, an unbounded executor queue: the
  router before arrival batching) and several ``ClassifierBatcher`` settings. Reported:
  time from arrival to routing decision (p50/p99/max, ms), the share of decisions
  ``"fast"`` (queue full, or a predicted or real wait past ``max_wait``), the batch sizes seen, and whether
  every classified message got the label ``classify`` gives it alone.

Results: bench/results/classifier_burst.json.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import table, write_results
from loadtest.report import percentile
from rtserver.routing.batching import BatchSettings
from rtserver.routing.classifier import IntentClassifier
from rtserver.routing.router import Router
from rtserver.routing.training.dataset import VAL_FILE, load_examples
from rtserver.routing.usecases import USE_CASES

MODELS = {uc: f"{uc}-model" for uc in USE_CASES}


def batch_costs(clf: IntentClassifier, texts: list[str], repeat: int) -> list[list[Any]]:
    rows = []
    by_len = sorted(texts, key=clf.token_count)
    for size in (1, 2, 4, 8, 16):
        best: dict[str, float] = {}
        for name, order in (("arrival", texts), ("bucketed", by_len)):
            for _ in range(repeat):
                t = time.perf_counter()
                for i in range(0, len(order), size):
                    clf.classify_batch(order[i:i + size])
                per = (time.perf_counter() - t) * 1000.0 / len(order)
                best[name] = min(best.get(name, float("inf")), per)
        rows.append([size, round(best["arrival"], 3), round(best["bucketed"], 3)])
    return rows


async def burst(clf: IntentClassifier, texts: list[str], arrivals: list[float], batching: BatchSettings | None,
                expected: dict[str, str]) -> dict[str, Any]:
    threads = 1 if batching is None else batching.threads
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="classifier") as pool:
        router = Router(clf, MODELS, executor=pool, batching=batching)
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        decisions: dict[str, int] = {}
        wrong = 0

        async def one(text: str, at: float) -> None:
            nonlocal wrong
            d = await router.route(None, text, [], None)
            latencies.append((loop.time() - at) * 1000.0)
            decisions[d.decision] = decisions.get(d.decision, 0) + 1
            if d.decision == "full" and d.use_case != expected[text]:
                wrong += 1

        start = loop.time()
        tasks = []
        for i, offset in enumerate(arrivals):
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(texts[i % len(texts)], loop.time())))
        await asyncio.gather(*tasks)
        b = router.batcher
        sizes = {} if b is None else dict(sorted(b.stats.sizes.items()))
        shed = {} if b is None else {"full": b.stats.shed_full, "predicted": b.stats.shed_predicted,
                                     "late": b.stats.shed_late}
    n = len(latencies)
    return {
        "n": n,
        "p50_ms": round(percentile(latencies, 0.5) or 0.0, 3),
        "p99_ms": round(percentile(latencies, 0.99) or 0.0, 3),
        "max_ms": round(max(latencies), 3),
        "fast_share": round(decisions.get("fast", 0) / n, 4),
        "decisions": decisions,
        "batch_sizes": sizes,
        "shed": shed,
        "labels_changed": wrong,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=500.0, help="new conversations per second")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--queue", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=20.0)
    args = p.parse_args(argv)

    clf = IntentClassifier.load()
    clf.enable_batches()
    clf.warm_up()
    texts = [e.text for e in load_examples(VAL_FILE)]
    expected = {t: clf.classify(t).use_case for t in texts}
    cost_rows = batch_costs(clf, texts, args.repeat)
    print(table(["batch", "ms/msg arrival order", "ms/msg length-bucketed"], cost_rows))

    rng = random.Random(7)
    arrivals, t = [], 0.0
    while t < args.seconds:
        arrivals.append(t)
        t += rng.expovariate(args.rate)
    cores = os.cpu_count() or 1
    configs: dict[str, BatchSettings | None] = {"legacy (1 thread, unbounded)": None}
    for threads in sorted({1, max(1, min(4, cores // 2)), min(2, cores)}):
        for size, window in ((1, 0.0), (4, 0.0), (8, 0.0), (8, 2.0)):
            configs[f"batch {size} window {window:g} ms threads {threads}"] = BatchSettings(
                max_batch=size, window_s=window / 1000.0, queue_limit=args.queue,
                max_wait_s=args.max_wait_ms / 1000.0, threads=threads)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for rep in range(args.repeat):
        for name, batching in configs.items():
            res = asyncio.run(burst(clf, texts, arrivals, batching, expected))
            results[name].append(res)
            print(f"run {rep + 1}/{args.repeat} {name}: p99 {res['p99_ms']} ms fast {res['fast_share']}",
                  file=sys.stderr, flush=True)
    rows = []
    for name, runs in results.items():
        mid = sorted(runs, key=lambda r: r["p99_ms"])[len(runs) // 2]
        rows.append([name, mid["p50_ms"], mid["p99_ms"], mid["max_ms"], mid["fast_share"],
                     sum(r["labels_changed"] for r in runs), mid["batch_sizes"], mid["shed"]])
    print(table(["config", "p50 ms", "p99 ms", "max ms", "fast share", "labels changed", "batch sizes", "shed"],
                rows))
    print(f"(arrival to routing decision; {len(arrivals)} new conversations at {args.rate:g}/s; median run of "
          f"{args.repeat} by p99; queue {args.queue}, max wait {args.max_wait_ms:g} ms)")
    path = write_results("classifier_burst", {
        "params": vars(args), "batch_cost_ms_per_message": cost_rows, "burst": results,
    })
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
