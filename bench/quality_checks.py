"""Checkers of the quality eval (bench/quality/prompts.jsonl): pure functions of an answer.

Each item of the eval has a ``check`` object; ``check(spec, answer)`` says whether the
answer passes and why not. The kinds:

* ``contains``  ``any``: one of these strings appears as a whole word (``case``: match case).
* ``number``    ``value``: the number appears in the answer, as digits or (up to 20) as a word.
* ``exact``     ``value``: the answer, without surrounding spaces and punctuation, is this (any case).
* ``regex``     ``pattern``: ``re.search`` finds it.
* ``count_any`` ``any``, ``min``: at least ``min`` different words of the list appear.
* ``min_words`` / ``max_words`` ``value``: the answer has at least / at most that many words.
* ``english``:  letters are ASCII and at least two common English words appear (no gibberish).
* ``all``       ``of``: every listed check passes.
* ``first_sentence`` ``check``: the inner check, applied to the answer's first sentence only
  (up to the first ``.``, ``!`` or ``?`` followed by a space, or the first line break). Fact
  questions use it, so that a right word buried in rambling does not count.
* ``python``    ``test``: the answer's code (``extract_code``: the fenced block with the function) and
  the test run together in a separate ``python -I`` process with a timeout; pass = exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CODE_TIMEOUT_S = 5.0

_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen twenty").split()
_COMMON = frozenset(
    "i you we it is am are was the a an and to of in on for with that this my your me how what "
    "thank thanks doing well good fine great help today can do be have".split()
)
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    why: str = ""


PASS = Verdict(True)


def check(spec: Mapping[str, Any], answer: str) -> Verdict:
    """Apply one check object to an answer. Raises ``ValueError`` on an unknown kind."""
    kind = spec["kind"]
    if kind == "contains":
        flags = 0 if spec.get("case") else re.I
        for want in spec["any"]:
            if re.search(rf"(?<!\w){re.escape(want)}(?!\w)", answer, flags):
                return PASS
        return Verdict(False, f"none of {spec['any']}")
    if kind == "number":
        value = int(spec["value"])
        if value in numbers_in(answer):
            return PASS
        return Verdict(False, f"no {value}")
    if kind == "exact":
        got = answer.strip().strip(".!,;:\"'`*").strip().lower()
        return PASS if got == str(spec["value"]).lower() else Verdict(False, f"not exactly {spec['value']!r}")
    if kind == "regex":
        return PASS if re.search(spec["pattern"], answer) else Verdict(False, f"no match for {spec['pattern']!r}")
    if kind == "count_any":
        words = set(_words(answer))
        found = [w for w in spec["any"] if w.lower() in words]
        return PASS if len(found) >= int(spec["min"]) else Verdict(False, f"{len(found)} of {spec['min']} found")
    if kind == "min_words":
        n = len(_words(answer))
        return PASS if n >= int(spec["value"]) else Verdict(False, f"{n} words")
    if kind == "max_words":
        n = len(_words(answer))
        return PASS if n <= int(spec["value"]) else Verdict(False, f"{n} words")
    if kind == "english":
        return _english(answer)
    if kind == "all":
        for sub in spec["of"]:
            verdict = check(sub, answer)
            if not verdict.ok:
                return verdict
        return PASS
    if kind == "first_sentence":
        return check(spec["check"], first_sentence(answer))
    if kind == "python":
        return run_python(extract_code(answer), spec["test"])
    raise ValueError(f"unknown check kind {kind!r}")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def numbers_in(text: str) -> set[int]:
    """Whole numbers written in digits (``1,000`` too) or as words up to twenty."""
    whole = r"(?<![\d.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.0+)?(?![\d]|\.\d)"  # 12, 1,000, 12.0; not 12.5
    found = {int(m.replace(",", "")) for m in re.findall(whole, text)}
    for word in _words(text):
        if word in _WORDS:
            found.add(_WORDS.index(word))
    return found


def first_sentence(text: str) -> str:
    text = text.strip()
    m = re.search(r"[.!?](?=\s|$)|\n", text)
    return text[: m.end()] if m else text


def _english(text: str) -> Verdict:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return Verdict(False, "no words")
    ascii_share = sum(c.isascii() for c in letters) / len(letters)
    if ascii_share < 0.95:
        return Verdict(False, f"{ascii_share:.0%} ASCII letters")
    common = _COMMON & set(_words(text))
    return PASS if len(common) >= 2 else Verdict(False, "fewer than 2 common English words")


def extract_code(answer: str) -> str:
    """The code an answer gives: its first fenced block that defines a function (example-usage
    and output blocks after it are not run); else all fenced blocks; else the lines from the
    first ``def`` on while they are indented, blank or another top-level statement of code."""
    blocks = _FENCE.findall(answer)
    defining = [b for b in blocks if re.search(r"^\s*def ", b, re.M)]
    if defining:
        return str(defining[0])
    if blocks:
        return "\n".join(blocks)
    lines = answer.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("def ")), None)
    if start is None:
        return ""
    kept: list[str] = []
    for ln in lines[start:]:
        if ln.strip() and not ln[0].isspace() and not re.match(r"(def |class |import |from |@|return )", ln):
            break
        kept.append(ln)
    return "\n".join(kept)


def run_python(code: str, test: str, timeout: float = CODE_TIMEOUT_S) -> Verdict:
    """Run ``code`` then ``test`` in an isolated interpreter (no stdin, temp cwd, timeout)."""
    if not code.strip():
        return Verdict(False, "no code")
    with tempfile.TemporaryDirectory(prefix="rtq-") as tmp:
        path = os.path.join(tmp, "answer.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(code + "\n\n" + test + "\n")
        try:
            proc = subprocess.run([sys.executable, "-I", path], cwd=tmp, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return Verdict(False, f"timed out after {timeout:g} s")
    if proc.returncode == 0:
        return PASS
    last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return Verdict(False, last[:160])
