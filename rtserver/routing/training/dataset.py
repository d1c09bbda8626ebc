"""Labelled routing examples: ``{"text": ..., "label": ...}`` JSON lines."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from rtserver.routing.usecases import USE_CASE_SET

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
TRAIN_FILE = DATA_DIR / "train.jsonl"
VAL_FILE = DATA_DIR / "val.jsonl"


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str


def load_examples(path: Path) -> list[Example]:
    """Read ``path``; raise ``ValueError`` naming the line on a malformed record or unknown label."""
    examples: list[Example] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        text, label = record.get("text"), record.get("label")
        if not isinstance(text, str) or not text.strip() or label not in USE_CASE_SET:
            raise ValueError(f"{path}:{number}: expected a non-empty text and a label in {sorted(USE_CASE_SET)}")
        examples.append(Example(text, str(label)))
    return examples


def sha256_of(path: Path) -> str:
    """Hex sha256 of the file's bytes (what ``manifest.json`` records for each data file)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
