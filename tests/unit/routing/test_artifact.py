"""The shipped artifact: complete, loadable with onnxruntime + tokenizers, accurate, and built from these data files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtserver.routing.classifier import DEFAULT_MODEL_DIR, IntentClassifier, ModelArtifactError
from rtserver.routing.training.dataset import TRAIN_FILE, VAL_FILE, load_examples, sha256_of
from rtserver.routing.usecases import USE_CASES

MANIFEST = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
# The documented floor for the validation macro accuracy (docs/routing.md): the manifest's
# score less the spread seen across CPUs, and never below the routing target of 0.93.
VAL_MACRO_FLOOR = max(0.93, MANIFEST["metrics"]["val_macro_accuracy"] - 0.02)
ACCEPTANCE = {
    "write a python function to sort a list",
    "now make it handle images instead",
    "back to the python function: add type hints",
    "process this image and describe it",
}


def test_manifest_data_hashes_match_the_data_files() -> None:
    """A stale artifact (data edited, model not retrained) fails here: run `python -m rtserver.routing.train`."""
    assert MANIFEST["data"]["train"]["sha256"] == sha256_of(TRAIN_FILE)
    assert MANIFEST["data"]["val"]["sha256"] == sha256_of(VAL_FILE)


def test_manifest_model_hash_matches_the_model_file() -> None:
    assert MANIFEST["model"]["sha256"] == sha256_of(DEFAULT_MODEL_DIR / "intent.onnx")


def test_data_sets_are_large_disjoint_and_free_of_acceptance_lines() -> None:
    train, val = load_examples(TRAIN_FILE), load_examples(VAL_FILE)
    for uc in USE_CASES:
        assert sum(e.label == uc for e in train) >= 150
        assert sum(e.label == uc for e in val) >= 40
    norm = {e.text.strip().lower().rstrip(".?!") for e in train} | set()
    assert not norm & {e.text.strip().lower().rstrip(".?!") for e in val}
    all_texts = {e.text.strip().lower().rstrip(".") for e in train + val}
    assert not all_texts & ACCEPTANCE


@pytest.mark.model
def test_validation_macro_accuracy_of_shipped_model(shipped: IntentClassifier) -> None:
    val = load_examples(VAL_FILE)
    per_class = []
    for uc in USE_CASES:
        rows = [e for e in val if e.label == uc]
        per_class.append(np.mean([shipped.classify(e.text).use_case == uc for e in rows]))
    macro = float(np.mean(per_class))
    # onnxruntime picks its int8 kernels by CPU, so the score moves with the machine
    # (0.9612 and 0.9741 were both seen; docs/routing.md lists them). A floor, never equality.
    assert macro >= VAL_MACRO_FLOOR


@pytest.mark.model
def test_classification_is_a_distribution_over_the_five_use_cases(shipped: IntentClassifier) -> None:
    result = shipped.classify("")
    assert set(result.probabilities) == set(USE_CASES) == set(shipped.labels)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.confidence == max(result.probabilities.values())
    assert result.use_case in USE_CASES and result.elapsed_ms > 0
    long = shipped.classify("word " * 2000)  # truncated, not rejected
    assert long.use_case in USE_CASES


def test_shipped_files_and_size() -> None:
    for name in ("intent.onnx", "tokenizer.json", "labels.json", "cues.json", "manifest.json"):
        assert (DEFAULT_MODEL_DIR / name).is_file(), name
    assert 15e6 < (DEFAULT_MODEL_DIR / "intent.onnx").stat().st_size < 30e6
    assert json.loads((DEFAULT_MODEL_DIR / "labels.json").read_text()) == list(USE_CASES)
    assert MANIFEST["pipeline"]["quantisation"]["per_channel"] is True


def test_incomplete_artifact_directory_fails_loudly(tmp_path: Path) -> None:
    for name in ("tokenizer.json", "cues.json", "manifest.json"):
        (tmp_path / name).write_bytes((DEFAULT_MODEL_DIR / name).read_bytes())
    (tmp_path / "labels.json").write_text(json.dumps(["chat", "agent"]))
    with pytest.raises(FileNotFoundError):
        IntentClassifier.load(tmp_path)
    (tmp_path / "intent.onnx").write_bytes((DEFAULT_MODEL_DIR / "intent.onnx").read_bytes())
    with pytest.raises(ModelArtifactError, match="permutation"):
        IntentClassifier.load(tmp_path)
