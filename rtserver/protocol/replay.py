"""The replay cursor: which frames a resuming client gets, exactly once and in order; pure.

A client resumes with the ``response_id`` it was reading and the ``last_seq`` it
saw. Two cases:

- the response is kept by this gateway (``ConversationMachine.responses``): ``plan``
  returns the frames after ``last_seq`` (and the ``done`` if it ended), or
  ``recovery_impossible`` when they are no longer contiguous;
- it streamed (or streams) on another gateway: the gateway follows the store's replay
  log, feeding each frame to a ``LogCursor``, which says whether to send it, skip a
  duplicate, stop at a gap, or stop at ``done``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rtserver.exceptions import RecoveryImpossible
from rtserver.protocol.machine import ConversationMachine

Verdict = Literal["send", "skip", "gap", "done"]


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    frames: list[dict[str, Any]] = field(default_factory=list)
    error: RecoveryImpossible | None = None
    streaming: bool = False  # still running here: the rest follows live
    remote: bool = False  # not kept here: follow the store's replay log


def plan(machine: ConversationMachine, response_id: str, last_seq: int) -> ReplayPlan:
    """What to send a client resuming ``response_id`` after ``last_seq`` (-1: from the start)."""
    log = machine.responses.get(response_id)
    if log is None:
        return ReplayPlan(remote=True)
    frames = [f for f in log.frames if (f.get("type") == "token" and f["seq"] > last_seq)
              or f.get("type") == "done" or (last_seq < 0 and f.get("type") == "route")]
    first = next((f for f in frames if f.get("type") == "token"), None)
    contiguous = first["seq"] == last_seq + 1 if first is not None else log.next_seq <= last_seq + 1
    if not contiguous:
        return ReplayPlan(error=RecoveryImpossible(f"frames after seq {last_seq} of {response_id} are gone"))
    streaming = not log.finished and machine.active is not None and machine.active.log is log
    return ReplayPlan(frames=frames, streaming=streaming)


class LogCursor:
    """Walks another gateway's replay log of one response: each token once, no gap, up to ``done``."""

    __slots__ = ("parts", "response_id", "seq")

    def __init__(self, response_id: str, last_seq: int) -> None:
        self.response_id = response_id
        self.seq = last_seq
        self.parts: list[str] = []  # the text relayed so far

    def accept(self, frame: Mapping[str, Any]) -> Verdict:
        kind = frame.get("type")
        if kind == "token":
            seq = frame["seq"]
            if seq <= self.seq:
                return "skip"  # read twice (the log is read from a cursor that may lag)
            if seq != self.seq + 1:
                return "gap"
            self.seq = frame.get("seq_last", seq)
            self.parts.append(frame["text"])
            return "send"
        if kind == "done":
            return "gap" if frame.get("last_seq", self.seq) > self.seq else "done"
        return "send"

    def gap_error(self) -> RecoveryImpossible:
        return RecoveryImpossible(f"frames after seq {self.seq} of {self.response_id} are gone")
