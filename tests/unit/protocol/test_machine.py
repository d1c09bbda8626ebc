"""The conversation machine, driven by plain events with a fake clock (no I/O, no asyncio).

Expected error codes and their numbers are read from docs/protocol.md's table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from rtserver.exceptions import NoWorkerAvailable
from rtserver.protocol import actions as act
from rtserver.protocol import events as ev
from rtserver.protocol.frames import Attachment, Message
from rtserver.protocol.machine import LOG_BATCH_FRAMES, ConversationMachine, Policy
from rtserver.sessions.base import Session

DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
_section = DOC.read_text(encoding="utf-8").split("\n## Error codes\n", 1)[1].split("\n## ", 1)[0]
ERRORS = {c[1].strip().strip("`"): int(c[0]) for c in
          ([x.strip() for x in line.strip("|").split("|")] for line in _section.splitlines()[2:] if line.startswith("|"))
          if c[0].strip().isdigit()}

POLICY = Policy(max_tokens=100, temperature=0.0, top_p=1.0, repetition_penalty=1.0, history_max_tokens=1000,
                system_prompt="", resume_grace_s=15.0)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self, dt: float = 0.0) -> float:
        self.t += dt
        return self.t


def machine(policy: Policy = POLICY, history: list[list[str]] | None = None) -> ConversationMachine:
    return ConversationMachine(Session(session_id="s1", token_digest="d", history=history or []), policy)


def routed(m: ConversationMachine, clock: Clock, text: str = "hello", worker: str = "w1", **kw: Any) -> list[act.Action]:
    m.handle(ev.MessageAccepted(Message(id="m1", text=text, **kw), "r1", clock()))
    return m.handle(ev.RouteDecided(
        use_case="chat", model="small", decision="full", confidence=0.9, route_ms=1.5, context_changed=False,
        state={"use_case": "chat"}, worker=worker, modalities=frozenset({"text"}), queue_ms=0.5, wall=1000.0))


def token(m: ConversationMachine, clock: Clock, text: str, dt: float = 0.01) -> list[act.Action]:
    return m.handle(ev.WorkerToken(text, 1, 2.0, clock(dt)))


def finished(m: ConversationMachine, clock: Clock, reason: str = "stop", error: str | None = None,
             completion: int = 0) -> list[act.Action]:
    return m.handle(ev.WorkerFinished(reason, 7, completion, 0, error, clock(0.01), 1001.0))


def lost(m: ConversationMachine, clock: Clock, heir: str | None) -> list[act.Action]:
    return m.handle(ev.WorkerLostEvent("connection reset", heir, clock(0.01), 1001.0))


def sent(actions: Sequence[act.Action]) -> list[dict[str, Any]]:
    return [a.frame for a in actions if isinstance(a, act.Send)]


def of(actions: Sequence[act.Action], kind: type[Any]) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def errors(actions: Sequence[act.Action]) -> list[str]:
    return [f["code"] for f in sent(actions) if f["type"] == "error"]


def test_a_turn_routes_generates_streams_and_ends_with_one_done() -> None:
    clock, m = Clock(), machine()
    out = routed(m, clock)
    route = sent(out)[0]
    assert route["type"] == "route" and route["worker"] == "w1" and route["message_id"] == "m1"
    kinds = [type(a) for a in out]
    assert kinds.index(act.Save) < kinds.index(act.Generate), "the user's message is saved before generating"
    gen = of(out, act.Generate)[0]
    assert gen.worker == "w1" and gen.request.messages[-1].content == "hello"
    assert gen.request.conversation == "s1" and gen.request.params.max_tokens == 100
    assert m.session.history == [["user", "hello"]] and m.session.active_response == "r1"
    tokens = [sent(token(m, clock, t))[0] for t in ("Hi", " there", "!")]
    assert [f["seq"] for f in tokens] == [0, 1, 2]
    assert tokens[0]["stats"]["ttft_ms"] == pytest.approx(10.0) and tokens[1]["stats"]["gap_ms"] == pytest.approx(10.0)
    assert "seam" not in tokens[0]
    out = finished(m, clock, completion=3)
    done = sent(out)[-1]
    assert done["type"] == "done" and done["finish_reason"] == "stop" and done["last_seq"] == 2
    assert done["usage"]["completion_tokens"] == 3 and done["usage"]["prompt_tokens"] == 7
    kinds = [type(a) for a in out]
    assert kinds.index(act.Save) < kinds.index(act.Send), "history is saved before done is sent"
    assert of(out, act.AppendLog)[-1].frames == [done]
    assert m.session.history[-1] == ["assistant", "Hi there!"] and m.session.active_response is None
    assert m.active is None and of(out, act.Finished)


@pytest.mark.parametrize(
    ("script", "expect"),
    [
        # (events after routing, then what must come of them)
        (["lost:none"], {"retry_avoid": "w1", "failure": ["before_first_token"]}),
        (["error:draining"], {"retry_avoid": "w1", "failure": []}),
        (["tok", "error:draining"], {"error": "overloaded", "done": "error"}),
        (["error:overloaded"], {"error": "overloaded", "done": "error"}),
        (["tok", "error:boom"], {"error": "internal", "done": "error"}),
        (["tok", "lost:none"], {"error": "worker_lost", "done": "error", "taken_back": True,
                                "failure": ["mid_stream"]}),
        (["tok", "lost:w2"], {"continue_on": "w2", "failure": ["mid_stream", "continued"]}),
    ],
)
def test_worker_failures_table(script: list[str], expect: dict[str, Any]) -> None:
    clock, m = Clock(), machine()
    routed(m, clock)
    out: list[act.Action] = []
    for step in script:
        kind, _, arg = step.partition(":")
        if kind == "tok":
            out = token(m, clock, "Hi")
        elif kind == "error":
            out = finished(m, clock, "error", error=arg)
        else:
            out = lost(m, clock, None if arg == "none" else arg)
    if "retry_avoid" in expect:
        assert of(out, act.Retry)[0].avoid == expect["retry_avoid"] and not sent(out)
    if "failure" in expect:
        assert [f.stage for f in of(out, act.WorkerFailure)] == expect["failure"]
    if "error" in expect:
        code = errors(out)[0]
        assert code == expect["error"] and code in ERRORS
        assert sent(out)[-1]["finish_reason"] == expect["done"]
        err = next(f for f in sent(out) if f["type"] == "error")
        assert err["ref"] == "m1" and err["response_id"] == "r1"
    if expect.get("taken_back"):
        assert ["user", "hello"] not in m.session.history, "a lost message can be sent again"
    if "continue_on" in expect:
        gen = of(out, act.Generate)[0]
        assert gen.worker == "w2" and gen.request.prefix == "Hi" and gen.request.params.max_tokens == 99
        nxt = sent(token(m, clock, " there"))[0]
        assert nxt["seq"] == 1 and nxt["seam"] == {"worker": "w2", "reason": "worker_lost"}
        assert "seam" not in sent(token(m, clock, "!"))[0]
        assert m.session.worker == "w2", "the conversation is pinned to the worker that took over"


def test_a_retried_generation_starts_over_on_the_picked_worker_and_gives_up_after_three() -> None:
    clock, m = Clock(), machine()
    first = of(routed(m, clock), act.Generate)[0]
    assert of(lost(m, clock, None), act.Retry)
    again = of(m.handle(ev.WorkerPicked("w2")), act.Generate)[0]
    assert again.worker == "w2" and again.request == first.request and m.session.worker == "w2"
    assert of(lost(m, clock, None), act.Retry)
    m.handle(ev.WorkerPicked("w3"))
    out = lost(m, clock, None)
    assert not of(out, act.Retry) and errors(out) == ["worker_lost"] and sent(out)[-1]["type"] == "done"


def test_continuing_after_a_retry_counts_the_tokens_of_every_worker() -> None:
    clock, m = Clock(), machine()
    routed(m, clock)
    token(m, clock, "a")
    token(m, clock, "b")
    lost(m, clock, "w2")
    token(m, clock, "c")
    done = sent(finished(m, clock, completion=1))[-1]
    assert done["usage"]["completion_tokens"] == 3 and done["last_seq"] == 2
    assert m.session.history[-1] == ["assistant", "abc"]


def test_cancel_mid_stream_keeps_the_partial_answer_and_logs_every_sent_token() -> None:
    clock, m = Clock(), machine()
    routed(m, clock)
    token(m, clock, "Hal")
    token(m, clock, "f")
    out = m.handle(ev.Cancelled(clock(0.01), 1002.0))
    logged = [f for a in of(out, act.AppendLog) for f in a.frames]
    assert [f["seq"] for f in logged if f["type"] == "token"] == [0, 1]
    done = sent(out)[-1]
    assert done["finish_reason"] == "cancelled" and done["last_seq"] == 1 and done["usage"]["completion_tokens"] == 2
    assert m.session.history[-1] == ["assistant", "Half"]
    assert m.handle(ev.Cancelled(clock(), 1003.0)) == [], "a response ends once"


def test_a_cancel_stops_the_generation_and_its_end_comes_back_as_cancelled() -> None:
    clock, m = Clock(), machine()
    assert m.handle(ev.CancelRequested()) == [], "nothing to cancel"
    routed(m, clock)
    assert of(m.handle(ev.CancelRequested()), act.CancelGeneration)
    assert m.active is not None, "the response ends when its generation reports the cancel"


def test_cancel_before_route_gets_done_alone() -> None:
    clock, m = Clock(), machine()
    m.handle(ev.MessageAccepted(Message(id="m1", text="hi"), "r1", clock()))
    out = m.handle(ev.Cancelled(clock(0.01), 1001.0))
    frames = sent(out)
    assert [f["type"] for f in frames] == ["done"] and frames[0]["last_seq"] == -1
    assert m.session.history == []


def test_a_refusal_before_route_is_the_error_alone() -> None:
    clock, m = Clock(), machine()
    m.handle(ev.MessageAccepted(Message(id="m1", text="hi"), "r1", clock()))
    out = m.handle(ev.Failed(NoWorkerAvailable("no worker for model small"), clock(0.01), 1001.0))
    frames = sent(out)
    assert [f["type"] for f in frames] == ["error"] and frames[0]["ref"] == "m1" and frames[0]["code"] in ERRORS
    assert "response_id" not in frames[0] or frames[0]["response_id"] is None
    assert m.active is None and of(out, act.Save)


def test_an_attachment_the_model_cannot_take_is_answered_as_text_with_an_error() -> None:
    clock, m = Clock(), machine()
    out = routed(m, clock, attachments=(Attachment("image", "image/png", b"\x89PNG"),))
    assert errors(out) == ["attachment_unsupported"] and "attachment_unsupported" in ERRORS
    assert of(out, act.Generate)[0].request.media == ()


def test_the_replay_log_is_appended_in_batches() -> None:
    clock, m = Clock(), machine()
    routed(m, clock)
    appends = [a for _ in range(LOG_BATCH_FRAMES) for a in of(token(m, clock, "x", dt=0.001), act.AppendLog)]
    assert [len(a.frames) for a in appends] == [LOG_BATCH_FRAMES]
    assert not of(token(m, clock, "y", dt=0.001), act.AppendLog)
    late = of(token(m, clock, "z", dt=0.2), act.AppendLog)
    assert [[f["text"] for f in a.frames] for a in late] == [["y", "z"]], "a slow stream is logged within 50 ms"


@pytest.mark.parametrize(
    ("history_chars", "system", "kept"),
    [
        ([10, 10, 10], "", 3 + 1),  # all fit, plus the new message
        ([3000, 3000, 10], "", 3),  # the two newest turns and the message; the oldest 3,000 do not fit
        ([3000, 3000, 10], "be brief", 4),  # the system prompt first, outside the budget
        ([5000], "", 1),  # an old turn over the budget goes; the new message always stays
    ],
)
def test_history_is_trimmed_to_the_budget(history_chars: list[int], system: str, kept: int) -> None:
    policy = Policy(max_tokens=100, temperature=0.0, top_p=1.0, repetition_penalty=1.0, history_max_tokens=1000,
                    system_prompt=system, resume_grace_s=15.0)  # budget 3,500 characters
    history = [["user" if i % 2 == 0 else "assistant", "x" * n] for i, n in enumerate(history_chars)]
    clock, m = Clock(), machine(policy, history)
    request = of(routed(m, clock), act.Generate)[0].request
    assert len(request.messages) == kept
    assert request.messages[-1].content == "hello"
    if system:
        assert request.messages[0].role == "system" and request.messages[0].content == system
    assert len(m.session.history) == kept - (1 if system else 0), "the stored history is trimmed too"


def test_detach_keeps_the_session_for_the_grace_period() -> None:
    clock, m = Clock(), machine()
    out = m.handle(ev.Detached(wall=5.0))
    assert of(out, act.StartGraceTimer)[0].seconds == POLICY.resume_grace_s and of(out, act.Save)
    assert of(m.handle(ev.GraceExpired()), act.Forget)
    routed(m, clock)
    assert of(m.handle(ev.GraceExpired()), act.CancelGeneration), "nobody came back: free the worker slot"


def test_adopting_another_gateways_answer_prefers_its_whole_log() -> None:
    m = machine([["user", "hi"]])
    m.session.active_response = "r9"
    log = [{"type": "token", "seq": i, "text": t} for i, t in enumerate(["Hel", "lo"])]
    out = m.adopt_remote("r9", log, ["lo"], 5.0)
    assert m.session.history[-1] == ["assistant", "Hello"] and of(out, act.Save)
    assert m.adopt_remote("r9", log, [], 6.0) == [], "adopted once"
    m2 = machine([["user", "hi"]])
    m2.session.active_response = "r9"
    m2.adopt_remote("r9", log[1:], ["Hel", "lo"], 5.0)  # the log no longer starts at seq 0
    assert m2.session.history[-1] == ["assistant", "Hello"]
