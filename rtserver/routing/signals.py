"""Cheap per-message routing signals: modalities, cue classes and a context key.

Everything here is pure and runs in microseconds: no model, no I/O, no asyncio.
``extract_signals`` is called on every message of every conversation, so the
hot path is a regex split plus two dict look-ups per word.

Text normalisation (shared with the training-time cue miner, so both sides
agree on what a "word" is): lowercase, split into ``[a-z0-9]+`` runs (an
apostrophe joins a word to its suffix, which is then dropped: ``what's`` ->
``what``), fold a plural ``s`` on words longer than three letters (``images``
-> ``image``, not ``ss``), and add the pseudo-word ``<expr>`` once for text that
contains an arithmetic expression such as ``3x + 7 = 22`` or ``2^10`` (dates
like ``03/11/2024`` do not count).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rtserver.routing.usecases import USE_CASE_SET

__all__ = [
    "EXPR_TOKEN",
    "CueLexicon",
    "Signals",
    "context_key",
    "extract_signals",
    "modality_of",
    "normalise_words",
]

EXPR_TOKEN: Final = "<expr>"
OVERRIDE_KEY: Final = "use_case"

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_DATE = re.compile(r"\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}")
_EXPR = re.compile(r"[0-9a-z)\]]\s*[+*/^=]\s*[0-9(\[]|[0-9)]\s+-\s+[0-9(a-z]")

_IMAGE_KINDS: Final = frozenset({"image", "photo", "picture", "screenshot", "drawing", "img"})
_AUDIO_KINDS: Final = frozenset({"audio", "voice", "sound", "speech", "video", "recording"})
_TEXT: Final = frozenset({"text"})
_EMPTY: Final[frozenset[str]] = frozenset()


def _fold(word: str) -> str:
    if "'" in word:
        word = word.split("'", 1)[0]
    if len(word) > 3 and word[-1] == "s" and word[-2] != "s":
        return word[:-1]
    return word


def normalise_words(text: str) -> list[str]:
    """Return the normalised words of ``text`` (see the module docstring), in order."""
    lowered = text.lower()
    words = [
        w if (len(w) <= 3 or w[-1] != "s" or w[-2] == "s") and "'" not in w else _fold(w)
        for w in _WORD.findall(lowered)
    ]
    if _has_operator(lowered) and _EXPR.search(_DATE.sub(" ", lowered)) is not None:
        words.append(EXPR_TOKEN)
    return words


def _has_operator(lowered: str) -> bool:
    # Cheap pre-check: the expression regex is ~10x slower than these scans.
    return "=" in lowered or "+" in lowered or "/" in lowered or "*" in lowered or "^" in lowered or " - " in lowered


def modality_of(kind: str) -> str:
    """Map an attachment kind (``"image"``, ``"image/png"``, ``"voice"``...) to a modality.

    ``image/*`` and picture-like names -> ``image``; ``audio/*``, ``video/*`` and
    recordings -> ``audio`` (time-based media); anything else -> ``file``.
    """
    head = kind.strip().lower().split("/", 1)[0]
    if head in _IMAGE_KINDS:
        return "image"
    if head in _AUDIO_KINDS:
        return "audio"
    return "file"


def context_key(context: Mapping[str, object] | None) -> str:
    """Stable 16-hex-digit hash of ``context`` without its ``use_case`` key; ``""`` when nothing is left.

    Key order does not matter; values are hashed through their JSON form.
    """
    if not context:
        return ""
    rest = {k: v for k, v in context.items() if k != OVERRIDE_KEY}
    if not rest:
        return ""
    encoded = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.blake2b(encoded.encode(), digest_size=8).hexdigest()


class CueLexicon:
    """Maps normalised words and two-word phrases to the use case they point at.

    Built by the training command from the training data and shipped as
    ``cues.json``; immutable after construction and safe to share between threads.
    """

    __slots__ = ("_bigram_heads", "_bigrams", "_unigrams")

    def __init__(self, cues: Mapping[str, str]) -> None:
        unigrams: dict[str, str] = {}
        bigrams: dict[tuple[str, str], str] = {}
        for phrase, use_case in cues.items():
            if use_case not in USE_CASE_SET:
                raise ValueError(f"cue {phrase!r} points at unknown use case {use_case!r}")
            parts = phrase.split(" ")
            if len(parts) == 1 and parts[0]:
                unigrams[parts[0]] = use_case
            elif len(parts) == 2 and all(parts):
                bigrams[(parts[0], parts[1])] = use_case
            else:
                raise ValueError(f"cue {phrase!r} must be one or two normalised words")
        self._unigrams = unigrams
        self._bigrams = bigrams
        self._bigram_heads = frozenset(head for head, _ in bigrams)

    @classmethod
    def from_file(cls, path: Path) -> CueLexicon:
        """Load a ``cues.json`` written by ``rtserver.routing.train`` (its ``"cues"`` object)."""
        raw = json.loads(path.read_text(encoding="utf-8"))
        cues = raw.get("cues") if isinstance(raw, dict) else None
        if not isinstance(cues, dict) or not all(isinstance(v, str) for v in cues.values()):
            raise ValueError(f"{path}: expected an object with a 'cues' mapping of phrase -> use case")
        return cls(cues)

    def entries(self) -> dict[str, str]:
        """Every cue as ``phrase -> use case`` (bigrams joined by one space)."""
        out = dict(self._unigrams)
        out.update({f"{a} {b}": uc for (a, b), uc in self._bigrams.items()})
        return out

    def __len__(self) -> int:
        return len(self._unigrams) + len(self._bigrams)

    def match_words(self, words: Sequence[str]) -> frozenset[str]:
        """Use cases whose cues occur in already-normalised ``words``."""
        found: set[str] | None = None
        unigrams = self._unigrams
        heads = self._bigram_heads
        last = len(words) - 1
        for i, word in enumerate(words):
            hit = unigrams.get(word)
            if hit is not None:
                if found is None:
                    found = {hit}
                else:
                    found.add(hit)
            if i < last and word in heads:
                hit = self._bigrams.get((word, words[i + 1]))
                if hit is not None:
                    if found is None:
                        found = {hit}
                    else:
                        found.add(hit)
        return _EMPTY if found is None else frozenset(found)

    def match(self, text: str) -> frozenset[str]:
        """Use cases whose cues occur in ``text``."""
        return self.match_words(normalise_words(text))


@dataclass(frozen=True, slots=True)
class Signals:
    """What the router compares against a route's basis to decide on bypass."""

    modalities: frozenset[str]
    """Subset of ``{"text", "image", "audio", "file"}``: ``text`` when the text is not blank."""
    cues: frozenset[str]
    """Use cases whose cue words occur in the text."""
    context_key: str
    """``context_key(context)``: stable short hash of the client's context minus ``use_case``; ``""`` when none."""


def _modalities(text: str, attachment_kinds: Iterable[str]) -> frozenset[str]:
    base = _TEXT if text and not text.isspace() else _EMPTY
    kinds = [modality_of(k) for k in attachment_kinds]
    if not kinds:
        return base
    return base.union(kinds)


def extract_signals(
    text: str,
    attachment_kinds: Sequence[str],
    context: Mapping[str, object] | None,
    lexicon: CueLexicon,
) -> Signals:
    """Compute a message's ``Signals``; pure, no model call."""
    return Signals(
        modalities=_modalities(text, attachment_kinds),
        cues=lexicon.match(text),
        context_key=context_key(context),
    )
