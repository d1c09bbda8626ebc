"""The acceptance conversation, routed by the real shipped classifier."""

from __future__ import annotations

import pytest

from rtserver.routing.classifier import IntentClassifier
from rtserver.routing.router import Router

from .conftest import MODELS

pytestmark = pytest.mark.model

TURNS = [
    ("Write a Python function to sort a list", [], "full", "agent"),
    ("Add error handling to that function", [], "bypass", "agent"),
    ("Now make it handle images instead", [], "reroute", "multimodal"),
    ("Process this image and describe it", ["image"], "bypass", "multimodal"),
    ("Back to the Python function: add type hints", [], "reroute", "agent"),
]


@pytest.mark.asyncio
async def test_five_turn_conversation_routes_as_specified(shipped: IntentClassifier) -> None:
    router = Router(shipped, MODELS)
    state = None
    seen = []
    for text, attachments, _, _ in TURNS:
        decision = await router.route(state, text, attachments, None)
        seen.append((text, attachments, decision.decision, decision.use_case))
        assert decision.model_id == MODELS[decision.use_case]
        state = decision.state
    assert seen == [tuple(t) for t in TURNS]


@pytest.mark.asyncio
async def test_plain_follow_up_makes_no_model_call(shipped: IntentClassifier) -> None:
    router = Router(shipped, MODELS)
    first = await router.route(None, "Write a Python function to sort a list", [], None)
    follow = await router.route(first.state, "Add error handling to that function", [], None)
    assert follow.classifier_ms is None and not follow.context_changed


@pytest.mark.parametrize(
    ("text", "use_case"),
    [
        ("Write a Python function to sort a list", "agent"),
        ("Now make it handle images instead", "multimodal"),
        ("Back to the Python function: add type hints", "agent"),
        ("Process this image and describe it", "multimodal"),
    ],
)
def test_acceptance_lines_classify_right_on_their_own(shipped: IntentClassifier, text: str, use_case: str) -> None:
    assert shipped.classify(text).use_case == use_case
