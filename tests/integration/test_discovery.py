"""Workers that register in Redis show up in a gateway's pool, and leave it when they die."""

from __future__ import annotations

import asyncio
import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from rtserver.workers.discovery import register_forever, worker_key
from tests.redis_server import GatewayProcess, RedisServer, gateway_factory, redis_prefix, redis_server

pytestmark = [pytest.mark.redis]
__all__ = ["gateway_factory", "redis_prefix", "redis_server"]


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    """Start ``rtserver worker --listen 127.0.0.1:0 …``; returns (process, bound address)."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], str]:
        log = open(tmp_path / f"worker{len(procs)}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "rtserver", "worker", "--engine", "synthetic", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        procs.append(proc)
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                line = proc.stdout.readline()
                if line.startswith("READY "):
                    return proc, line.split()[1]
                if not line:
                    break
        raise RuntimeError("worker did not start")

    try:
        yield start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)


async def workers_when(gw: GatewayProcess, check: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    workers: list[dict[str, Any]] = []
    for _ in range(300):
        _, report = await asyncio.to_thread(gw.get, "/readyz")
        workers = report["workers"]
        if check(workers):
            return workers
        await asyncio.sleep(0.1)
    pytest.fail(f"/readyz workers never matched; last: {workers}")


def named(workers: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((w for w in workers if w["name"] == name), None)


async def test_registered_worker_joins_and_leaves_the_pool(
    redis_server: RedisServer,
    redis_prefix: str,
    gateway_factory: Callable[..., GatewayProcess],
    worker_factory: Callable[..., tuple[subprocess.Popen[str], str]],
) -> None:
    gw = gateway_factory(
        "--redis",
        redis_server.url,
        "--key-prefix",
        redis_prefix,
        "--embedded-engine",
        "synthetic",
        "--model-id",
        "synthetic",
    )
    reg = ("--redis", redis_server.url, "--key-prefix", redis_prefix, "--model-id", "synthetic")
    crashing, crashing_addr = worker_factory(*reg, "--name", "disc-crash")
    leaving, _ = worker_factory(*reg, "--name", "disc-leave")

    workers = await workers_when(
        gw, lambda ws: all((named(ws, n) or {}).get("alive") for n in ("disc-crash", "disc-leave"))
    )
    assert named(workers, "embedded") is not None  # discovery adds to the embedded worker
    assert named(workers, "disc-crash")["model"] == "synthetic"  # type: ignore[index]
    r = aioredis.Redis.from_url(redis_server.url)
    try:  # the advertised address is the bound one, not the ":0" it was asked to listen on
        info = json.loads(await r.get(worker_key(redis_prefix, "disc-crash")))
        assert info == {"name": "disc-crash", "address": crashing_addr}
    finally:
        await r.aclose()

    leaving.send_signal(signal.SIGTERM)  # clean exit: unregisters at once
    leaving.wait(30)
    crashing.kill()  # crash: its registration expires
    crashing.wait(5)
    workers = await workers_when(gw, lambda ws: named(ws, "disc-crash") is None and named(ws, "disc-leave") is None)
    assert [w["name"] for w in workers] == ["embedded"]
    code, report = await asyncio.to_thread(gw.get, "/readyz")
    assert code == 200 and report["status"] == "ready"


async def test_registration_lives_while_the_block_runs(redis_server: RedisServer, redis_prefix: str) -> None:
    r = aioredis.Redis.from_url(redis_server.url)
    key = worker_key(redis_prefix, "w1")
    try:
        async with register_forever(redis_server.url, "w1", "127.0.0.1:7123", redis_prefix, wait_ready=False):
            for _ in range(100):
                if await r.exists(key):
                    break
                await asyncio.sleep(0.02)
            assert json.loads(await r.get(key)) == {"name": "w1", "address": "127.0.0.1:7123"}
            assert 0 < await r.pttl(key) <= 5000  # expires by itself if the worker dies
        assert not await r.exists(key)
    finally:
        await r.aclose()


async def test_watcher_mirrors_registrations_and_keeps_static_workers(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    from rtserver.engines.synthetic import SyntheticEngine
    from rtserver.workers.discovery import DiscoveryWatcher
    from rtserver.workers.local import LocalWorker
    from rtserver.workers.pool import WorkerPool

    static = LocalWorker(SyntheticEngine(), name="static")
    pool = WorkerPool([static])
    watcher = DiscoveryWatcher(redis_server.url, pool, prefix=redis_prefix)
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        for name, address in (("w-a", "127.0.0.1:9"), ("w-static", static.address)):
            await r.set(worker_key(redis_prefix, name), json.dumps({"name": name, "address": address}))
        await r.set(worker_key(redis_prefix, "broken"), b"not json")
        await watcher.sync()
        assert sorted(w.address for w in pool.workers) == sorted([static.address, "127.0.0.1:9"])
        assert pool.by_name("w-a") is not None
        await r.delete(worker_key(redis_prefix, "w-a"), worker_key(redis_prefix, "w-static"))
        await watcher.sync()
        assert [w.address for w in pool.workers] == [static.address]  # never removes what it did not add
    finally:
        await pool.close()
        await r.aclose()
        await watcher._redis.aclose()
