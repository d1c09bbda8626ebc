"""The worker wire's records (workers/frames.py): round trips, validation, and the token fast path."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgpack
import pytest

from rtserver.engines.base import ChatMessage, FinishEvent, GenerateRequest, MediaPart, SamplingParams
from rtserver.exceptions import WorkerProtocolError
from rtserver.workers.frames import (
    Cancel,
    Done,
    Fail,
    Gen,
    Grant,
    HostLoad,
    HostReady,
    Load,
    Ping,
    Pong,
    Ready,
    Tok,
    tok_event,
    tok_values,
)
from rtserver.workers.wire import FrameReader, pack

REQUEST = GenerateRequest(
    "r_1", (ChatMessage("system", "be brief"), ChatMessage("user", "hé ✓")),
    SamplingParams(max_tokens=9, temperature=0.0, top_p=1.0, repetition_penalty=1.1, seed=3),
    (MediaPart("image", "image/png", b"\x89PNG"),), prefix="Once", conversation="s_1",
)

RECORDS: list[Any] = [
    Gen(7, REQUEST, win=64),
    Gen(8, GenerateRequest("r_2", (ChatMessage("user", "hi"),))),
    Cancel(7),
    Grant(7, 32),
    Ping(12.5),
    Ready("w-1", "synthetic", "m", frozenset({"text", "image"}), 16, True, 4242),
    Tok(7, "hello ", 1, 3.25),
    Tok(7, "", 2),
    Done(7, "stop", 12, 30, 1.5),
    Done(7, "length", 12, 30, 0.0, None, 8),
    Done.failed(7, "overloaded"),
    Load(1, 2, 16, 3, 0, 80, True, False),
    Load(1, 2, 16, 3, 0, 80, False, True, {"hits": 3, "misses": 1}),
    Pong(12.5),
    HostReady("gpu", "m", frozenset({"text"}), 8, True, 99, kv=True),
    Fail("RuntimeError: no GPU"),
    HostLoad(1, 0, 8),
    HostLoad(1, 0, 8, {"retained_tokens": 120}),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_every_frame_round_trips_through_msgpack(record: Any) -> None:
    wire = record.to_wire()
    assert wire["t"] == record.t
    [back] = FrameReader().feed(pack(wire))
    assert type(record).from_wire(back) == record


@pytest.mark.parametrize("q", [None, 0.0, 17.125])
@pytest.mark.parametrize("text", ["hello ", "", "hé ✓ 🙂", "x" * 5000])
def test_the_token_fast_path_is_the_record(text: str, q: float | None) -> None:
    fast = tok_values(3, text, 1, q)
    record = Tok(3, text, 1, q)
    assert fast == record.to_wire() and list(fast) == list(record.to_wire())
    assert pack(fast) == pack(record.to_wire())  # byte for byte
    [back] = FrameReader().feed(pack(fast))
    assert tok_event(back) == Tok.from_wire(back).event()


def test_done_and_finish_event_convert_both_ways() -> None:
    event = FinishEvent("length", 12, 30, 1.5, None, 8)
    done = Done.of(4, event)
    assert done.event() == event
    assert Done.from_wire(done.to_wire()).event() == event
    wire = Done(4, "stop").to_wire()
    assert "error" not in wire and "cached" not in wire  # optional fields are absent when empty


BAD: list[tuple[type[Any], dict[str, Any], str]] = [
    (Gen, {"t": "gen", "messages": []}, "'id' is missing"),
    (Gen, {"t": "gen", "id": "7", "messages": []}, "'id' must be an integer"),
    (Gen, {"t": "gen", "id": 1, "messages": [["user"]]}, "[role, content]"),
    (Gen, {"t": "gen", "id": 1, "messages": [["robot", "hi"]]}, "role one of"),
    (Gen, {"t": "gen", "id": 1, "messages": [], "params": {"max_tokens": "9"}}, "'max_tokens' must be an integer"),
    (Gen, {"t": "gen", "id": 1, "messages": [], "params": {"beams": 4}}, "unknown params ['beams']"),
    (Gen, {"t": "gen", "id": 1, "messages": [], "media": [["video", "v/x", b""]]}, "media part"),
    (Gen, {"t": "gen", "id": 1, "messages": [], "win": 1.5}, "'win' must be an integer"),
    (Gen, {"t": "gen", "id": True, "messages": []}, "'id' must be an integer"),
    (Grant, {"t": "credit", "id": 1, "n": -4}, "must not be negative"),
    (Grant, {"t": "credit", "id": 1}, "'n' is missing"),
    (Cancel, {"t": "cancel", "id": None}, "'id' must be an integer"),
    (Tok, {"t": "tok", "id": 1, "text": b"raw", "n": 1}, "'text' must be a string"),
    (Done, {"t": "done", "id": 1, "reason": "exploded"}, "'reason' must be one of"),
    (Done, {"t": "done", "id": 1, "reason": "stop", "prompt": "12"}, "'prompt' must be an integer"),
    (Load, {"t": "load", "active": 0, "waiting": 0, "capacity": 1}, "'inflight' is missing"),
    (Load, {"t": "load", "active": 0, "waiting": 0, "capacity": 1, "inflight": 0, "cancelling": 0, "limit": 1,
            "admitting": 1, "draining": False}, "'admitting' must be a boolean"),
    (Ready, {"t": "ready", "name": "w", "engine": "e", "model": "m", "modalities": "text", "capacity": 1,
             "pid": 1}, "'modalities' must be a list of strings"),
    (HostLoad, {"t": "load", "active": 0, "waiting": 0, "capacity": 1, "kv": {"hits": "3"}}, "'kv'"),
    (Fail, {"t": "fail"}, "'error' is missing"),
]


@pytest.mark.parametrize(("record", "frame", "why"), BAD, ids=[f"{r.__name__}-{w}" for r, _, w in BAD])
def test_a_malformed_frame_is_a_protocol_error_naming_the_field(record: type[Any], frame: dict[str, Any],
                                                                why: str) -> None:
    with pytest.raises(WorkerProtocolError) as err:
        record.from_wire(frame)
    assert why in str(err.value) and str(err.value).startswith("bad ")


@pytest.mark.parametrize("frame", [{"t": "tok", "id": 1, "text": 5, "n": 1}, {"t": "tok", "id": 1, "text": "a"},
                                   {"t": "tok", "id": 1, "text": "a", "n": 1, "q": "slow"}])
def test_the_token_fast_path_rejects_what_the_record_rejects(frame: dict[str, Any]) -> None:
    with pytest.raises(WorkerProtocolError, match="bad tok frame"):
        tok_event(frame)


def test_a_gen_without_a_response_id_takes_its_wire_id() -> None:
    frame = msgpack.unpackb(msgpack.packb({"t": "gen", "id": 5, "messages": [["user", "hi"]]}))
    assert Gen.from_wire(frame).request.request_id == "5"
    assert Gen.from_wire(frame).request.params == SamplingParams()


def test_the_worker_wire_imports_no_io_libraries() -> None:
    """frames.py and wire.py are pure: a worker, a gateway or a fuzzer can use them without an event loop."""
    code = (
        "import sys\n"
        "import rtserver.workers.frames, rtserver.workers.wire\n"
        "print(','.join(m for m in ('asyncio', 'websockets', 'redis', 'onnxruntime') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
