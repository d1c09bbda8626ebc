"""Each default has one source, and it is the documented one (docs/protocol.md ## Limits)."""

from __future__ import annotations

import re
from pathlib import Path

from rtserver.config import USE_CASES as CONFIG_USE_CASES
from rtserver.config import Settings
from rtserver.protocol.frames import Limits
from rtserver.routing.usecases import USE_CASES

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _documented_limits() -> dict[str, float]:
    section = DOC.read_text(encoding="utf-8").split("\n## Limits\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, float] = {}
    for name, value, unit in re.findall(r"`(\w+)`\s*\((?:default )?([\d,]+)(?: (MiB))?\)", section):
        found[name] = float(value.replace(",", "")) * (1024 * 1024 if unit else 1)
    return found


def test_the_session_limits_defaults_are_the_documented_ones() -> None:
    documented = _documented_limits()
    assert set(documented) == set(Limits().as_wire())
    assert Settings().limits().as_wire() == {k: int(v) for k, v in documented.items()}
    assert Settings().limits() == Limits()


def test_use_cases_are_defined_once() -> None:
    assert CONFIG_USE_CASES is USE_CASES
