"""Router semantics with a scripted classifier: when the model runs, and what is decided."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtserver.codes import ErrorCode
from rtserver.exceptions import RouteError
from rtserver.routing.router import InvalidRouteOverride, InvalidRouteState, Router, RouteState
from rtserver.routing.usecases import USE_CASES

from .conftest import MODELS, FakeClassifier, StepClock


def test_every_use_case_needs_a_model(fake: FakeClassifier) -> None:
    with pytest.raises(ValueError, match="missing"):
        Router(fake, {uc: "m" for uc in USE_CASES if uc != "reasoning"})
    with pytest.raises(ValueError, match="unknown"):
        Router(fake, {**MODELS, "vision": "m"})


@pytest.mark.asyncio
async def test_first_message_is_classified_in_full() -> None:
    fake = FakeClassifier({"Write a Python function": "agent"})
    d = await Router(fake, MODELS).route(None, "Write a Python function", [], None)
    assert (d.decision, d.use_case, d.model_id, d.context_changed) == ("full", "agent", "agent-model", False)
    assert d.classifier_ms == 0.5 and d.confidence == 0.9
    assert fake.calls == ["Write a Python function"]
    assert d.state.basis_modalities == {"text"} and d.state.basis_cues == {"agent"}


@pytest.mark.asyncio
async def test_nothing_new_bypasses_without_a_model_call() -> None:
    fake = FakeClassifier({"fix my python code": "agent"})
    router = Router(fake, MODELS)
    state = (await router.route(None, "fix my python code", [], None)).state
    for text in ["now add tests", "and the function docstring too", "thanks!"]:
        d = await router.route(state, text, [], None)
        assert (d.decision, d.use_case, d.classifier_ms, d.context_changed) == ("bypass", "agent", None, False)
        state = d.state
    assert fake.calls == ["fix my python code"]


@pytest.mark.asyncio
async def test_new_cue_of_same_use_case_widens_the_basis_once() -> None:
    fake = FakeClassifier({"help me with git": "agent", "write a poem about git": "agent"})
    router = Router(fake, MODELS)
    state = (await router.route(None, "help me with git", [], None)).state
    d = await router.route(state, "write a poem about git", [], None)
    assert (d.decision, d.use_case, d.context_changed) == ("bypass", "agent", True)
    assert d.classifier_ms is not None
    assert d.state.basis_cues == {"agent", "creative"}
    again = await router.route(d.state, "another poem please", [], None)
    assert (again.decision, again.classifier_ms) == ("bypass", None)
    assert len(fake.calls) == 2


@pytest.mark.asyncio
async def test_new_cue_of_another_use_case_reroutes_with_a_fresh_basis() -> None:
    fake = FakeClassifier({"write a poem about git": "agent", "now prove it": "reasoning"}, default="agent")
    router = Router(fake, MODELS)
    state = (await router.route(None, "write a poem about git", [], None)).state
    d = await router.route(state, "now prove it", [], None)
    assert (d.decision, d.use_case, d.model_id, d.context_changed) == ("reroute", "reasoning", "reasoning-model", True)
    assert d.state.basis_cues == {"reasoning"}


@pytest.mark.asyncio
async def test_weak_uncorroborated_verdict_keeps_the_route() -> None:
    fake = FakeClassifier(
        {
            "fix my python code": "agent",
            "and prove 2 + 2 = 4": ("chat", 0.55),
            "is 7 prime? prove it": ("reasoning", 0.55),
            "what about the weather, prove it": ("chat", 0.95),
        }
    )
    router = Router(fake, MODELS)
    state = (await router.route(None, "fix my python code", [], None)).state
    weak = await router.route(state, "and prove 2 + 2 = 4", [], None)
    assert (weak.decision, weak.use_case, weak.context_changed, weak.confidence) == ("bypass", "agent", True, 0.9)
    assert weak.state.basis_cues == {"agent", "reasoning"}
    cued = await router.route(state, "is 7 prime? prove it", [], None)
    assert (cued.decision, cued.use_case) == ("reroute", "reasoning")
    sure = await router.route(state, "what about the weather, prove it", [], None)
    assert (sure.decision, sure.use_case) == ("reroute", "chat")
    strict = Router(fake, MODELS, reroute_confidence=0.5)
    assert (await strict.route(state, "and prove 2 + 2 = 4", [], None)).use_case == "chat"


@pytest.mark.asyncio
async def test_context_change_triggers_classification() -> None:
    fake = FakeClassifier(default="chat")
    router = Router(fake, MODELS)
    state = (await router.route(None, "hi", [], {"project": "a"})).state
    same = await router.route(state, "hi again", [], {"project": "a"})
    assert same.classifier_ms is None
    moved = await router.route(state, "hi again", [], {"project": "b"})
    assert (moved.decision, moved.context_changed) == ("bypass", True)
    assert moved.state.basis_context_key != state.basis_context_key
    assert len(fake.calls) == 2


@pytest.mark.asyncio
async def test_image_attachment_routes_to_multimodal_without_the_model() -> None:
    fake = FakeClassifier({"fix my python code": "agent"})
    router = Router(fake, MODELS)
    state = (await router.route(None, "fix my python code", [], None)).state
    d = await router.route(state, "what about this?", ["image/png"], None)
    assert (d.decision, d.use_case, d.confidence, d.classifier_ms) == ("reroute", "multimodal", 1.0, None)
    follow = await router.route(d.state, "make it brighter", [], None)
    assert (follow.decision, follow.use_case) == ("bypass", "multimodal")
    first_msg = await router.route(None, "", ["audio"], None)
    assert (first_msg.decision, first_msg.use_case) == ("full", "multimodal")
    assert fake.calls == ["fix my python code"]


@pytest.mark.asyncio
async def test_file_attachment_is_new_but_not_media() -> None:
    fake = FakeClassifier(default="chat")
    router = Router(fake, MODELS)
    state = (await router.route(None, "hello", [], None)).state
    d = await router.route(state, "summarise this", ["application/pdf"], None)
    assert (d.decision, d.use_case, d.context_changed) == ("bypass", "chat", True)
    assert d.state.basis_modalities == {"text", "file"}
    assert len(fake.calls) == 2


@pytest.mark.asyncio
async def test_override_forces_the_use_case() -> None:
    fake = FakeClassifier(default="chat")
    router = Router(fake, MODELS)
    d1 = await router.route(None, "hello", [], {"use_case": "creative"})
    assert (d1.decision, d1.use_case, d1.confidence, d1.classifier_ms) == ("full", "creative", 1.0, None)
    d2 = await router.route(d1.state, "prove it", [], {"use_case": "creative"})
    assert (d2.decision, d2.use_case) == ("bypass", "creative")
    d3 = await router.route(d2.state, "hello", [], {"use_case": "reasoning"})
    assert (d3.decision, d3.use_case, d3.model_id) == ("reroute", "reasoning", "reasoning-model")
    d4 = await router.route(d3.state, "look", ["image"], {"use_case": "reasoning"})
    assert (d4.decision, d4.use_case) == ("bypass", "reasoning")
    assert fake.calls == []


@pytest.mark.asyncio
async def test_override_key_is_not_part_of_the_context_key() -> None:
    fake = FakeClassifier(default="chat")
    router = Router(fake, MODELS)
    d1 = await router.route(None, "hello", [], {"use_case": "chat", "project": "p"})
    d2 = await router.route(d1.state, "hello", [], {"project": "p"})
    assert (d2.decision, d2.classifier_ms, d2.context_changed) == ("bypass", None, False)
    assert d2.state.context_hash != d1.state.context_hash


@pytest.mark.asyncio
@pytest.mark.parametrize("value", ["vision", 3, "", "Agent"])
async def test_invalid_override_is_a_wire_mappable_value_error(fake: FakeClassifier, value: object) -> None:
    router = Router(fake, MODELS)
    with pytest.raises(InvalidRouteOverride) as info:
        await router.route(None, "hi", [], {"use_case": value})
    assert isinstance(info.value, ValueError) and isinstance(info.value, RouteError)
    assert info.value.code is ErrorCode.INVALID_ROUTE_OVERRIDE
    assert fake.calls == []


@pytest.mark.asyncio
async def test_null_override_means_none(fake: FakeClassifier) -> None:
    d = await Router(fake, MODELS).route(None, "hi", [], {"use_case": None})
    assert d.decision == "full" and fake.calls == ["hi"]


@pytest.mark.asyncio
async def test_bypass_disabled_classifies_every_message(fake: FakeClassifier) -> None:
    router = Router(fake, MODELS)
    state = (await router.route(None, "hi", [], None)).state
    state = RouteState.from_dict({**state.to_dict(), "bypass_enabled": False})
    d = await router.route(state, "hi", [], None)
    assert (d.decision, d.context_changed, d.state.bypass_enabled) == ("bypass", False, False)
    assert len(fake.calls) == 2


@pytest.mark.asyncio
async def test_bypass_uses_the_current_model_mapping(fake: FakeClassifier) -> None:
    state = (await Router(fake, MODELS).route(None, "hi", [], None)).state
    d = await Router(fake, {**MODELS, "chat": "chat-v2"}).route(state, "hi", [], None)
    assert (d.decision, d.model_id, d.state.model_id) == ("bypass", "chat-v2", "chat-v2")


@pytest.mark.asyncio
async def test_route_ms_comes_from_the_injected_clock(
    fake: FakeClassifier, step_clock: Callable[[float], StepClock]
) -> None:
    router = Router(fake, MODELS, clock=step_clock(0.0025))
    d = await router.route(None, "hi", [], None)
    assert d.route_ms == pytest.approx(2.5)
    b = await router.route(d.state, "hi", [], None)
    assert b.route_ms == pytest.approx(2.5)


@pytest.mark.asyncio
async def test_classification_runs_in_the_given_executor(fake: FakeClassifier) -> None:
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="route-test") as pool:
        await Router(fake, MODELS, executor=pool).route(None, "hi", [], None)
    assert fake.threads and fake.threads[0].startswith("route-test")


@pytest.mark.asyncio
async def test_default_executor_is_off_the_loop_thread(fake: FakeClassifier) -> None:
    import threading

    await Router(fake, MODELS).route(None, "hi", [], None)
    assert fake.threads[0] != threading.current_thread().name


def test_decide_bypass_is_the_pure_rule(fake: FakeClassifier) -> None:
    router = Router(fake, MODELS)
    state = RouteState("agent", "agent-model", 0.9, "", frozenset({"text"}), frozenset({"agent"}), "")
    assert router.decide_bypass(state, router.signals("and in python?", [], None))
    assert not router.decide_bypass(state, router.signals("a poem", [], None))
    assert not router.decide_bypass(state, router.signals("ok", ["image"], None))
    assert not router.decide_bypass(state, router.signals("ok", [], {"k": 1}))


states = st.builds(
    RouteState,
    use_case=st.sampled_from(USE_CASES),
    model_id=st.text(max_size=20),
    confidence=st.floats(0, 1),
    context_hash=st.text(max_size=20),
    basis_modalities=st.frozensets(st.sampled_from(["text", "image", "audio", "file"])),
    basis_cues=st.frozensets(st.sampled_from(USE_CASES)),
    basis_context_key=st.text(max_size=16),
    bypass_enabled=st.booleans(),
)


@given(states)
def test_route_state_round_trips_through_json(state: RouteState) -> None:
    back = RouteState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert back == RouteState(
        state.use_case,
        state.model_id,
        state.confidence,
        state.context_hash,
        state.basis_modalities,
        state.basis_cues | {state.use_case},
        state.basis_context_key,
        state.bypass_enabled,
    )


@pytest.mark.parametrize(
    "patch",
    [
        {"use_case": "vision"},
        {"confidence": "high"},
        {"basis_modalities": ["smell"]},
        {"basis_cues": "agent"},
        {"bypass_enabled": "yes"},
    ],
)
def test_malformed_route_state_is_rejected(patch: dict[str, object]) -> None:
    good = RouteState("agent", "m", 0.5, "", frozenset({"text"}), frozenset({"agent"}), "").to_dict()
    with pytest.raises(InvalidRouteState):
        RouteState.from_dict({**good, **patch})
    missing = dict(good)
    del missing["model_id"]
    with pytest.raises(InvalidRouteState, match="model_id"):
        RouteState.from_dict(missing)
