"""The engine host under a worker, on real processes (docs/architecture.md, "Workers").

What a user notices: a worker busy prefilling a long prompt is not taken for a dead
one (its heartbeat goes on); a hung worker still is; the engine host never outlives
its worker; a stream whose reader lags is paused at the worker and resumed without
losing a token (docs/worker-protocol.md, "Flow control").
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rtserver.client import Client
from rtserver.workers.wire import pack
from tests.integration.test_worker_cancel import RawWire, gen
from tests.integration.test_workers import WorkerProc, gateway, ok, url, wait_until, worker


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids += [int(k) for k in text]
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


# A prompt of about 1,600 tokens: prefilled in one step, it takes the engine longer
# than the gateway's heartbeat timeout here (seconds on a small CPU).
LONG = " ".join(f"Item {i} of the list is a short sentence about nothing in particular." for i in range(110))


async def test_a_worker_busy_prefilling_a_long_prompt_keeps_its_heartbeat(
    workers: Callable[..., WorkerProc],
) -> None:
    # One step prefills the whole prompt (--prefill-chunk 2048): the engine is busy for
    # the whole of it, and the worker must still answer in time.
    w = workers("ov", "--engine", "openvino", "--model-id", "m", "--capacity", "2", "--prefill-chunk", "2048")
    async with gateway(w.address, model="m", heartbeat_timeout_s=1.0, max_tokens=8,
                       history_max_tokens=4000) as gw, await Client.connect(url(gw)) as c:
        handle = worker(gw, "ov")
        generation = handle.generation
        for i in range(2):
            turn = await c.ask(f"{LONG} Version {i}. Summarise the list.")
            ok(turn)
            assert not [e for e in turn.errors if e["code"] in ("worker_lost", "worker_unavailable")]
        assert handle.alive and handle.generation == generation, "the busy worker was taken for a dead one"


async def test_a_stopped_worker_with_an_engine_host_is_still_detected(workers: Callable[..., WorkerProc]) -> None:
    w1 = workers("w1", "--synthetic-tokens", "8", "--engine-host", "process")
    w2 = workers("w2", "--synthetic-tokens", "8", "--engine-host", "process")
    async with gateway(w1.address, w2.address, heartbeat_timeout_s=1.0) as gw:
        w1.signal(signal.SIGSTOP)  # the worker stops; its engine host goes on, but nobody answers
        await wait_until(lambda: not worker(gw, "w1").alive, "the SIGSTOPped worker is marked dead")
        async with await Client.connect(url(gw)) as c:
            t = await c.ask("hi")
            ok(t)
            assert t.route is not None and t.route["worker"] == "w2"
        w1.signal(signal.SIGCONT)
        await wait_until(lambda: worker(gw, "w1").alive, "the worker is reconnected once it answers again")


async def test_the_engine_host_dies_with_its_worker(workers: Callable[..., WorkerProc]) -> None:
    w = workers("w1", "--synthetic-tokens", "8", "--engine-host", "process")
    hosts = _children(w.proc.pid)
    assert len(hosts) == 1
    w.signal(signal.SIGKILL)
    w.proc.wait()
    deadline = time.monotonic() + 20.0  # only keeps a broken build from hanging
    while _alive(hosts[0]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not _alive(hosts[0]), "the engine host outlived its worker"


async def test_a_worker_whose_engine_host_dies_goes_away_and_the_turn_moves_on(
    workers: Callable[..., WorkerProc],
) -> None:
    w1 = workers("w1", "--synthetic-tokens", "200", "--synthetic-rate", "40", "--engine-host", "process")
    w2 = workers("w2", "--synthetic-tokens", "200", "--synthetic-rate", "40")
    async with gateway(w1.address, w2.address, max_tokens=200) as gw, await Client.connect(url(gw)) as c:
        first = await c.ask("hi")
        ok(first)
        assert first.route is not None
        if first.route["worker"] != "w1":
            pytest.skip("the conversation went to w2")  # least loaded: either is fine, and rare
        os.kill(_children(w1.proc.pid)[0], signal.SIGKILL)
        assert w1.proc.wait(20) != 0  # a worker without its engine exits (its supervisor restarts it)
        turn = await c.ask("again")
        ok(turn)
        assert turn.route is not None and turn.route["worker"] == "w2"


async def test_a_stream_without_credit_pauses_at_the_worker_and_resumes_without_loss(
    workers: Callable[..., WorkerProc],
) -> None:
    w = workers("w1", "--synthetic-tokens", "100", "--synthetic-rate", "0", "--engine-host", "process")
    wire = await RawWire.open(w.address)
    try:
        await wire.next(lambda f: f["t"] == "ready")
        frame = gen(1, max_tokens=100)
        frame["win"] = 4
        wire.writer.write(pack(frame))
        texts = [(await wire.next(lambda f: f["t"] == "tok"))["text"] for _ in range(4)]
        # Two heartbeats later the unpaced stream has sent nothing more: it waits for credit.
        for _ in range(2):
            await wire.next(lambda f: f["t"] == "load")
        assert not [f for f in wire.pending if f["t"] in ("tok", "done")]
        wire.writer.write(pack({"t": "credit", "id": 1, "n": 1000}))
        while True:
            f = await wire.next(lambda f: f["t"] in ("tok", "done"))
            if f["t"] == "done":
                break
            texts.append(f["text"])
        assert f["reason"] == "length" and f["completion"] == 100
        words = "".join(texts).split()
        assert len(words) == 100 and words[:8] == ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur",
                                                  "adipiscing", "elit"]
        assert all(words[k] == words[k % 8] for k in range(100))  # nothing lost, nothing repeated
    finally:
        wire.close()
