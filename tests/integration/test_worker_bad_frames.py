"""A worker given a malformed frame (docs/worker-protocol.md, "Transport"), on a real process.

What an operator notices: a gateway (or anything else) that sends a frame with a field
missing or of the wrong type loses its connection, with a log line naming the frame and
the field; the worker does not crash, frees what that connection held, and keeps
serving every other connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rtserver.workers.wire import pack
from tests.integration.test_worker_cancel import RawWire, gen
from tests.integration.test_workers import WorkerProc

BAD = [
    ({"t": "gen", "id": "1", "messages": [["user", "hi"]]}, "bad gen frame: 'id' must be an integer"),
    ({"t": "gen", "id": 2, "messages": [["user"]]}, "bad gen frame: a message must be [role, content]"),
    ({"t": "gen", "id": 3, "messages": [], "params": {"max_tokens": "many"}}, "'max_tokens' must be an integer"),
    ({"t": "credit", "id": 1, "n": "lots"}, "bad credit frame: 'n' must be an integer"),
    ({"t": "cancel"}, "bad cancel frame: 'id' is missing"),
]


@pytest.mark.parametrize(("frame", "logged"), BAD, ids=[b[1][:30] for b in BAD])
async def test_a_malformed_frame_drops_only_its_connection(
    workers: Callable[..., WorkerProc], tmp_path: Path, frame: dict[str, Any], logged: str,
) -> None:
    w = workers("bad", "--synthetic-tokens", "400", "--synthetic-rate", "50")
    bystander = await RawWire.open(w.address)
    culprit = await RawWire.open(w.address)
    try:
        await bystander.next(lambda f: f["t"] == "ready")
        await culprit.next(lambda f: f["t"] == "ready")
        bystander.writer.write(pack(gen(1, max_tokens=400)))
        await bystander.next(lambda f: f["t"] == "tok" and f["id"] == 1)
        culprit.writer.write(pack(gen(1, max_tokens=400)))  # holds a slot, freed when its connection goes
        await culprit.next(lambda f: f["t"] == "tok" and f["id"] == 1)
        culprit.writer.write(pack(frame))
        async with asyncio.timeout(30):
            while await culprit.reader.read(65536):
                pass  # the worker closes the connection
        # The other connection goes on: its stream streams, and a new request is served.
        await bystander.next(lambda f: f["t"] == "tok" and f["id"] == 1)
        bystander.writer.write(pack(gen(2, max_tokens=3)))
        done = await bystander.next(lambda f: f["t"] == "done" and f["id"] == 2)
        assert done["reason"] == "length" and done["completion"] == 3
        load = await bystander.next(lambda f: f["t"] == "load" and f["inflight"] == 1)  # only the bystander's
        assert load["admitting"] is True
        assert w.proc.poll() is None
    finally:
        bystander.close()
        culprit.close()
    log = (tmp_path / "bad.log").read_text()
    assert logged in log
