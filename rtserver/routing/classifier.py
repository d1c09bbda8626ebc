"""The intent classifier: one int8 ONNX graph (MiniLM-L6 + mean pooling + logistic head).

Artifact layout (``rtserver/models/intent/``, rebuilt by ``python -m rtserver.routing.train``):

* ``intent.onnx``: inputs ``input_ids`` and ``attention_mask`` (int64 ``[batch, seq]``),
  output ``probabilities`` (float32 ``[batch, len(labels)]``).
* ``tokenizer.json``: the base model's WordPiece tokenizer.
* ``labels.json``: the output columns, a permutation of ``USE_CASES``.
* ``cues.json``: the cue lexicon for ``signals.CueLexicon``.
* ``manifest.json``: how and from what the artifact was built, and its validation scores.

Loading needs only onnxruntime, tokenizers and numpy.
"""

from __future__ import annotations

import json
import time
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from rtserver.exceptions import RouteError
from rtserver.routing.contract import Classification
from rtserver.routing.signals import CueLexicon
from rtserver.routing.usecases import USE_CASE_SET

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["DEFAULT_MODEL_DIR", "Classification", "IntentClassifier", "ModelArtifactError"]

DEFAULT_MODEL_DIR: Final = Path(__file__).resolve().parents[1] / "models" / "intent"
MODEL_FILE: Final = "intent.onnx"
TOKENIZER_FILE: Final = "tokenizer.json"
LABELS_FILE: Final = "labels.json"
CUES_FILE: Final = "cues.json"
MANIFEST_FILE: Final = "manifest.json"
DEFAULT_MAX_TOKENS: Final = 128
OUTPUT_NAME: Final = "probabilities"


class ModelArtifactError(RouteError, ValueError):
    """The classifier directory is incomplete or inconsistent (a missing file raises ``FileNotFoundError``)."""



def load_tokenizer(path: Path, max_tokens: int = DEFAULT_MAX_TOKENS) -> Tokenizer:
    """Load ``tokenizer.json`` without padding (it would pad to 128: 8x slower) and truncating to ``max_tokens``."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def make_session(path: Path | bytes) -> ort.InferenceSession:
    """An onnxruntime CPU session on one thread (intra- and inter-op), full graph optimisation."""
    import onnxruntime as ort  # here, not at import: the router's types must not load it

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def encode(tokenizer: Tokenizer, text: str) -> dict[str, npt.NDArray[np.int64]]:
    """Feed for one message: ``input_ids`` and an all-ones ``attention_mask``, shape ``[1, seq]``."""
    ids = np.asarray([tokenizer.encode(text).ids], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


class IntentClassifier:
    """Classifies one message into a use case in about a millisecond.

    ``classify`` is synchronous, blocking and thread-safe (the onnxruntime session
    and the tokenizer are only read); call it from an executor thread, never on
    the event loop. Each call uses one CPU core.
    """

    __slots__ = ("_batch_session", "_model_path", "_output", "_session", "_tokenizer", "labels", "lexicon", "manifest")

    labels: tuple[str, ...]
    lexicon: CueLexicon
    manifest: Mapping[str, object]

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        labels: tuple[str, ...],
        lexicon: CueLexicon,
        manifest: Mapping[str, object] | None = None,
        model_path: Path | None = None,
    ) -> None:
        if set(labels) != USE_CASE_SET or len(labels) != len(USE_CASE_SET):
            raise ModelArtifactError(f"labels {labels} are not a permutation of {sorted(USE_CASE_SET)}")
        outputs = [o.name for o in session.get_outputs()]
        if OUTPUT_NAME not in outputs:
            raise ModelArtifactError(f"model has outputs {outputs}, expected {OUTPUT_NAME!r}")
        self._session = session
        self._tokenizer = tokenizer
        self._output = [OUTPUT_NAME]
        self.labels = labels
        self.lexicon = lexicon
        self.manifest = types.MappingProxyType(dict(manifest or {}))
        self._model_path = model_path
        self._batch_session: ort.InferenceSession | None = None

    @classmethod
    def load(cls, directory: Path | None = None) -> IntentClassifier:
        """Load an artifact directory (default: the shipped ``rtserver/models/intent``)."""
        root = DEFAULT_MODEL_DIR if directory is None else directory
        manifest_path = root / MANIFEST_FILE
        manifest: dict[str, object] = {}
        if manifest_path.exists():
            loaded = json.loads(manifest_path.read_text(encoding="utf-8"))
            if not isinstance(loaded, dict):
                raise ModelArtifactError(f"{manifest_path}: expected a JSON object")
            manifest = loaded
        max_tokens = manifest.get("max_tokens", DEFAULT_MAX_TOKENS)
        if not isinstance(max_tokens, int) or max_tokens < 8:
            raise ModelArtifactError(f"{manifest_path}: max_tokens must be an integer >= 8")
        labels = json.loads((root / LABELS_FILE).read_text(encoding="utf-8"))
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ModelArtifactError(f"{root / LABELS_FILE}: expected a JSON list of use cases")
        try:
            lexicon = CueLexicon.from_file(root / CUES_FILE)
        except ValueError as exc:
            raise ModelArtifactError(str(exc)) from exc
        model_path = root / MODEL_FILE
        if not model_path.exists():
            raise FileNotFoundError(model_path)
        return cls(
            make_session(model_path),
            load_tokenizer(root / TOKENIZER_FILE, max_tokens),
            tuple(labels),
            lexicon,
            manifest,
            model_path,
        )

    def warm_up(self, rounds: int = 3) -> None:
        """Run a few throw-away classifications so the first real one is not slow (call at start-up)."""
        for _ in range(rounds):
            self.classify("warm up the intent classifier")

    def token_count(self, text: str) -> int:
        """How many tokens (with [CLS]/[SEP], after truncation) the model sees for ``text``."""
        return len(self._tokenizer.encode(text).ids)

    def probabilities(self, text: str) -> npt.NDArray[np.float32]:
        """The raw probability row for ``text``, in ``labels`` order."""
        (probs,) = self._session.run(self._output, encode(self._tokenizer, text))
        return np.asarray(probs[0], dtype=np.float32)

    def classify(self, text: str) -> Classification:
        """Classify one message (blocking; 1-10 ms on one core of a 2-core dev container)."""
        start = time.perf_counter()
        row = self.probabilities(text)
        return self._verdict(row, (time.perf_counter() - start) * 1000.0)

    def enable_batches(self) -> bool:
        """Build the batch-safe graph (``batchgraph.per_row_graph``) so ``classify_batch`` runs
        several messages at once; call at start-up. False (batches then run row by row)
        when the classifier was not loaded from a file."""
        if self._batch_session is None and self._model_path is not None:
            from rtserver.routing.batchgraph import per_row_graph

            self._batch_session = make_session(per_row_graph(self._model_path))
        return self._batch_session is not None

    def probabilities_batch(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Probability rows for ``texts`` (``[len(texts), len(labels)]``) from one padded run.

        Each row's label equals ``probabilities(text)``'s: the batch graph quantises every
        row on its own real tokens. Without ``enable_batches`` the rows run one by one.
        """
        if len(texts) == 1 or self._batch_session is None:
            return np.stack([self.probabilities(t) for t in texts])
        encodings = self._tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        (probs,) = self._batch_session.run(self._output, {"input_ids": ids, "attention_mask": mask})
        return np.asarray(probs, dtype=np.float32)

    def classify_batch(self, texts: Sequence[str]) -> list[Classification]:
        """Classify ``texts`` in one run (blocking, thread-safe); ``elapsed_ms`` is the whole run's."""
        start = time.perf_counter()
        rows = self.probabilities_batch(texts)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        return [self._verdict(row, elapsed_ms) for row in rows]

    def _verdict(self, row: npt.NDArray[np.float32], elapsed_ms: float) -> Classification:
        best = int(np.argmax(row))
        probs = types.MappingProxyType({label: float(p) for label, p in zip(self.labels, row.tolist(), strict=True)})
        return Classification(self.labels[best], float(row[best]), probs, elapsed_ms)
