"""A worker process exports its own Prometheus metrics (``--metrics-port``)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import urllib.request

from rtserver.engines.base import ChatMessage, FinishEvent, GenerateRequest, SamplingParams, TokenEvent
from rtserver.workers.client import WorkerClient
from tests.procs import stop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_worker_metrics_endpoint() -> None:
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - a short-lived start, read on a thread below
        [sys.executable, "-m", "rtserver", "worker", "--engine", "synthetic", "--synthetic-tokens", "7",
         "--synthetic-rate", "0", "--listen", "127.0.0.1:0", "--name", "m1", "--metrics-port", str(port)],
        stdout=subprocess.PIPE, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line.startswith(b"READY ")
        client = WorkerClient(line.split()[1].decode())
        await client.connect()
        events = [e async for e in client.generate(
            GenerateRequest("r1", (ChatMessage("user", "hi"),), SamplingParams(max_tokens=100)))]
        assert sum(isinstance(e, TokenEvent) for e in events) == 7 and isinstance(events[-1], FinishEvent)
        await client.close()

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                return r.read().decode()

        text = await asyncio.to_thread(scrape)
        assert "rtserver_worker_tokens_total 7.0" in text
        assert 'rtserver_worker_requests_total{finish_reason="stop"} 1.0' in text
        assert "rtserver_worker_ttft_seconds_count 1.0" in text
        assert "rtserver_worker_engine_capacity" in text
    finally:
        stop(proc)


async def test_worker_admission_is_bounded() -> None:
    """Beyond capacity + max_queue a worker refuses at once with ``overloaded`` (and counts it)."""
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - a short-lived start, read on a thread below
        [sys.executable, "-m", "rtserver", "worker", "--engine", "synthetic", "--synthetic-tokens", "50",
         "--synthetic-rate", "40", "--listen", "127.0.0.1:0", "--name", "tight", "--max-queue", "0",
         "--metrics-port", str(port)],
        stdout=subprocess.PIPE, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        client = WorkerClient(line.split()[1].decode())
        await client.connect()

        async def one(i: int) -> FinishEvent:
            req = GenerateRequest(f"r{i}", (ChatMessage("user", "hi"),), SamplingParams(max_tokens=50))
            events = [e async for e in client.generate(req)]
            assert isinstance(events[-1], FinishEvent)
            return events[-1]

        # The synthetic engine has 1,024 slots; with no queue, request 1,025 on is refused
        # (each stream takes over a second, so all 1,030 are in flight together).
        ends = await asyncio.gather(*(one(i) for i in range(1030)))
        refused = [e for e in ends if e.reason == "error" and e.error == "overloaded"]
        served = [e for e in ends if e.reason in ("stop", "length")]
        assert len(served) == 1024 and len(refused) == 6
        await client.close()

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                return r.read().decode()

        assert 'rtserver_worker_rejected_total{reason="overloaded"} 6.0' in await asyncio.to_thread(scrape)
    finally:
        stop(proc)
