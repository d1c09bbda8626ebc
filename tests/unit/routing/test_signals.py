"""Signals are pure: same inputs, same outputs, no model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtserver.routing.signals import (
    EXPR_TOKEN,
    CueLexicon,
    Signals,
    context_key,
    extract_signals,
    modality_of,
    normalise_words,
)

from .conftest import LEXICON


def test_words_are_lowercased_split_and_plural_folded() -> None:
    assert normalise_words("Describe these IMAGES, what's in them?") == [
        "describe",
        "these",
        "image",
        "what",
        "in",
        "them",
    ]
    assert normalise_words("glass classes bus") == ["glass", "classe", "bus"]


def test_arithmetic_adds_the_expression_pseudo_word() -> None:
    assert EXPR_TOKEN in normalise_words("Solve 3x + 7 = 22")
    assert EXPR_TOKEN in normalise_words("what is 2^10")
    assert EXPR_TOKEN not in normalise_words("covid-19 numbers in 2024")
    assert EXPR_TOKEN not in normalise_words("dates look like 03/11/2024 or 2024-11-03")


@pytest.mark.parametrize(
    ("kind", "modality"),
    [
        ("image", "image"),
        ("image/png", "image"),
        ("Screenshot", "image"),
        ("audio/ogg", "audio"),
        ("video/mp4", "audio"),
        ("voice", "audio"),
        ("application/pdf", "file"),
        ("file", "file"),
    ],
)
def test_modality_of(kind: str, modality: str) -> None:
    assert modality_of(kind) == modality


def test_extract_signals_collects_modalities_cues_and_context() -> None:
    s = extract_signals("Turn this photo into a poem", ["image/jpeg", "doc"], {"project": "x"}, LEXICON)
    assert s == Signals(
        frozenset({"text", "image", "file"}), frozenset({"multimodal", "creative"}), context_key({"project": "x"})
    )


def test_blank_text_has_no_text_modality() -> None:
    assert extract_signals("  ", ["image"], None, LEXICON).modalities == frozenset({"image"})
    assert extract_signals("", [], None, LEXICON).modalities == frozenset()


def test_bigram_cues_match_only_adjacent_words() -> None:
    assert LEXICON.match("let's role play a scene") == frozenset({"creative"})
    assert LEXICON.match("play your role") == frozenset()


def test_context_key_ignores_order_and_the_override() -> None:
    a = context_key({"project": "rtserver", "lang": "en"})
    assert a == context_key({"lang": "en", "project": "rtserver"})
    assert a == context_key({"lang": "en", "project": "rtserver", "use_case": "agent"})
    assert len(a) == 16
    assert a != context_key({"lang": "de", "project": "rtserver"})


@pytest.mark.parametrize("context", [None, {}, {"use_case": "chat"}])
def test_context_key_is_empty_without_routing_context(context: dict[str, object] | None) -> None:
    assert context_key(context) == ""


def test_lexicon_rejects_unknown_use_cases_and_long_phrases() -> None:
    with pytest.raises(ValueError, match="unknown use case"):
        CueLexicon({"foo": "nope"})
    with pytest.raises(ValueError, match="one or two"):
        CueLexicon({"a b c": "chat"})


def test_lexicon_round_trips_through_cues_json(tmp_path: Path) -> None:
    path = tmp_path / "cues.json"
    path.write_text(json.dumps({"cues": LEXICON.entries()}))
    loaded = CueLexicon.from_file(path)
    assert loaded.entries() == LEXICON.entries()
    assert len(loaded) == len(LEXICON)


def test_malformed_cues_json_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "cues.json"
    path.write_text(json.dumps(["python"]))
    with pytest.raises(ValueError, match="cues"):
        CueLexicon.from_file(path)


@given(st.text(max_size=300), st.lists(st.text(max_size=20), max_size=3))
def test_extract_signals_is_total_and_deterministic(text: str, kinds: list[str]) -> None:
    a = extract_signals(text, kinds, None, LEXICON)
    assert a == extract_signals(text, kinds, None, LEXICON)
    assert a.modalities <= {"text", "image", "audio", "file"}
    assert a.cues <= set(LEXICON.entries().values())


def _reference_words(text: str) -> list[str]:
    """The normalisation spelled out slowly; the fast path must agree with it."""
    out = []
    for word in re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower()):
        word = word.split("'", 1)[0]
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.append(word)
    return out


@given(st.text(alphabet="abcsS's' 0123+-=/x.\n", max_size=60))
def test_fast_normalisation_matches_the_reference(text: str) -> None:
    words = normalise_words(text)
    if words and words[-1] == EXPR_TOKEN:
        words = words[:-1]
    assert words == _reference_words(text)
