from __future__ import annotations

import random

import msgpack
import pytest

from rtserver.engines.base import ChatMessage, GenerateRequest, MediaPart, SamplingParams
from rtserver.exceptions import WorkerProtocolError
from rtserver.workers.frames import Gen
from rtserver.workers.wire import FrameReader, pack


def test_frames_survive_any_chunking() -> None:
    frames = [{"t": "tok", "id": i, "text": "é" * (i % 7), "n": 1} for i in range(500)]
    data = b"".join(pack(f) for f in frames)
    rng = random.Random(7)
    reader = FrameReader()
    got = []
    i = 0
    while i < len(data):
        step = rng.randrange(1, 64)
        got.extend(reader.feed(data[i : i + step]))
        i += step
    assert got == frames


@pytest.mark.parametrize("data", [msgpack.packb({"id": 1}), msgpack.packb([1, 2]), b"\xc1"])
def test_malformed_frames_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(WorkerProtocolError):
        list(FrameReader().feed(data))


def test_a_generate_request_round_trips() -> None:
    req = GenerateRequest(
        "r_1",
        (ChatMessage("system", "be brief"), ChatMessage("user", "hi")),
        SamplingParams(max_tokens=9, temperature=0.0, top_p=1.0, repetition_penalty=1.1, seed=3),
        (MediaPart("image", "image/png", b"\x89PNG"),),
        prefix="Once upon",
        conversation="sess-42",
    )
    frames = list(FrameReader().feed(pack(Gen(7, req).to_wire())))
    assert frames[0]["id"] == 7 and Gen.from_wire(frames[0]) == Gen(7, req)
    assert frames[0]["conv"] == "sess-42"


def test_a_gen_frame_without_a_conversation_key_has_none() -> None:
    req = GenerateRequest("r_2", (ChatMessage("user", "hi"),))
    frame = Gen(1, req).to_wire()
    assert "conv" not in frame and Gen.from_wire(frame).request.conversation is None


def test_a_bad_gen_frame_is_a_protocol_error() -> None:
    with pytest.raises(WorkerProtocolError):
        Gen.from_wire({"t": "gen", "id": 1, "messages": [["user"]]})
