"""Smart bypass over a real socket with the shipped ONNX classifier: the reference
five-turn conversation, the client override, and the Prometheus counters."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from rtserver.client import Client
from rtserver.config import load_settings
from rtserver.server.app import Gateway

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    settings = load_settings(env={}, overrides=dict(
        port=0, embedded_engine="synthetic", embedded_mode="inproc", model_id="synthetic",
        synthetic_tokens=4, synthetic_rate=0,
    ))
    gateway = Gateway(settings)
    async with gateway.lifespan():
        yield gateway


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_the_reference_conversation_routes_as_designed(gw: Gateway, encoding: str) -> None:
    script = [
        ("Write a Python function to sort a list", False, "full", "agent"),
        ("Add error handling to that function", False, "bypass", "agent"),
        ("Now make it handle images instead", False, "reroute", "multimodal"),
        ("Process this image and describe it", True, "bypass", "multimodal"),
        ("Back to the Python function: add type hints", False, "reroute", "agent"),
    ]
    async with await Client.connect(f"ws://127.0.0.1:{gw.port}/ws", encoding=encoding) as c:
        workers = set()
        for text, image, decision, use_case in script:
            atts = [c.attachment("image", "image/png", PNG)] if image else []
            turn = await c.ask(text, attachments=atts)
            assert turn.route is not None, turn.errors
            assert (turn.route["decision"], turn.route["use_case"]) == (decision, use_case), text
            assert turn.route["route_ms"] >= 0 and 0 < turn.route["confidence"] <= 1
            assert turn.done is not None and turn.done["stats"]["decision"] == decision
            if image:  # the synthetic model is text-only: said plainly, text still answered
                assert [e["code"] for e in turn.errors] == ["attachment_unsupported"] and turn.text
            workers.add(turn.route["worker"])
        assert workers == {"embedded"}
    text = gw.metrics.render().decode()
    assert metric(text, "rtserver_route_decisions_total", decision="full") >= 1
    assert metric(text, "rtserver_route_decisions_total", decision="bypass") >= 2
    assert metric(text, "rtserver_route_decisions_total", decision="reroute") >= 2
    assert metric(text, "rtserver_session_creations_total") >= 1
    assert metric(text, "rtserver_classifier_seconds_count") >= 3  # full + two reroutes classify
    assert metric(text, "rtserver_bypass_decision_seconds_count") >= 1
    assert metric(text, "rtserver_errors_total", code="attachment_unsupported") >= 1


async def test_the_client_override_wins_and_invalid_ones_are_refused(gw: Gateway) -> None:
    async with await Client.connect(f"ws://127.0.0.1:{gw.port}/ws") as c:
        first = await c.ask("Write a Python function to sort a list", context={"use_case": "creative"})
        assert first.route is not None and (first.route["decision"], first.route["use_case"]) == ("full", "creative")
        same = await c.ask("and another one", context={"use_case": "creative"})
        assert same.route is not None and (same.route["decision"], same.route["use_case"]) == ("bypass", "creative")
        moved = await c.ask("prove it", context={"use_case": "reasoning"})
        assert moved.route is not None and (moved.route["decision"], moved.route["use_case"]) == ("reroute",
                                                                                                   "reasoning")
        bad = await c.ask("x", context={"use_case": "astrology"})
        assert bad.route is None and [e["code"] for e in bad.errors] == ["invalid_route_override"]
    text = gw.metrics.render().decode()
    assert metric(text, "rtserver_route_decisions_total", decision="reroute", use_case="reasoning") >= 1
