"""``rtserver route TEXT [--json] [--image]``: route one message and print the verdict.

Also runnable alone: ``python -m rtserver.routing.cli "text"``. Runs the real
``Router`` (so ``--image`` applies the media rule) on a fresh conversation, after
a warm-up, and reports the steady-state time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rtserver.routing.classifier import IntentClassifier
from rtserver.routing.router import RouteDecision, Router
from rtserver.routing.usecases import USE_CASES


def build_parser(prog: str = "rtserver route") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Classify one message into a use case.")
    p.add_argument("text", metavar="TEXT", help="the message to route")
    p.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    p.add_argument("--image", action="store_true", help="treat the message as carrying an image attachment")
    p.add_argument("--model-dir", type=Path, default=None, help="classifier artifact (default: the shipped one)")
    return p


async def _route(router: Router, text: str, attachments: Sequence[str]) -> RouteDecision:
    for _ in range(3):  # warm the executor thread and onnxruntime on the same path
        await router.route(None, text, [], None)
    return await router.route(None, text, attachments, None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status (0 on success, 2 on usage errors)."""
    args = build_parser().parse_args(argv)
    try:
        classifier = IntentClassifier.load(args.model_dir)
    except (OSError, ValueError) as exc:
        print(f"error: cannot load the classifier: {exc}", file=sys.stderr)
        return 1
    router = Router(classifier, {uc: uc for uc in USE_CASES})
    attachments = ["image"] if args.image else []
    decision = asyncio.run(_route(router, args.text, attachments))
    probabilities = dict(classifier.classify(args.text).probabilities)
    if args.json:
        doc = {
            "use_case": decision.use_case,
            "confidence": round(decision.confidence, 4),
            "probabilities": {k: round(v, 4) for k, v in probabilities.items()},
            "classifier_ms": None if decision.classifier_ms is None else round(decision.classifier_ms, 3),
            "route_ms": round(decision.route_ms, 3),
            "cues": sorted(router.signals(args.text, attachments, None).cues),
            "attachments": attachments,
        }
        print(json.dumps(doc))
        return 0
    basis = "media rule" if decision.classifier_ms is None else f"classifier {decision.classifier_ms:.2f} ms"
    print(f"{decision.use_case}  confidence {decision.confidence:.3f}  route {decision.route_ms:.2f} ms ({basis})")
    ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])
    print("  " + "  ".join(f"{k} {v:.3f}" for k, v in ranked))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
