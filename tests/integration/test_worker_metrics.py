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
