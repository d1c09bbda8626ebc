"""The replay cursor: a resuming client gets each frame once, in order, or a clear error."""

from __future__ import annotations

from typing import Any

import pytest

from rtserver.protocol import events as ev
from rtserver.protocol import replay
from rtserver.protocol.frames import Message
from rtserver.protocol.machine import ConversationMachine, Policy
from rtserver.sessions.base import Session

POLICY = Policy(max_tokens=100, temperature=0.0, top_p=1.0, repetition_penalty=1.0, history_max_tokens=1000,
                system_prompt="", resume_grace_s=15.0)


def streaming(tokens: int, response_id: str = "r1") -> ConversationMachine:
    m = ConversationMachine(Session(session_id="s1", token_digest="d"), POLICY)
    m.handle(ev.MessageAccepted(Message(id="m1", text="hi"), response_id, 0.0))
    m.handle(ev.RouteDecided(use_case="chat", model="small", decision="full", confidence=0.9, route_ms=1.0,
                             context_changed=False, state={}, worker="w1", modalities=frozenset({"text"}),
                             queue_ms=0.0, wall=0.0))
    for i in range(tokens):
        m.handle(ev.WorkerToken(f"t{i}", 1, None, 0.01 * (i + 1)))
    return m


@pytest.mark.parametrize(
    ("last_seq", "types", "seqs"),
    [(-1, ["route", "token", "token", "token"], [0, 1, 2]), (0, ["token", "token"], [1, 2]), (2, [], [])],
)
def test_a_running_response_replays_after_last_seq_then_goes_on_live(last_seq: int, types: list[str],
                                                                     seqs: list[int]) -> None:
    p = replay.plan(streaming(3), "r1", last_seq)
    assert [f["type"] for f in p.frames] == types
    assert [f["seq"] for f in p.frames if f["type"] == "token"] == seqs
    assert p.streaming and p.error is None and not p.remote


def test_a_finished_response_replays_its_done() -> None:
    m = streaming(2)
    m.handle(ev.WorkerFinished("stop", 3, 2, 0, None, 1.0, 1.0))
    p = replay.plan(m, "r1", 0)
    assert [f["type"] for f in p.frames] == ["token", "done"] and not p.streaming


def test_a_response_not_kept_here_is_followed_in_the_store() -> None:
    assert replay.plan(streaming(1), "r_other", 3).remote


def _log(*seqs: int, done_last: int | None = None) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = [{"type": "token", "seq": s, "text": f"t{s}"} for s in seqs]
    if done_last is not None:
        frames.append({"type": "done", "last_seq": done_last})
    return frames


@pytest.mark.parametrize(
    ("last_seq", "frames", "verdicts"),
    [
        (-1, _log(0, 1, done_last=1), ["send", "send", "done"]),
        (0, _log(0, 1, 2), ["skip", "send", "send"]),  # read twice: once only
        (0, _log(2), ["gap"]),  # a hole: never a silent gap
        (1, _log(done_last=3), ["gap"]),  # done says tokens are missing
        (-1, [{"type": "route"}, *_log(0, done_last=0)], ["send", "send", "done"]),
    ],
)
def test_the_log_cursor(last_seq: int, frames: list[dict[str, Any]], verdicts: list[str]) -> None:
    cursor = replay.LogCursor("r1", last_seq)
    assert [cursor.accept(f) for f in frames] == verdicts


def test_the_log_cursor_keeps_the_relayed_text_and_follows_merged_frames() -> None:
    cursor = replay.LogCursor("r1", -1)
    assert cursor.accept({"type": "token", "seq": 0, "seq_last": 2, "text": "abc"}) == "send"
    assert cursor.accept({"type": "token", "seq": 3, "text": "d"}) == "send"
    assert cursor.parts == ["abc", "d"] and cursor.seq == 3
    assert cursor.gap_error().code.wire == "recovery_impossible"
