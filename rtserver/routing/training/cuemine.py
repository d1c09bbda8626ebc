"""Derive the cue lexicon (``cues.json``) from labelled training text.

A cue is a normalised word or two-word phrase (``signals.normalise_words``) that
occurs in at least ``min_support`` training messages, at least
``min_precision`` of which carry one label. Function words and conversational
fillers never become cues: they occur everywhere in real conversations and
would turn every follow-up into a classifier call; neither do one-letter words,
numbers, or a short list of everyday words that mean different things in
different domains (``name``, ``run``, ``translate``...). A bigram is made of two
content words and is kept only when neither word is already a cue for the same
use case. Each use case keeps at most ``max_per_class`` cues, best supported first.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from rtserver.routing.signals import normalise_words

_STOP_TEXT: Final = """
    a an the and or but if then else so of to in on at by for with from into onto about as than too very
    i me my mine we us our you your yours he him his she her it its they them their this that these those
    there here what which who whom whose when where why how is are was were be been being am do doe did done
    have ha had having can could would should will shall may might must not no yes ok okay sure please thank
    thanks hi hello hey yo all any some each every more most much many few other another same such only own
    just also again now still even back up down out over under off one two three first last new old good
    great nice cool fine well really actually let make give get got take put use tell show write help want
    need like know think say said see look go going come way thing something anything everything someone
    time day today bit lot kind sort instead then while because though before after during without within
    i'm it's don't can't what's that's im u r ur pls plz lol haha
    turn order run name short cost process translate shop eat square step reason number find work
    """
#: Stopwords in normalised form (the same plural folding as message text).
STOPWORDS: Final = frozenset(w for word in _STOP_TEXT.split() for w in normalise_words(word))


@dataclass(frozen=True, slots=True)
class CueStat:
    """One mined cue: the phrase, its use case, how many messages contain it, and the share with that label."""

    phrase: str
    use_case: str
    support: int
    precision: float


def _is_content(word: str) -> bool:
    return len(word) > 1 and word not in STOPWORDS and not word.isdigit()


def _features(words: Sequence[str]) -> set[str]:
    feats = {w for w in words if _is_content(w)}
    for a, b in itertools.pairwise(words):
        if _is_content(a) and _is_content(b):
            feats.add(f"{a} {b}")
    return feats


def mine_cues(
    examples: Iterable[tuple[str, str]],
    *,
    min_support: int = 3,
    min_precision: float = 0.9,
    max_per_class: int = 80,
) -> list[CueStat]:
    """Return the cue lexicon mined from ``(text, label)`` pairs, sorted by use case then phrase."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for text, label in examples:
        for feat in _features(normalise_words(text)):
            counts[feat][label] += 1
    candidates: list[CueStat] = []
    for phrase, per_label in counts.items():
        support = sum(per_label.values())
        label, top = max(per_label.items(), key=lambda kv: (kv[1], kv[0]))
        precision = top / support
        if support >= min_support and precision >= min_precision:
            candidates.append(CueStat(phrase, label, support, round(precision, 4)))
    unigram_cue = {c.phrase: c.use_case for c in candidates if " " not in c.phrase}
    kept: list[CueStat] = []
    for c in candidates:
        if " " in c.phrase and any(unigram_cue.get(w) == c.use_case for w in c.phrase.split(" ")):
            continue
        kept.append(c)
    by_class: dict[str, list[CueStat]] = defaultdict(list)
    for c in kept:
        by_class[c.use_case].append(c)
    out: list[CueStat] = []
    for use_case in sorted(by_class):
        ranked = sorted(by_class[use_case], key=lambda c: (-c.support, -c.precision, c.phrase))
        out.extend(sorted(ranked[:max_per_class], key=lambda c: c.phrase))
    return out
