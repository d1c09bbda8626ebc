"""``rtserver serve --processes N``: real processes on one port, one worker, one Redis, one /metrics."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rtserver.client import Client
from tests.redis_server import GatewayProcess, RedisServer, gateway_factory, redis_prefix, redis_server

__all__ = ["gateway_factory", "redis_prefix", "redis_server"]

TOKENS = 40
SERVE = ("--embedded-engine", "synthetic", "--model-id", "synthetic", "--synthetic-rate", "100",
         "--synthetic-tokens", str(TOKENS))


def test_several_processes_without_redis_are_refused_in_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "rtserver", "serve", "--port", "0", "--processes", "2", *SERVE],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "--processes > 1 needs --redis" in proc.stderr


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the direct children of ``pid`` (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append((int(entry), cmdline))
    return out


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        body: bytes = r.read()
    return body.decode()


def _metric(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@pytest.fixture
def host(redis_server: RedisServer, redis_prefix: str,
         gateway_factory: Callable[..., GatewayProcess]) -> Iterator[GatewayProcess]:
    yield gateway_factory("--processes", "2", "--redis", redis_server.url, "--key-prefix", redis_prefix, *SERVE)


@pytest.mark.redis
def test_two_gateway_processes_share_one_worker(host: GatewayProcess) -> None:
    assert host.proc is not None
    kids = _children(host.proc.pid)
    workers = [c for c in kids if " worker " in c[1]]
    gateways = [c for c in kids if "multiprocessing" in c[1] and "resource_tracker" not in c[1]]
    assert len(workers) == 1, kids
    assert len(gateways) == 2, kids


@pytest.mark.redis
async def test_conversations_resume_and_metrics_span_the_processes(host: GatewayProcess) -> None:
    n = 16
    sessions: list[dict[str, Any]] = []
    for i in range(n):  # each connection lands on either process (the kernel picks)
        async with await Client.connect(host.ws) as c:
            answer = await c.ask(f"hello number {i}")
            assert answer.done is not None and answer.done["last_seq"] == TOKENS - 1
            assert c.session is not None
            sessions.append(c.session)
    for session in sessions[:6]:  # a resume may reach the other process: the session is in Redis
        hello = {"session_id": session["session_id"], "resume_token": session["resume_token"]}
        async with await Client.connect(host.ws, hello=hello) as c2:
            assert c2.session is not None and c2.session["resumed"] is True
            again = await c2.ask("and then?")
            assert again.route is not None and again.route["decision"] == "bypass"
    text = await asyncio.to_thread(_get, f"http://127.0.0.1:{host.port}/metrics")
    # one scrape, whichever process answers it, counts every message of the host
    assert _metric(text, "rtserver_messages_total") == n + 6
    assert _metric(text, "rtserver_session_creations_total") == n
    assert _metric(text, "rtserver_resumes_total") >= 6


@pytest.mark.redis
async def test_a_gateway_process_that_dies_is_replaced(host: GatewayProcess) -> None:
    assert host.proc is not None
    gateways = [pid for pid, cmd in _children(host.proc.pid) if "multiprocessing" in cmd
                and "resource_tracker" not in cmd]
    os.kill(gateways[0], 9)
    for _ in range(100):
        now = [pid for pid, cmd in _children(host.proc.pid) if "multiprocessing" in cmd
               and "resource_tracker" not in cmd]
        if len(now) == 2 and gateways[0] not in now:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("the dead gateway process was not replaced")
    for i in range(6):
        async with asyncio.timeout(30):
            while True:  # the new process may still be starting: a refused socket is retried
                try:
                    async with await Client.connect(host.ws) as c:
                        answer = await c.ask(f"still there {i}?")
                    break
                except OSError:
                    await asyncio.sleep(0.2)
        assert answer.done is not None and answer.done["last_seq"] == TOKENS - 1
