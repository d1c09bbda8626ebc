"""Cue mining keeps precise, supported, content-word cues (no torch needed)."""

from __future__ import annotations

from rtserver.routing.training.cuemine import STOPWORDS, mine_cues

EXAMPLES = [
    ("write a python script to parse logs", "agent"),
    ("python function that returns a list", "agent"),
    ("debug my python code please", "agent"),
    ("write a poem about the sea", "creative"),
    ("a short poem for my mom", "creative"),
    ("poem with a twist ending", "creative"),
    ("the sea is calm today, please tell me", "chat"),
    ("describe the sea in this photo", "multimodal"),
    ("role play a pirate for me", "creative"),
    ("role play a wizard", "creative"),
    ("let's role play a detective", "creative"),
    ("please play a role", "chat"),
]


def test_supported_precise_words_become_cues() -> None:
    cues = {c.phrase: c for c in mine_cues(EXAMPLES, min_support=3, min_precision=0.9)}
    assert cues["python"].use_case == "agent" and cues["python"].support == 3
    assert cues["poem"].use_case == "creative" and cues["poem"].precision == 1.0
    assert "sea" not in cues  # 3 messages, three different labels
    assert cues["role play"].use_case == "creative"


def test_stopwords_and_redundant_bigrams_never_become_cues() -> None:
    cues = {c.phrase for c in mine_cues(EXAMPLES, min_support=2, min_precision=0.5)}
    assert not cues & STOPWORDS
    assert "python script" not in cues  # 'python' already points at agent
    assert all(len(p) > 1 for p in cues)


def test_per_class_cap_keeps_the_best_supported() -> None:
    cues = mine_cues(EXAMPLES, min_support=1, min_precision=1.0, max_per_class=2)
    per_class: dict[str, list[str]] = {}
    for c in cues:
        per_class.setdefault(c.use_case, []).append(c.phrase)
    assert all(len(v) <= 2 for v in per_class.values())
    assert "poem" in per_class["creative"]


def test_mining_is_deterministic() -> None:
    assert mine_cues(EXAMPLES) == mine_cues(list(reversed(EXAMPLES)))
