"""Typed records for every frame of the worker wire (docs/worker-protocol.md); pure.

One frozen record per frame type, each with one encoder (``to_wire``: the msgpack
map's plain values, keys in wire order) and one decoder (``from_wire``: validates the
field types and raises ``WorkerProtocolError`` naming the frame and field). Every
frame the gateway, the worker and the engine host send is built through these.

gateway → worker: ``gen``, ``cancel``, ``credit``, ``ping``.
worker → gateway: ``ready``, ``tok``, ``done``, ``load``, ``pong``.
worker ↔ engine host (host.py): ``gen``/``cancel``/``credit`` in, ``tok``/``done`` and
``HostLoad`` (``t: "load"``, the engine's own counters) out, plus ``HostReady`` or
``Fail`` once at start.

The token hot path: ``tok_values`` (building) and ``tok_event`` (reading) do what
``Tok(...).to_wire()`` and ``Tok.from_wire(…).event()`` do without building the record;
tests/unit/workers/test_frames.py checks they give the same values and bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from rtserver.engines.base import (
    ChatMessage,
    EngineFinish,
    FinishEvent,
    GenerateRequest,
    MediaPart,
    SamplingParams,
    TokenEvent,
)
from rtserver.exceptions import WorkerProtocolError

Wire = dict[str, Any]

_ROLES = frozenset(("system", "user", "assistant"))
_REASONS: frozenset[str] = frozenset(("stop", "length", "cancelled", "error"))
_KINDS = frozenset(("image", "audio", "file"))


# ---------------------------------------------------------------------------- field checks
def _bad(frame: str, field: str, want: str, got: object) -> WorkerProtocolError:
    return WorkerProtocolError(f"bad {frame} frame: {field!r} must be {want}, got {type(got).__name__}")


def _get(d: Mapping[str, Any], frame: str, field: str) -> Any:
    try:
        return d[field]
    except KeyError:
        raise WorkerProtocolError(f"bad {frame} frame: {field!r} is missing") from None


def _int(d: Mapping[str, Any], frame: str, field: str, default: int | None = None) -> int:
    v = _get(d, frame, field) if default is None else d.get(field, default)
    if type(v) is not int:
        raise _bad(frame, field, "an integer", v)
    return v


def _opt_int(d: Mapping[str, Any], frame: str, field: str) -> int | None:
    v = d.get(field)
    if v is not None and type(v) is not int:
        raise _bad(frame, field, "an integer", v)
    return v


def _float(d: Mapping[str, Any], frame: str, field: str, default: float | None = None) -> float:
    v = _get(d, frame, field) if default is None else d.get(field, default)
    if type(v) is not float and type(v) is not int:
        raise _bad(frame, field, "a number", v)
    return float(v)


def _opt_float(d: Mapping[str, Any], frame: str, field: str) -> float | None:
    v = d.get(field)
    if v is None:
        return None
    if type(v) is not float and type(v) is not int:
        raise _bad(frame, field, "a number", v)
    return float(v)


def _str(d: Mapping[str, Any], frame: str, field: str, default: str | None = None) -> str:
    v = _get(d, frame, field) if default is None else d.get(field, default)
    if type(v) is not str:
        raise _bad(frame, field, "a string", v)
    return v


def _opt_str(d: Mapping[str, Any], frame: str, field: str) -> str | None:
    v = d.get(field)
    if v is not None and type(v) is not str:
        raise _bad(frame, field, "a string", v)
    return v


def _bool(d: Mapping[str, Any], frame: str, field: str, default: bool | None = None) -> bool:
    v = _get(d, frame, field) if default is None else d.get(field, default)
    if type(v) is not bool:
        raise _bad(frame, field, "a boolean", v)
    return v


def _strings(d: Mapping[str, Any], frame: str, field: str) -> frozenset[str]:
    v = _get(d, frame, field)
    if not isinstance(v, list) or not all(type(x) is str for x in v):
        raise _bad(frame, field, "a list of strings", v)
    return frozenset(v)


def _kv(d: Mapping[str, Any], frame: str) -> dict[str, int] | None:
    v = d.get("kv")
    if v is None:
        return None
    if not isinstance(v, dict) or not all(type(k) is str and type(n) is int for k, n in v.items()):
        raise _bad(frame, "kv", "a map of counters", v)
    return v


# ---------------------------------------------------------------------------- gateway → worker
@dataclass(frozen=True, slots=True)
class Gen:
    """Start a generation: ``request`` on stream ``id``; ``win``: its flow-control window (None: none)."""

    id: int
    request: GenerateRequest
    win: int | None = None
    t: ClassVar[Literal["gen"]] = "gen"

    def to_wire(self) -> Wire:
        r, p = self.request, self.request.params
        out: Wire = {
            "t": "gen",
            "id": self.id,
            "rid": r.request_id,
            "messages": [[m.role, m.content] for m in r.messages],
            "params": {"max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p,
                       "repetition_penalty": p.repetition_penalty, "seed": p.seed},
        }
        if r.media:
            out["media"] = [[m.kind, m.mime, m.data] for m in r.media]
        if r.prefix:
            out["prefix"] = r.prefix
        if r.conversation:
            out["conv"] = r.conversation
        if self.win is not None:
            out["win"] = self.win
        return out

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Gen:
        wire_id = _int(d, "gen", "id")
        rid = d.get("rid", str(wire_id))
        if type(rid) is not str:
            raise _bad("gen", "rid", "a string", rid)
        return cls(wire_id, GenerateRequest(rid, _messages(d), _params(d), _media(d), _str(d, "gen", "prefix", ""),
                                            _opt_str(d, "gen", "conv") or None), _opt_int(d, "gen", "win"))


def _messages(d: Mapping[str, Any]) -> tuple[ChatMessage, ...]:
    raw = _get(d, "gen", "messages")
    if not isinstance(raw, list):
        raise _bad("gen", "messages", "a list of [role, content]", raw)
    out = []
    for m in raw:
        if not (isinstance(m, list) and len(m) == 2 and m[0] in _ROLES and type(m[1]) is str):
            raise WorkerProtocolError(f"bad gen frame: a message must be [role, content] with role one of "
                                      f"{', '.join(sorted(_ROLES))}, got {str(m)[:80]}")
        out.append(ChatMessage(m[0], m[1]))
    return tuple(out)


def _params(d: Mapping[str, Any]) -> SamplingParams:
    p = d.get("params", {})
    if not isinstance(p, dict):
        raise _bad("gen", "params", "a map", p)
    unknown = set(p) - {"max_tokens", "temperature", "top_p", "repetition_penalty", "seed"}
    if unknown:
        raise WorkerProtocolError(f"bad gen frame: unknown params {sorted(map(str, unknown))}")
    dflt = SamplingParams()
    return SamplingParams(
        max_tokens=_int(p, "gen", "max_tokens", dflt.max_tokens),
        temperature=_float(p, "gen", "temperature", dflt.temperature),
        top_p=_float(p, "gen", "top_p", dflt.top_p),
        repetition_penalty=_float(p, "gen", "repetition_penalty", dflt.repetition_penalty),
        seed=_opt_int(p, "gen", "seed"),
    )


def _media(d: Mapping[str, Any]) -> tuple[MediaPart, ...]:
    raw = d.get("media", [])
    if not isinstance(raw, list):
        raise _bad("gen", "media", "a list of [kind, mime, bytes]", raw)
    out = []
    for m in raw:
        if not (isinstance(m, list) and len(m) == 3 and m[0] in _KINDS and type(m[1]) is str
                and type(m[2]) is bytes):
            raise WorkerProtocolError("bad gen frame: a media part must be [kind, mime, bytes] with kind "
                                      f"one of {', '.join(sorted(_KINDS))}")
        out.append(MediaPart(m[0], m[1], m[2]))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop stream ``id`` (unknown or finished ids are ignored)."""

    id: int
    t: ClassVar[Literal["cancel"]] = "cancel"

    def to_wire(self) -> Wire:
        return {"t": "cancel", "id": self.id}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Cancel:
        return cls(_int(d, "cancel", "id"))


@dataclass(frozen=True, slots=True)
class Grant:
    """The ``credit`` frame: stream ``id`` may run ``n`` more ``tok`` frames ahead."""

    id: int
    n: int
    t: ClassVar[Literal["credit"]] = "credit"

    def to_wire(self) -> Wire:
        return {"t": "credit", "id": self.id, "n": self.n}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Grant:
        n = _int(d, "credit", "n")
        if n < 0:
            raise WorkerProtocolError(f"bad credit frame: 'n' must not be negative, got {n}")
        return cls(_int(d, "credit", "id"), n)


@dataclass(frozen=True, slots=True)
class Ping:
    ts: float | None = None
    t: ClassVar[Literal["ping"]] = "ping"

    def to_wire(self) -> Wire:
        return {"t": "ping", "ts": self.ts}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Ping:
        return cls(_opt_float(d, "ping", "ts"))


# ---------------------------------------------------------------------------- worker → gateway
@dataclass(frozen=True, slots=True)
class Ready:
    """First frame on every gateway connection, once the model is loaded and warm."""

    name: str
    engine: str
    model: str
    modalities: frozenset[str]
    capacity: int
    continues: bool
    pid: int
    t: ClassVar[Literal["ready"]] = "ready"

    def to_wire(self) -> Wire:
        return {"t": "ready", "name": self.name, "engine": self.engine, "model": self.model,
                "modalities": sorted(self.modalities), "capacity": self.capacity, "continues": self.continues,
                "pid": self.pid}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Ready:
        f = "ready"
        return cls(_str(d, f, "name"), _str(d, f, "engine"), _str(d, f, "model"), _strings(d, f, "modalities"),
                   _int(d, f, "capacity"), _bool(d, f, "continues", False), _int(d, f, "pid"))


@dataclass(frozen=True, slots=True)
class Tok:
    """Generated text of stream ``id``: ``n`` tokens; ``q``: ms it waited for a slot (first ``tok`` only)."""

    id: int
    text: str
    n: int = 1
    q: float | None = None
    t: ClassVar[Literal["tok"]] = "tok"

    def to_wire(self) -> Wire:
        out: Wire = {"t": "tok", "id": self.id, "text": self.text, "n": self.n}
        if self.q is not None:
            out["q"] = self.q
        return out

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Tok:
        return cls(_int(d, "tok", "id"), _str(d, "tok", "text"), _int(d, "tok", "n"), _opt_float(d, "tok", "q"))

    def event(self) -> TokenEvent:
        return TokenEvent(self.text, self.n, self.q)


def tok_values(stream_id: int, text: str, n: int, q: float | None) -> Wire:
    """``Tok(stream_id, text, n, q).to_wire()`` without the record: the token hot path."""
    if q is None:
        return {"t": "tok", "id": stream_id, "text": text, "n": n}
    return {"t": "tok", "id": stream_id, "text": text, "n": n, "q": q}


def tok_event(d: Mapping[str, Any]) -> TokenEvent:
    """``Tok.from_wire(d).event()`` on the token hot path: checks the fields an event carries."""
    text, n, q = d.get("text"), d.get("n"), d.get("q")
    if type(text) is str and type(n) is int and (q is None or type(q) is float or type(q) is int):
        return TokenEvent(text, n, q)
    Tok.from_wire(d)  # raises, naming the field
    raise WorkerProtocolError("bad tok frame")  # not reached: the record rejects what this does


@dataclass(frozen=True, slots=True)
class Done:
    """The last frame of stream ``id``, exactly once. The one place a ``done`` is built."""

    id: int
    reason: EngineFinish
    prompt: int = 0
    completion: int = 0
    queue_ms: float = 0.0
    error: str | None = None
    cached: int = 0
    t: ClassVar[Literal["done"]] = "done"

    @classmethod
    def of(cls, stream_id: int, event: FinishEvent) -> Done:
        return cls(stream_id, event.reason, event.prompt_tokens, event.completion_tokens, event.queue_ms,
                   event.error or None, event.cached_tokens)

    @classmethod
    def failed(cls, stream_id: int, error: str) -> Done:
        """Reason ``error`` before or without a finish (``overloaded``, ``draining``, a crash)."""
        return cls(stream_id, "error", error=error)

    def event(self) -> FinishEvent:
        return FinishEvent(self.reason, self.prompt, self.completion, self.queue_ms, self.error, self.cached)

    def to_wire(self) -> Wire:
        out: Wire = {"t": "done", "id": self.id, "reason": self.reason, "prompt": self.prompt,
                     "completion": self.completion, "queue_ms": self.queue_ms}
        if self.error:
            out["error"] = self.error
        if self.cached:
            out["cached"] = self.cached
        return out

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Done:
        reason = _str(d, "done", "reason")
        if reason not in _REASONS:
            raise WorkerProtocolError(f"bad done frame: 'reason' must be one of {', '.join(sorted(_REASONS))}, "
                                      f"got {reason[:40]!r}")
        return cls(_int(d, "done", "id"), reason, _int(d, "done", "prompt", 0),  # type: ignore[arg-type]
                   _int(d, "done", "completion", 0), _float(d, "done", "queue_ms", 0.0),
                   _opt_str(d, "done", "error"), _int(d, "done", "cached", 0))


@dataclass(frozen=True, slots=True)
class Load:
    """The worker's heartbeat on every gateway connection (every ``heartbeat_s``)."""

    active: int
    waiting: int
    capacity: int
    inflight: int
    cancelling: int
    limit: int
    admitting: bool
    draining: bool
    kv: Mapping[str, int] | None = None
    t: ClassVar[Literal["load"]] = "load"

    def to_wire(self) -> Wire:
        out: Wire = {"t": "load", "active": self.active, "waiting": self.waiting, "capacity": self.capacity,
                     "inflight": self.inflight, "cancelling": self.cancelling, "limit": self.limit,
                     "admitting": self.admitting, "draining": self.draining}
        if self.kv is not None:
            out["kv"] = dict(self.kv)
        return out

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Load:
        f = "load"
        return cls(_int(d, f, "active"), _int(d, f, "waiting"), _int(d, f, "capacity"), _int(d, f, "inflight"),
                   _int(d, f, "cancelling"), _int(d, f, "limit"), _bool(d, f, "admitting"), _bool(d, f, "draining"),
                   _kv(d, f))


@dataclass(frozen=True, slots=True)
class Pong:
    ts: float | None = None
    t: ClassVar[Literal["pong"]] = "pong"

    def to_wire(self) -> Wire:
        return {"t": "pong", "ts": self.ts}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Pong:
        return cls(_opt_float(d, "pong", "ts"))


# ---------------------------------------------------------------------------- engine host → worker
@dataclass(frozen=True, slots=True)
class HostReady:
    """The engine host's first frame: its engine loaded and warm. ``kv``: it retains KV per conversation."""

    engine: str
    model: str
    modalities: frozenset[str]
    capacity: int
    continues: bool
    pid: int
    kv: bool = False
    t: ClassVar[Literal["ready"]] = "ready"

    def to_wire(self) -> Wire:
        return {"t": "ready", "engine": self.engine, "model": self.model, "modalities": sorted(self.modalities),
                "capacity": self.capacity, "continues": self.continues, "pid": self.pid, "kv": self.kv}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> HostReady:
        f = "engine host ready"
        return cls(_str(d, f, "engine"), _str(d, f, "model"), _strings(d, f, "modalities"), _int(d, f, "capacity"),
                   _bool(d, f, "continues"), _int(d, f, "pid"), _bool(d, f, "kv", False))


@dataclass(frozen=True, slots=True)
class Fail:
    """The engine host's only frame when its engine did not start."""

    error: str
    t: ClassVar[Literal["fail"]] = "fail"

    def to_wire(self) -> Wire:
        return {"t": "fail", "error": self.error}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Fail:
        return cls(_str(d, "fail", "error"))


@dataclass(frozen=True, slots=True)
class HostLoad:
    """The engine's own load, sent by the engine host when it changed (``t: "load"``)."""

    active: int
    waiting: int
    capacity: int
    kv: Mapping[str, int] | None = None
    t: ClassVar[Literal["load"]] = "load"

    def to_wire(self) -> Wire:
        out: Wire = {"t": "load", "active": self.active, "waiting": self.waiting, "capacity": self.capacity}
        if self.kv is not None:
            out["kv"] = dict(self.kv)
        return out

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> HostLoad:
        f = "engine host load"
        return cls(_int(d, f, "active"), _int(d, f, "waiting"), _int(d, f, "capacity"), _kv(d, f))


ToWorker = Gen | Cancel | Grant | Ping
ToGateway = Ready | Tok | Done | Load | Pong
FromHost = HostReady | Fail | HostLoad | Tok | Done
