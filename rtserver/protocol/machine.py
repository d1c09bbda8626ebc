"""A conversation as a pure state machine: events in, actions out.

``ConversationMachine`` owns the session record, the recent responses' frames (the
replay log kept in memory), seq numbering, seams, the retry and continuation rule,
history trimming and the replay cursor. It does no I/O and reads no clock: the
gateway (rtserver/server/turn.py) feeds it events (rtserver/protocol/events.py) and
carries out the actions it returns (rtserver/protocol/actions.py), the way the
websockets library keeps its protocol apart from its sockets.

One response at a time (the socket's ``Conversation`` refuses a second message):

    MessageAccepted → RouteDecided → Generate ⇢ WorkerToken* → WorkerFinished → done
                                             ⇢ WorkerLostEvent → Retry | Generate (continue, seam) | error + done
    Cancelled or Failed end it at any point, always with exactly one ``done`` once routed.

Rules, each in one place here:
- retry: a worker lost (or draining) before the first token is replaced, up to
  ``max_attempts`` generations in all;
- continuation: a worker lost mid-answer is replaced by an heir that can continue,
  from the history plus the text already sent; its first token carries ``seam``;
- history: the user's message enters the history when routed, the answer when it
  ends (a partial answer when cancelled); a message lost with its worker is taken
  back so the client can send it again;
- trimming: the prompt keeps the newest turns within ``history_max_tokens``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtserver.engines.base import ChatMessage, GenerateRequest, MediaPart, SamplingParams
from rtserver.exceptions import (
    AttachmentUnsupported,
    InternalError,
    RtServerError,
    WorkerLost,
    WorkerOverloaded,
)
from rtserver.protocol import actions as act
from rtserver.protocol import events as ev
from rtserver.protocol.codec import error_frame, to_wire, token_values
from rtserver.protocol.frames import Done, Message, Route, Usage
from rtserver.protocol.stats import ResponseClock
from rtserver.sessions.base import Session

CHARS_PER_TOKEN = 3.5  # history budget estimate; the worker counts real tokens
RECENT_RESPONSES = 4  # responses whose frames are kept in memory for replay
LOG_BATCH_FRAMES = 16  # replay-log appends are batched: at most this many frames …
LOG_BATCH_S = 0.05  # … or this long, so a follower on another gateway lags ≤ 50 ms
MAX_ATTEMPTS = 3  # generations per response: the first, plus retries or continuations


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings the machine decides with; their defaults live in ``rtserver.config.Settings`` only."""

    max_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float
    history_max_tokens: int
    system_prompt: str
    resume_grace_s: float
    max_attempts: int = MAX_ATTEMPTS

    @classmethod
    def from_settings(cls, s: Any) -> Policy:
        """``s``: a ``Settings`` (or anything with the same fields)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "max_attempts"]
        return cls(**{name: getattr(s, name) for name in names})


@dataclass(slots=True)
class ResponseLog:
    """One response as the client sees it: its frames in order, for replay."""

    response_id: str
    message_id: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    next_seq: int = 0
    routed: bool = False
    finished: bool = False


@dataclass(slots=True)
class Turn:
    """The running response: its log plus what its generation needs."""

    log: ResponseLog
    message: Message
    clock: ResponseClock
    use_case: str = "?"
    model: str = "?"
    request: GenerateRequest | None = None
    attempts: int = 0
    produced: int = 0  # tokens streamed so far, across workers
    parts: list[str] = field(default_factory=list)
    seam: dict[str, str] | None = None
    gateway_queue_ms: float = 0.0
    unlogged: list[dict[str, Any]] = field(default_factory=list)  # sent, not yet appended to the log
    batch_started: float = 0.0


class ConversationMachine:
    """The state of one conversation on the gateway that owns it; see the module docstring."""

    __slots__ = ("active", "policy", "responses", "session")

    def __init__(self, session: Session, policy: Policy) -> None:
        self.session = session
        self.policy = policy
        self.active: Turn | None = None
        self.responses: dict[str, ResponseLog] = {}

    @property
    def session_id(self) -> str:
        return self.session.session_id

    # ------------------------------------------------------------------ dispatch
    def handle(self, event: ev.Event) -> list[act.Action]:
        """Apply ``event``; return what the gateway must do, in order."""
        if isinstance(event, ev.WorkerToken):  # the hot path first
            return self._token(event)
        if isinstance(event, ev.MessageAccepted):
            return self._accept(event)
        if isinstance(event, ev.RouteDecided):
            return self._routed(event)
        if isinstance(event, ev.WorkerPicked):
            return self._generate_on(event.worker)
        if isinstance(event, ev.WorkerFinished):
            return self._worker_finished(event)
        if isinstance(event, ev.WorkerLostEvent):
            return self._worker_lost(event)
        if isinstance(event, ev.Failed):
            return self._failed(event)
        if isinstance(event, ev.Cancelled):
            return self._cancelled(event)
        if isinstance(event, ev.CancelRequested):
            return [act.CancelGeneration()] if self.active is not None else []
        if isinstance(event, ev.Detached):
            self.session.last_accessed = event.wall
            return [act.Save(self.session), act.StartGraceTimer(self.policy.resume_grace_s)]
        if isinstance(event, ev.GraceExpired):
            return [act.CancelGeneration()] if self.active is not None else [act.Forget()]
        if isinstance(event, ev.Attached):
            self.session.last_accessed = event.wall
            return [act.Save(self.session)]
        raise TypeError(f"unknown event {event!r}")

    # ------------------------------------------------------------------ a response
    def _accept(self, event: ev.MessageAccepted) -> list[act.Action]:
        log = ResponseLog(response_id=event.response_id, message_id=event.message.id)
        self.active = Turn(log=log, message=event.message, clock=ResponseClock(received=event.received))
        self.responses[log.response_id] = log
        while len(self.responses) > RECENT_RESPONSES:
            self.responses.pop(next(iter(self.responses)))
        return []

    def _routed(self, event: ev.RouteDecided) -> list[act.Action]:
        turn = self._turn()
        s = self.session
        turn.clock.route_ms = event.route_ms
        turn.clock.decision = event.decision
        turn.use_case, turn.model = event.use_case, event.model
        turn.gateway_queue_ms = event.queue_ms
        if event.context_changed:
            s.context_changes += 1
        if event.decision == "bypass":
            s.bypass_count += 1
        s.route = dict(event.state)
        turn.log.routed = True
        msg = turn.message
        out: list[act.Action] = [self._record(to_wire(Route(
            response_id=turn.log.response_id, message_id=msg.id, use_case=event.use_case, model=event.model,
            worker=event.worker, decision=event.decision, confidence=round(event.confidence, 4),
            route_ms=round(event.route_ms, 3), context_changed=event.context_changed,
        )))]
        media: list[MediaPart] = []
        for a in msg.attachments:
            if a.kind in event.modalities:
                media.append(MediaPart(a.kind, a.mime, a.data))
            else:
                out.append(self._error(AttachmentUnsupported(
                    f"model {event.model} cannot take {a.kind} attachments; answering the text only"), ref=msg.id))
        s.history.append(["user", msg.text])
        s.active_response = turn.log.response_id
        s.request_count += 1
        s.last_accessed = event.wall
        out.append(act.Save(s))
        p = self.policy
        turn.request = GenerateRequest(
            request_id=turn.log.response_id,
            messages=self.prompt(),
            params=SamplingParams(max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p,
                                  repetition_penalty=p.repetition_penalty),
            media=tuple(media),
            conversation=s.session_id,  # the worker keeps this conversation's KV between turns
        )
        out += self._generate_on(event.worker)
        return out

    def _generate_on(self, worker: str) -> list[act.Action]:
        turn = self._turn()
        assert turn.request is not None
        turn.attempts += 1
        self.session.worker = worker  # the generation's worker is the conversation's pin
        return [act.Generate(turn.request, worker)]

    def _token(self, event: ev.WorkerToken) -> list[act.Action]:
        turn = self.active
        assert turn is not None
        clock, log = turn.clock, turn.log
        if event.queue_ms is not None and clock.first_token_at is None:
            clock.queue_ms = turn.gateway_queue_ms + event.queue_ms
        frame = token_values(log.response_id, log.next_seq, event.text, clock.stamp(event.now), turn.seam)
        turn.seam = None
        turn.produced += event.tokens
        log.next_seq += 1
        log.frames.append(frame)
        turn.parts.append(event.text)
        out: list[act.Action] = [act.Send(frame, token=True)]
        batch = turn.unlogged
        if not batch:
            turn.batch_started = event.now
        batch.append(frame)
        if len(batch) >= LOG_BATCH_FRAMES or event.now - turn.batch_started >= LOG_BATCH_S:
            out.append(self._flush_log(turn))
        return out

    def _worker_finished(self, event: ev.WorkerFinished) -> list[act.Action]:
        turn = self._turn()
        out: list[act.Action] = [self._flush_log(turn)]
        if event.reason == "error":
            why = event.error or "generation failed"
            if turn.log.next_seq == 0 and why == "draining" and turn.attempts < self.policy.max_attempts:
                assert self.session.worker is not None
                return [*out, act.Retry(turn.model, avoid=self.session.worker)]
            failed = WorkerOverloaded(why) if why in ("overloaded", "draining") else InternalError(why)
            out.append(self._error(failed, ref=turn.log.message_id))
        completion = turn.produced if turn.attempts > 1 else event.completion_tokens
        self.session.history.append(["assistant", "".join(turn.parts)])
        usage = Usage(event.prompt_tokens, completion, event.cached_tokens)
        return out + self._finish(event.reason, usage, event.now, event.wall)

    def _worker_lost(self, event: ev.WorkerLostEvent) -> list[act.Action]:
        turn = self._turn()
        assert self.session.worker is not None and turn.request is not None
        failed = self.session.worker
        out: list[act.Action] = [self._flush_log(turn)]
        can_retry = turn.attempts < self.policy.max_attempts
        if turn.log.next_seq == 0 and can_retry:
            return [*out, act.WorkerFailure("before_first_token", failed), act.Retry(turn.model, avoid=failed)]
        out.append(act.WorkerFailure("mid_stream", failed))
        if not can_retry or event.heir is None:
            out.append(self._error(WorkerLost(f"{event.reason}; retry the message"), ref=turn.log.message_id))
            self._take_back_message(turn)
            return out + self._finish("error", Usage(0, 0), event.now, event.wall)
        # Continue the answer on the heir, from the history plus the text already sent.
        out.append(act.WorkerFailure("continued", failed, heir=event.heir))
        turn.seam = {"worker": event.heir, "reason": "worker_lost"}
        left = max(1, self.policy.max_tokens - turn.produced)
        turn.request = dataclasses.replace(
            turn.request, prefix="".join(turn.parts),
            params=dataclasses.replace(turn.request.params, max_tokens=left),
        )
        return out + self._generate_on(event.heir)

    def _failed(self, event: ev.Failed) -> list[act.Action]:
        turn = self._turn()
        out: list[act.Action] = [self._error(event.error, ref=turn.log.message_id)]
        if isinstance(event.error, WorkerLost):
            self._take_back_message(turn)
        return out + self._finish("error", Usage(0, 0), event.now, event.wall)

    def _cancelled(self, event: ev.Cancelled) -> list[act.Action]:
        turn = self.active
        if turn is None:  # ended already
            return []
        if turn.parts:
            self.session.history.append(["assistant", "".join(turn.parts)])
        return self._finish("cancelled", Usage(0, turn.log.next_seq), event.now, event.wall)

    def _finish(self, reason: str, usage: Usage, now: float, wall: float) -> list[act.Action]:
        """End the active response: its one ``done`` (once routed, or when cancelled), the session written first."""
        turn = self._turn()
        log = turn.log
        completion = usage.completion_tokens or log.next_seq
        done = Done(
            response_id=log.response_id, finish_reason=reason,  # type: ignore[arg-type]
            usage=Usage(usage.prompt_tokens, completion, usage.cached_tokens),
            stats=turn.clock.summary(now, completion), last_seq=log.next_seq - 1,
        )
        s = self.session
        s.active_response = None
        s.last_accessed = wall
        out: list[act.Action] = []
        if turn.unlogged:  # tokens sent but not yet logged (a cancel cut the stream short)
            out.append(self._flush_log(turn))
        out.append(act.Save(s))  # history first, then the done frame: a follower sees both
        if log.routed or reason == "cancelled":  # cancelled before its route frame: done alone
            frame = self._record(to_wire(done))
            out += [frame, act.AppendLog(s.session_id, log.response_id, [frame.frame])]
        # else: refused before its route frame; the error frame (with ref) was the whole answer
        log.finished = True
        self.active = None
        out.append(act.Finished(done=done, use_case=turn.use_case, model=turn.model, worker=s.worker,
                                gaps_ms=turn.clock.gaps_ms, total_s=now - turn.clock.received))
        return out

    # ------------------------------------------------------------------ helpers
    def _turn(self) -> Turn:
        if self.active is None:
            raise RuntimeError("no response is running")
        return self.active

    def _record(self, frame: dict[str, Any], error: str | None = None) -> act.Send:
        """A frame of the active response: kept for replay, then sent."""
        turn = self.active
        if turn is not None and frame.get("response_id") == turn.log.response_id:
            turn.log.frames.append(frame)
        return act.Send(frame, error=error)

    def _error(self, exc: RtServerError, *, ref: str | None) -> act.Send:
        turn = self.active
        routed = turn.log.response_id if turn is not None and turn.log.routed else None
        frame = to_wire(error_frame(exc.code, exc.message, ref=ref or exc.ref, response_id=routed))
        return self._record(frame, error=exc.code.wire)

    def _flush_log(self, turn: Turn) -> act.AppendLog:
        batch, turn.unlogged = turn.unlogged, []
        return act.AppendLog(self.session.session_id, turn.log.response_id, batch)

    def _take_back_message(self, turn: Turn) -> None:
        """The message was lost with its worker: out of the history, so the client can send it again."""
        h = self.session.history
        if h and h[-1][0] == "user" and self.session.active_response == turn.log.response_id:
            h.pop()

    def prompt(self) -> tuple[ChatMessage, ...]:
        """The newest history within ``history_max_tokens`` (estimated), after the system prompt;
        the stored history is trimmed to what the model can see, so sessions stay small."""
        p, history = self.policy, self.session.history
        budget = int(p.history_max_tokens * CHARS_PER_TOKEN)
        kept: list[ChatMessage] = []
        used = 0
        for role, content in reversed(history):
            used += len(content)
            if kept and used > budget:
                break
            kept.append(ChatMessage(role, content))  # type: ignore[arg-type]
        kept.reverse()
        if p.system_prompt:
            kept.insert(0, ChatMessage("system", p.system_prompt))
        drop = len(history) - len(kept) + (1 if p.system_prompt else 0)
        if drop > 0:
            del history[:drop]
        return tuple(kept)

    # ------------------------------------------------------------------ another gateway's answer
    def adopt_remote(self, response_id: str, log_frames: Sequence[Mapping[str, Any]], relayed: list[str],
                     wall: float) -> list[act.Action]:
        """A response streamed by another gateway ended: put its whole answer into our history.

        The answer is taken from the replay log when it starts at seq 0 and has no gap,
        else from ``relayed``, the text this gateway relayed of it.
        """
        s = self.session
        if s.active_response != response_id:
            return []
        s.active_response = None
        tokens = [f for f in log_frames if f.get("type") == "token"]
        if tokens and [f["seq"] for f in tokens] == list(range(len(tokens))):
            relayed = [f["text"] for f in tokens]
        if relayed and (not s.history or s.history[-1][0] != "assistant"):
            s.history.append(["assistant", "".join(relayed)])
        return [act.Save(s)]  # with our (rotated) resume token
