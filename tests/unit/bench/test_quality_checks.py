"""The quality eval's checkers (bench/quality_checks.py) and its data (bench/quality/prompts.jsonl):
a right answer passes, the wrong answers a user saw fail, and code runs in a bounded subprocess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.quality_checks import check, extract_code, numbers_in, run_python

PROMPTS = Path(__file__).resolve().parents[3] / "bench" / "quality" / "prompts.jsonl"
ITEMS: list[dict[str, Any]] = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line]
BY_ID = {item["id"]: item for item in ITEMS}


def test_the_eval_has_forty_or_more_prompts_in_every_category() -> None:
    assert len(ITEMS) >= 40 and len(BY_ID) == len(ITEMS)
    for category in ("fact", "arithmetic", "instruction", "code"):
        assert sum(item["category"] == category for item in ITEMS) >= 8, category


@pytest.mark.parametrize("item", ITEMS, ids=[item["id"] for item in ITEMS])
def test_each_reference_answer_passes_its_own_check(item: dict[str, Any]) -> None:
    verdict = check(item["check"], item["reference"])
    assert verdict.ok, verdict.why


@pytest.mark.parametrize(
    ("item_id", "answer"),
    [
        # the replies the issue quotes (old defaults), and near misses
        ("capital-france", "The capital city of France lies approximately on the western side of Europe, "
                           "located along the Atlantic coast."),
        ("capital-france", "France is a country in Europe. Its capital is Paris."),  # the fact is not in the first sentence
        ("greeting", "Morfonxás dálsa típero en inglón, dálsa típero."),
        ("reverse-string", "```python\ndef reverse_string(s):\n    return s.reverse(\n```"),
        ("reverse-string", "def reverse_string(s):\n    return s\n"),
        ("divide", "96 divided by 8 is 12.5"),
        ("only-yes", "Yes, I'm glad you asked about yes."),
        ("hello-caps", "Hello"),
        ("alphabetical", "pear, apple, mango"),
        ("continents", "There are 7,962,000,000 people on Earth."),
    ],
)
def test_wrong_answers_fail(item_id: str, answer: str) -> None:
    assert not check(BY_ID[item_id]["check"], answer).ok


def test_numbers_are_read_as_digits_or_words_but_not_decimals() -> None:
    assert numbers_in("7 + 5 = 12") == {7, 5, 12}
    assert numbers_in("twelve apples") == {12}
    assert numbers_in("1,000 and 100.0") == {1000, 100}
    assert 12 not in numbers_in("12.5")


def test_contains_matches_whole_words_and_optionally_case() -> None:
    assert check({"kind": "contains", "any": ["Au"], "case": True}, "Its symbol is Au.").ok
    assert not check({"kind": "contains", "any": ["Au"], "case": True}, "Its symbol is au, the aura.").ok
    assert not check({"kind": "contains", "any": ["mars"]}, "marshmallow").ok


def test_code_is_the_block_with_the_function_and_its_examples_are_not_run() -> None:
    answer = ("Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nExample:\n```python\n"
              "add([1, 2]) -> 3\n```\nOutput:\n```\n3\n```")
    assert extract_code(answer) == "def add(a, b):\n    return a + b\n"
    assert check({"kind": "python", "test": "assert add(2, 3) == 5"}, answer).ok


def test_code_without_fences_is_taken_from_the_first_def() -> None:
    answer = "Sure.\ndef square(x):\n    return x * x\nThis squares x."
    assert extract_code(answer) == "def square(x):\n    return x * x"


def test_code_that_never_ends_times_out_in_its_own_process() -> None:
    verdict = run_python("def f():\n    return 1\nwhile True:\n    pass", "assert f() == 1", timeout=1.0)
    assert not verdict.ok and "timed out" in verdict.why


def test_code_that_reads_stdin_fails_instead_of_hanging() -> None:
    verdict = run_python("x = input()", "assert x")
    assert not verdict.ok and "EOFError" in verdict.why


def test_an_answer_without_code_fails_with_a_reason() -> None:
    verdict = check({"kind": "python", "test": "assert True"}, "I cannot write code.")
    assert not verdict.ok and verdict.why == "no code"


def test_an_unknown_check_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown check kind"):
        check({"kind": "vibes"}, "anything")
