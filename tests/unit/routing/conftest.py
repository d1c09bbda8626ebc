"""Routing fixtures: a scripted fake classifier and the real shipped one (loaded once)."""

from __future__ import annotations

import threading
import types
from collections.abc import Callable

import pytest

from rtserver.routing.classifier import Classification, IntentClassifier
from rtserver.routing.signals import CueLexicon
from rtserver.routing.usecases import USE_CASES

MODELS = {uc: f"{uc}-model" for uc in USE_CASES}

LEXICON = CueLexicon(
    {
        "python": "agent",
        "function": "agent",
        "git": "agent",
        "image": "multimodal",
        "photo": "multimodal",
        "poem": "creative",
        "role play": "creative",
        "prove": "reasoning",
        "<expr>": "reasoning",
        "recipe": "chat",
    }
)


class FakeClassifier:
    """Answers from a text -> use case (or (use case, confidence)) table, counting calls and their threads."""

    def __init__(self, answers: dict[str, str | tuple[str, float]] | None = None, *, default: str = "chat") -> None:
        self.answers = dict(answers or {})
        self.default = default
        self.lexicon = LEXICON
        self.labels = USE_CASES
        self.calls: list[str] = []
        self.threads: list[str] = []

    def classify(self, text: str) -> Classification:
        self.calls.append(text)
        self.threads.append(threading.current_thread().name)
        answer = self.answers.get(text, self.default)
        use_case, confidence = answer if isinstance(answer, tuple) else (answer, 0.9)
        rest = (1.0 - confidence) / (len(USE_CASES) - 1)
        probs = {uc: (confidence if uc == use_case else rest) for uc in USE_CASES}
        return Classification(use_case, confidence, types.MappingProxyType(probs), 0.5)


@pytest.fixture
def fake() -> FakeClassifier:
    return FakeClassifier()


@pytest.fixture(scope="session")
def shipped() -> IntentClassifier:
    return IntentClassifier.load()


class StepClock:
    """A clock that advances by ``step`` seconds on every read."""

    def __init__(self, step: float, start: float = 100.0) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value


@pytest.fixture
def step_clock() -> Callable[[float], StepClock]:
    return StepClock
