"""`rtserver route TEXT [--json] [--image]`."""

from __future__ import annotations

import json

import pytest

from rtserver.routing.cli import main

pytestmark = pytest.mark.model


def test_json_output_for_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["Write a limerick about a sleepy owl", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["use_case"] == "creative"
    assert set(doc["probabilities"]) == {"chat", "agent", "creative", "multimodal", "reasoning"}
    assert doc["classifier_ms"] > 0 and doc["route_ms"] > 0


def test_image_flag_applies_the_media_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["what is this?", "--image", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["use_case"], doc["confidence"], doc["classifier_ms"]) == ("multimodal", 1.0, None)


def test_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["Is 91 a prime number?"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reasoning  confidence")
    assert " ms" in out
