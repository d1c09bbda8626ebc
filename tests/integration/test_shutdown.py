"""SIGTERM: the gateway stops accepting, lets the in-flight response finish, then
closes every socket with 1012 so clients resume elsewhere."""

from __future__ import annotations

import asyncio
import signal

import pytest
from websockets.exceptions import ConnectionClosed

from rtserver.client import Client
from tests.procs import start_gateway, stop


async def test_sigterm_drains_then_closes_with_1012() -> None:
    gw = start_gateway("--embedded-engine", "synthetic", "--model-id", "synthetic", "--synthetic-rate", "40",
                       "--synthetic-tokens", "60", "--shutdown-grace-s", "8")
    try:
        busy = await Client.connect(gw.url)
        idle = await Client.connect(gw.url)
        mid = await busy.send_message("stream something")
        first = await busy.recv(10)
        assert first["type"] == "route"
        gw.proc.send_signal(signal.SIGTERM)
        frames = [first]
        async with asyncio.timeout(30):
            async for f in busy.stream(mid):
                frames.append(f)
        tokens = [f for f in frames if f["type"] == "token"]
        assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "stop"
        assert [t["seq"] for t in tokens] == list(range(60))  # the whole answer, nothing lost
        for client in (busy, idle):
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(15):
                    while True:
                        await client.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1012
        with pytest.raises(OSError):
            await Client.connect(gw.url, open_timeout=3)
        assert await asyncio.to_thread(gw.proc.wait, 20) == 0
    finally:
        stop(gw.proc)
