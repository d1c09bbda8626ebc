"""Connection floods, abrupt disconnects mid-response and half-open sockets free
every resource: memory stays level over many cycles, worker slots are cancelled,
conversations are forgotten after the resume grace, idle sockets are closed."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rtserver.client import Client
from tests.procs import gateway


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def ready(http: str) -> dict[str, object]:
    with urllib.request.urlopen(http + "/readyz", timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


async def cycle(url: str, n: int) -> None:
    async def one(i: int) -> None:
        ws = await connect(url, open_timeout=20)
        await ws.send(orjson.dumps({"type": "message", "id": f"m{i}", "text": "tell me everything"}).decode())
        await ws.recv()  # session
        await ws.recv()  # route: a response is streaming now
        if i % 2:
            ws.transport.abort()  # abrupt: no close handshake
        else:
            await ws.close()

    for start in range(0, n, 50):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + 50))))


async def test_memory_stays_level_and_slots_are_freed() -> None:
    with gateway("--embedded-engine", "synthetic", "--model-id", "synthetic", "--synthetic-rate", "20",
                 "--synthetic-tokens", "2000", "--max-tokens", "2000", "--resume-grace-s", "0.5",
                 "--max-connections-per-ip", "1000", "--messages-per-second", "50") as gw:
        pid = gw.proc.pid
        await cycle(gw.url, 200)  # warm-up round: allocator pools, imports
        await asyncio.sleep(1.5)
        base = rss_kb(pid)
        for _ in range(4):
            await cycle(gw.url, 200)
        async with asyncio.timeout(30):  # every abandoned response is cancelled after the grace
            while True:
                r = await asyncio.to_thread(ready, gw.http)
                workers = r["workers"]
                assert isinstance(workers, list)
                if r["conversations"] == 0 and workers[0]["active"] == 0:
                    break
                await asyncio.sleep(0.25)
        grown = rss_kb(pid) - base
        assert grown < 20_000, f"gateway RSS grew by {grown} KB over 800 abandoned conversations"
        async with await Client.connect(gw.url) as c:  # and it still serves
            mid = await c.send_message("hi")
            async for f in c.stream(mid):
                if f["type"] == "token":
                    await c.cancel(f["response_id"])
                    break


async def test_half_open_and_silent_sockets_are_closed() -> None:
    with gateway("--embedded-engine", "synthetic", "--model-id", "synthetic", "--handshake-timeout-s", "1",
                 "--idle-timeout-s", "1") as gw:
        # half-open: TCP connected, no WebSocket handshake ever sent
        raw = socket.create_connection(("127.0.0.1", gw.port))
        raw.settimeout(10)
        assert raw.recv(1024) == b""  # the server hangs up after the handshake timeout
        raw.close()
        # a socket that never sends a frame: closed with 4003 (idle timeout)
        async with connect(gw.url) as ws:
            try:
                async with asyncio.timeout(10):
                    await ws.recv()
                raise AssertionError("idle socket was not closed")
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 4003
