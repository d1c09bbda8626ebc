"""Pinned model workers as real processes: ``rtserver worker --engine synthetic`` on loopback,
a gateway (in-process ``Gateway``) with ``--worker ADDR`` twice, and a real WebSocket client.

What a user notices: a conversation stays on one worker; conversations spread over
workers; a worker killed before its first token is invisible (the turn is answered by
the other one); a worker killed mid-stream ends the turn with a retryable
``worker_lost`` and the next message goes to the live worker; a cancel frees the
worker's slot; a hung (SIGSTOPped) worker is dropped by the heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rtserver.client import Client, Turn, collect
from rtserver.config import load_settings
from rtserver.server.app import Gateway
from rtserver.workers.pool import WorkerHandle

# ------------------------------------------------------------------ worker processes


@dataclass
class WorkerProc:
    name: str
    proc: subprocess.Popen[bytes]
    address: str

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait()


def start_worker(name: str, log_dir: Path, *args: str, timeout: float = 120.0) -> WorkerProc:
    """``rtserver worker --engine synthetic --listen 127.0.0.1:0 --name NAME ARGS``; returns once READY.

    A later ``--engine`` in ARGS wins (argparse keeps the last).
    """
    cmd = [sys.executable, "-m", "rtserver", "worker", "--engine", "synthetic", "--listen", "127.0.0.1:0"]
    cmd += ["--name", name, *args]
    log = open(log_dir / f"{name}.log", "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.splitlines():
                if line.startswith(b"READY "):
                    return WorkerProc(name, proc, line.split()[1].decode())
    proc.kill()
    proc.wait()
    raise RuntimeError(f"worker {name} did not print READY: {(log_dir / f'{name}.log').read_text()[-2000:]}")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    started: list[WorkerProc] = []

    def start(name: str, *args: str) -> WorkerProc:
        w = start_worker(name, tmp_path, *args)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


# ------------------------------------------------------------------ gateway


@dataclass(frozen=True)
class St:
    use_case: str
    model_id: str

    def to_dict(self) -> dict[str, str]:
        return {"use_case": self.use_case, "model_id": self.model_id}


@dataclass(frozen=True)
class Dec:
    decision: str
    use_case: str
    model_id: str
    confidence: float
    context_changed: bool
    route_ms: float
    classifier_ms: float | None
    state: St


class FixedRouter:
    """Every conversation is chat on one model: these tests are about workers, not routing."""

    def __init__(self, model: str = "synthetic") -> None:
        self.model = model

    async def route(self, state: St | None, text: str, kinds: Any, ctx: Any) -> Dec:
        if state is None:
            return Dec("full", "chat", self.model, 0.9, False, 0.5, 0.4, St("chat", self.model))
        return Dec("bypass", state.use_case, state.model_id, 0.9, False, 0.01, None, state)


@contextlib.asynccontextmanager
async def gateway(*addresses: str, model: str = "synthetic", **overrides: Any) -> AsyncIterator[Gateway]:
    settings = load_settings(
        env={},
        overrides={
            "port": 0,
            "worker": list(addresses),
            "model_id": "synthetic",
            "heartbeat_timeout_s": 2.0,
            "worker_retry_s": 10.0,
            "messages_per_second": 100.0,
            "message_burst": 100,
            **overrides,
        },
    )
    gw = Gateway(settings, router=FixedRouter(model))
    async with gw.lifespan():
        await wait_until(lambda: all(w.alive for w in gw.pool.workers), "every worker connected")
        yield gw


def url(gw: Gateway) -> str:
    return f"ws://127.0.0.1:{gw.port}/ws"


def worker(gw: Gateway, name: str) -> WorkerHandle:
    w = gw.pool.by_name(name)
    assert w is not None, f"no worker named {name}"
    return w


async def wait_until(cond: Callable[[], bool], what: str, within_s: float = 20.0) -> None:
    """Poll ``cond``; the bound only keeps a broken build from hanging the suite."""
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


async def read_until(c: Client, turn: Turn, stop: Callable[[dict[str, Any]], bool]) -> None:
    while True:
        frame = await c.recv(30.0)
        collect(turn, frame, time.perf_counter())
        if stop(frame):
            return


def ok(turn: Turn) -> None:
    assert turn.done is not None, turn
    assert turn.done["finish_reason"] in ("stop", "length"), turn.done
    assert not turn.errors, turn.errors
    assert turn.text.strip() and turn.seq_gaps == 0


# ------------------------------------------------------------------ tests


async def test_a_conversation_stays_pinned_to_its_worker(workers: Callable[..., WorkerProc]) -> None:
    w1, w2 = workers("w1", "--synthetic-tokens", "8", "--synthetic-rate", "0"), workers("w2", "--synthetic-tokens", "8")
    async with gateway(w1.address, w2.address) as gw, await Client.connect(url(gw)) as c:
        turns = [await c.ask(f"turn {i}") for i in range(6)]
        for t in turns:
            ok(t)
        names = {t.route["worker"] for t in turns if t.route}
        assert len(names) == 1 and names <= {"w1", "w2"}, names


async def test_conversations_spread_over_both_workers(workers: Callable[..., WorkerProc]) -> None:
    w1 = workers("w1", "--synthetic-tokens", "16", "--synthetic-rate", "100")
    w2 = workers("w2", "--synthetic-tokens", "16", "--synthetic-rate", "100")
    async with gateway(w1.address, w2.address) as gw:
        clients = [await Client.connect(url(gw)) for _ in range(16)]
        try:
            turns = await asyncio.gather(*(c.ask("hello") for c in clients))
        finally:
            await asyncio.gather(*(c.close() for c in clients))
    for t in turns:
        ok(t)
    per = {n: sum(1 for t in turns if t.route and t.route["worker"] == n) for n in ("w1", "w2")}
    assert per["w1"] + per["w2"] == 16
    assert min(per.values()) >= 4, f"least-loaded choice should spread 16 conversations: {per}"


async def test_worker_killed_before_first_token_is_retried_on_the_other(
    workers: Callable[..., WorkerProc],
) -> None:
    w1, w2 = workers("w1", "--synthetic-tokens", "8"), workers("w2", "--synthetic-tokens", "8")
    procs = {"w1": w1, "w2": w2}
    async with gateway(w1.address, w2.address, heartbeat_timeout_s=10.0) as gw, await Client.connect(url(gw)) as c:
        first = await c.ask("hello")
        ok(first)
        assert first.route is not None
        pinned = procs[first.route["worker"]]
        other = next(n for n in procs if n != pinned.name)
        pinned.signal(signal.SIGSTOP)  # alive for the gateway, but it will never answer
        turn = Turn(message_id=await c.send_message("again"), sent_at=time.perf_counter())
        await read_until(c, turn, lambda f: f["type"] == "route")
        assert turn.route is not None and turn.route["worker"] == pinned.name  # the gen frame went to it
        pinned.signal(signal.SIGKILL)  # dies before its first token
        await read_until(c, turn, lambda f: f["type"] == "done")
        ok(turn)  # no error frame: the retry on the other worker is transparent
        assert worker(gw, other).alive
        after = await c.ask("and again")
        ok(after)
        assert after.route is not None and after.route["worker"] == other  # re-pinned


async def test_worker_killed_mid_stream_continues_on_the_other(workers: Callable[..., WorkerProc]) -> None:
    slow = ("--synthetic-tokens", "120", "--synthetic-rate", "40")
    w1, w2 = workers("w1", *slow), workers("w2", *slow)
    procs = {"w1": w1, "w2": w2}
    async with gateway(w1.address, w2.address, max_tokens=400) as gw, await Client.connect(url(gw)) as c:
        turn = Turn(message_id=await c.send_message("tell me a long story"), sent_at=time.perf_counter())
        await read_until(c, turn, lambda f: f["type"] == "token" and f["seq"] >= 5)
        assert turn.route is not None
        victim = procs[turn.route["worker"]]
        survivor = next(n for n in procs if n != victim.name)
        victim.signal(signal.SIGKILL)
        await read_until(c, turn, lambda f: f["type"] == "done")
        assert turn.done is not None and turn.done["finish_reason"] == "stop", turn.errors
        assert turn.errors == [] and turn.seq_gaps == 0
        seams = [t for t in turn.tokens if "seam" in t]
        assert len(seams) == 1 and seams[0]["seam"] == {"worker": survivor, "reason": "worker_lost"}
        # The answer reads as one: the survivor went on from the words already sent
        # (the synthetic engine's output is deterministic, so nothing repeats or is skipped).
        words = turn.text.split()
        assert len(words) == 120 and words[:8] == ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur",
                                                  "adipiscing", "elit"] and words[8:16] == words[:8]
        assert all(words[k] == words[k % 8] for k in range(120))
        nxt = Turn(message_id=await c.send_message("go on"), sent_at=time.perf_counter())
        await read_until(c, nxt, lambda f: f["type"] == "token")
        assert nxt.route is not None and nxt.route["worker"] == survivor  # re-pinned to the live worker


async def test_the_only_worker_killed_mid_stream_ends_the_turn_with_worker_lost(
    workers: Callable[..., WorkerProc],
) -> None:
    w1 = workers("w1", "--synthetic-tokens", "400", "--synthetic-rate", "20")
    async with gateway(w1.address, max_tokens=400) as gw, await Client.connect(url(gw)) as c:
        turn = Turn(message_id=await c.send_message("tell me a long story"), sent_at=time.perf_counter())
        await read_until(c, turn, lambda f: f["type"] == "token" and f["seq"] >= 2)
        w1.signal(signal.SIGKILL)
        await read_until(c, turn, lambda f: f["type"] == "done")
        assert turn.done is not None and turn.done["finish_reason"] == "error"
        lost = [e for e in turn.errors if e["code"] == "worker_lost"]
        assert lost and lost[0]["retryable"] is True, turn.errors
        assert len(turn.tokens) >= 3 and turn.seq_gaps == 0  # what was streamed stays streamed
        assert not worker(gw, "w1").alive


async def test_cancel_frees_the_slot_on_the_worker(workers: Callable[..., WorkerProc]) -> None:
    # 1000 tokens at 5/s: without the cancel reaching the engine, the slot stays busy for minutes.
    w1 = workers("w1", "--synthetic-tokens", "1000", "--synthetic-rate", "5")
    async with gateway(w1.address, max_tokens=1000) as gw, await Client.connect(url(gw)) as c:
        w = worker(gw, "w1")
        turn = Turn(message_id=await c.send_message("go on forever"), sent_at=time.perf_counter())
        await read_until(c, turn, lambda f: f["type"] == "token")
        await wait_until(lambda: w.state.active == 1, "the worker's load frame shows the stream")
        await c.cancel()
        await read_until(c, turn, lambda f: f["type"] == "done")
        assert turn.done is not None and turn.done["finish_reason"] == "cancelled"
        await wait_until(lambda: w.state.active == 0, "the worker's load frame shows the slot free again")


async def test_a_hung_worker_is_dropped_by_the_heartbeat_timeout(workers: Callable[..., WorkerProc]) -> None:
    w1, w2 = workers("w1", "--synthetic-tokens", "8"), workers("w2", "--synthetic-tokens", "8")
    async with gateway(w1.address, w2.address, heartbeat_timeout_s=1.0) as gw:
        w1.signal(signal.SIGSTOP)
        await wait_until(lambda: not worker(gw, "w1").alive, "the SIGSTOPped worker is marked dead")
        assert worker(gw, "w2").alive
        ready = gw.readiness()
        assert ready["status"] == "ready"
        assert {w["name"]: w["alive"] for w in ready["workers"]} == {"w1": False, "w2": True}
        async with await Client.connect(url(gw)) as c:
            for _ in range(3):  # every new conversation avoids the hung worker
                t = await c.ask("hi")
                ok(t)
                assert t.route is not None and t.route["worker"] == "w2"
        w1.signal(signal.SIGCONT)
        await wait_until(lambda: worker(gw, "w1").alive, "the worker is reconnected once it answers again")


async def test_a_hung_worker_mid_stream_ends_the_turn_with_worker_lost(workers: Callable[..., WorkerProc]) -> None:
    w1 = workers("w1", "--synthetic-tokens", "400", "--synthetic-rate", "20")
    async with gateway(w1.address, heartbeat_timeout_s=1.0, max_tokens=400) as gw, await Client.connect(url(gw)) as c:
        turn = Turn(message_id=await c.send_message("a long one"), sent_at=time.perf_counter())
        await read_until(c, turn, lambda f: f["type"] == "token")
        w1.signal(signal.SIGSTOP)
        await read_until(c, turn, lambda f: f["type"] == "done")
        assert turn.done is not None and turn.done["finish_reason"] == "error"
        assert [e["code"] for e in turn.errors] == ["worker_lost"]
        assert not worker(gw, "w1").alive


# ------------------------------------------------------------------ the other engines behind the same wire


async def test_an_openai_worker_in_front_of_llama_cpp_server(workers: Callable[..., WorkerProc]) -> None:
    from tests.fixtures.llama_server import MODEL_ALIAS, llama_server

    with llama_server() as base:
        w = workers("oa", "--engine", "openai", "--model", MODEL_ALIAS, "--base-url", base, "--capacity", "2")
        async with gateway(w.address, model=MODEL_ALIAS, max_tokens=12) as gw, await Client.connect(url(gw)) as c:
            assert worker(gw, "oa").state.engine == "openai"
            first = await c.ask("Name a colour.")
            second = await c.ask("And another one?")
            for t in (first, second):
                ok(t)
                assert t.route is not None and t.route["worker"] == "oa"
            assert second.done is not None and first.done is not None
            assert second.done["usage"]["prompt_tokens"] > first.done["usage"]["prompt_tokens"]  # history sent


async def test_a_transformers_worker_with_a_tiny_cpu_model(workers: Callable[..., WorkerProc], tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the transformers engine needs torch (the 'gpu' extra)")
    pytest.importorskip("transformers", reason="the transformers engine needs transformers (the 'gpu' extra)")
    from tests.fixtures.tiny_model import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny")
    w = workers("tf", "--engine", "transformers", "--model", str(folder), "--model-id", "tiny", "--capacity", "4")
    async with gateway(w.address, model="tiny", max_tokens=8) as gw, await Client.connect(url(gw)) as c:
        assert worker(gw, "tf").state.engine == "transformers"
        t = await c.ask("hello")
        ok(t)
        assert t.route is not None and t.route["worker"] == "tf"
        assert t.done is not None and t.done["usage"]["completion_tokens"] <= 8
