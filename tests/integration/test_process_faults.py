"""Defects of issue 18 that involve processes, on real ones: Ctrl-C and the embedded
worker (item 8), a lone worker lost before its first token (9), the reason logged for
a lost worker (13). Gateways are ``rtserver serve`` processes, workers ``rtserver
worker`` processes (synthetic engine)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from rtserver.client import Client
from tests.integration.logged_gateway import LoggedGateway, logged_gateway
from tests.integration.test_workers import WorkerProc, workers
from tests.redis_server import free_port

__all__ = ["logged_gateway", "workers"]

Start = Callable[..., LoggedGateway]
SYNTH = ("--embedded-engine", "synthetic", "--model-id", "synthetic")


def stuck_client(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never answers anything
    (not even the close handshake): it holds the gateway's shutdown for a while."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def gone(pid: int) -> bool:
    """The process exited (a zombie nobody reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_ctrl_c_drains_on_the_embedded_worker_and_never_restarts_it(logged_gateway: Start) -> None:
    gw = logged_gateway(*SYNTH, "--synthetic-rate", "20", "--synthetic-tokens", "60", "--shutdown-grace-s", "30")
    [child] = gw.children()
    stuck = stuck_client(gw.port)  # the gateway's shutdown outlasts its last response
    c = await Client.connect(gw.ws)
    mid = await c.send_message("a long answer please")
    frames: list[dict[str, Any]] = []
    while not any(f["type"] == "token" for f in frames):
        frames.append(await c.recv(15))
    os.killpg(gw.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    async with asyncio.timeout(30):
        async for f in c.stream(mid):
            frames.append(f)
    tokens = [f for f in frames if f["type"] == "token"]
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "stop"
    assert [t["seq"] for t in tokens] == list(range(60))  # the worker answered through the drain
    with pytest.raises(ConnectionClosed) as info:
        await c.recv(30)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1012
    assert await asyncio.to_thread(gw.proc.wait, 30) == 0
    stuck.close()
    await until(lambda: gone(child), 15, "the embedded worker to exit with the gateway")
    assert "restarting" not in gw.log()


async def test_the_embedded_worker_dies_with_a_killed_gateway(logged_gateway: Start) -> None:
    gw = logged_gateway(*SYNTH)
    [child] = gw.children()
    try:
        os.kill(gw.proc.pid, signal.SIGKILL)  # the gateway alone, no chance to clean up
        await asyncio.to_thread(gw.proc.wait, 10)
        await until(lambda: gone(child), 15, "the orphaned embedded worker to exit")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


async def test_a_lone_worker_lost_before_its_first_token_is_waited_for(
    logged_gateway: Start, workers: Callable[..., WorkerProc]
) -> None:
    port = free_port()
    wargs = ("--listen", f"127.0.0.1:{port}", "--model-id", "synthetic", "--synthetic-rate", "100",
             "--synthetic-tokens", "20")
    first = workers("solo", *wargs)
    gw = logged_gateway("--worker", f"127.0.0.1:{port}", "--model-id", "synthetic", "--worker-retry-s", "60",
                        "--heartbeat-timeout-s", "60")
    async with await Client.connect(gw.ws) as c:
        assert (await c.ask("warm up")).done is not None
        first.signal(signal.SIGSTOP)  # the request reaches it, no token comes back
        mid = await c.send_message("are you there?")
        frames = [await c.recv(15)]
        assert frames[0]["type"] == "route"
        first.signal(signal.SIGKILL)  # lost before its first token, and no other worker
        first.proc.wait(10)
        workers("solo", *wargs)  # a replacement comes up on the same address
        async with asyncio.timeout(60):
            async for f in c.stream(mid):
                frames.append(f)
    assert [f for f in frames if f["type"] == "error"] == []
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "stop"
    assert [f["seq"] for f in frames if f["type"] == "token"] == list(range(20))


async def test_a_worker_lost_by_heartbeat_timeout_is_logged_with_its_reason(
    logged_gateway: Start, workers: Callable[..., WorkerProc]
) -> None:
    w = workers("sleepy", "--model-id", "synthetic")
    gw = logged_gateway("--worker", w.address, "--model-id", "synthetic", "--heartbeat-timeout-s", "1")
    w.signal(signal.SIGSTOP)
    try:
        await until(lambda: "worker sleepy lost" in gw.log(), 30, "the loss to be logged")
    finally:
        w.signal(signal.SIGCONT)
    line = next(ln for ln in gw.log().splitlines() if "worker sleepy lost" in ln)
    reason = re.split(r"worker sleepy lost:?", line, maxsplit=1)[1].strip()
    assert "heartbeat" in reason, line
