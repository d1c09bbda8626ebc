"""A cancel never leaks a worker's admission slot (issue 18, item 1; issue 12, item 4).

On real processes: a ``rtserver worker`` spoken to on its raw wire, and a real gateway
(``rtserver serve``) with its embedded worker on the real embedded model. What a user
notices: after a storm of Stop presses the next message is answered, not refused with
``overloaded``, and the worker reports its slots free again.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from rtserver.client import Client, Turn, collect
from rtserver.workers.wire import FrameReader, pack
from tests.integration.test_workers import WorkerProc
from tests.procs import gateway as gateway_proc

PAIRS = 1_200  # more than the synthetic worker's whole admission bound (1,024 + 64)


class RawWire:
    """The gateway's end of the worker wire, spoken by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameReader()
        self.pending: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, address: str) -> RawWire:
        host, _, port = address.rpartition(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def next(self, want: Callable[[dict[str, Any]], bool], within_s: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(within_s):
            while True:
                while self.pending:
                    frame = self.pending.pop(0)
                    if want(frame):
                        return frame
                data = await self.reader.read(65536)
                assert data, "the worker closed the connection"
                self.pending.extend(self.decoder.feed(data))

    def close(self) -> None:
        self.writer.close()


def gen(wire_id: int, text: str = "hi", max_tokens: int = 8) -> dict[str, Any]:
    return {"t": "gen", "id": wire_id, "rid": f"r{wire_id}", "messages": [["user", text]],
            "params": {"max_tokens": max_tokens}}


async def test_gen_and_cancel_in_one_read_answer_done_and_free_the_slot(
    workers: Callable[..., WorkerProc],
) -> None:
    w = workers("w1", "--synthetic-tokens", "200", "--synthetic-rate", "20")
    wire = await RawWire.open(w.address)
    try:
        await wire.next(lambda f: f["t"] == "ready")
        # Every gen immediately followed by its cancel, all in one write: the worker reads
        # many pairs in one read (the Stop button pressed as soon as the turn started).
        wire.writer.write(b"".join(pack(gen(i)) + pack({"t": "cancel", "id": i}) for i in range(1, PAIRS + 1)))
        await wire.writer.drain()
        answered: set[int] = set()
        while len(answered) < PAIRS:  # docs/worker-protocol.md: every gen gets exactly one done
            frame = await wire.next(lambda f: f["t"] == "done")
            # A gen read while the slots of the cancels before it are not yet given back may
            # be refused (documented: ``overloaded``); either way it is answered.
            assert frame["reason"] in ("cancelled", "length", "stop") or frame.get("error") == "overloaded", frame
            answered.add(frame["id"])
        assert answered == set(range(1, PAIRS + 1))
        # A normal request afterwards is served, not refused as overloaded.
        wire.writer.write(pack(gen(PAIRS + 1, max_tokens=4)))
        done = await wire.next(lambda f: f["t"] == "done" and f["id"] == PAIRS + 1)
        assert done["reason"] in ("stop", "length"), done
        # The heartbeat tells the truth: nothing is in flight any more.
        load = await wire.next(lambda f: f["t"] == "load" and f["inflight"] == 0 and f["active"] == 0)
        assert load["draining"] is False
    finally:
        wire.close()


def _readyz(http: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{http}/readyz", timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


async def _cancel_after_route(url: str) -> None:
    async with await Client.connect(url) as c:
        for i in range(10):
            mid = await c.send_message(f"Tell me a long story about number {i}.")
            turn = Turn(message_id=mid, sent_at=time.perf_counter())
            while True:
                frame = await c.recv(120.0)
                collect(turn, frame, time.perf_counter())
                if frame["type"] == "route":
                    await c.cancel(frame["response_id"])
                if frame["type"] == "done":
                    break


async def test_a_cancel_storm_through_the_gateway_leaves_the_model_worker_serving() -> None:
    # 50 sockets x 10 rounds, each pressing Stop right after its route frame, against the
    # real embedded model in its own worker process.
    with gateway_proc("--capacity", "4", "--max-tokens", "32", "--messages-per-second", "1000",
                      "--message-burst", "1000") as gw:
        await asyncio.gather(*(_cancel_after_route(gw.url) for _ in range(50)))
        async with await Client.connect(gw.url) as c:
            turn = await c.ask("Say hello.")
        assert turn.done is not None and turn.done["finish_reason"] in ("stop", "length"), (turn.done, turn.errors)
        assert not [e for e in turn.errors if e["code"] == "overloaded"], turn.errors
        deadline = time.monotonic() + 2.0  # a bounded wait for the next heartbeats
        while True:
            workers_ = _readyz(gw.http)["workers"]
            if all(w["active"] == 0 and w["waiting"] == 0 and w["inflight"] == 0 for w in workers_) \
                    or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        # /readyz tells the truth about admission: no sequence, no slot held, admitting.
        assert [(w["active"], w["waiting"], w["inflight"], w["admitting"]) for w in workers_] == [(0, 0, 0, True)], \
            workers_
