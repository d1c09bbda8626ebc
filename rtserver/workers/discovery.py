"""Worker discovery through Redis: workers announce themselves, gateways watch.

A worker holds ``{prefix}:worker:{name}`` → JSON ``{"name", "address"}`` with a
``ttl_s`` expiry, refreshed every ``refresh_s``; it is deleted on a clean exit, and a
crashed worker vanishes when its key expires. ``DiscoveryWatcher`` scans those keys
every ``interval_s`` and adds/removes ``WorkerClient``s in a ``WorkerPool``; it only
ever removes workers it added itself (static and embedded workers stay).

Redis being down stops neither side: the worker keeps retrying its heartbeat, the
watcher keeps the workers it knows until Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rtserver.workers import worker as worker_mod
from rtserver.workers.pool import WorkerPool

log = logging.getLogger("rtserver.discovery")


def worker_key(prefix: str, name: str) -> str:
    return f"{prefix}:worker:{name}"


def _connectable(address: str) -> bool:
    """False for an address that cannot be dialled yet (port 0: the bound one comes later)."""
    return not address.endswith(":0")


@contextlib.asynccontextmanager
async def register_forever(
    redis_url: str,
    name: str,
    address: str,
    prefix: str = "rt",
    *,
    ttl_s: float = 5.0,
    refresh_s: float = 1.5,
    wait_ready: bool = True,
) -> AsyncIterator[None]:
    """Keep this worker registered while the ``async with`` body runs; unregister on exit.

    With ``wait_ready`` the key is first written when ``serve_worker`` reports its bound
    address (so gateways never dial a worker still loading its model); that bound
    address is advertised when ``address`` has port 0, else ``address`` is.
    """
    client: aioredis.Redis = aioredis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    key = worker_key(prefix, name)
    advertised: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_bound(bound: str) -> None:
        if not advertised.done():
            advertised.set_result(address if _connectable(address) else bound)

    if not wait_ready:
        on_bound(address)
    hook = worker_mod.on_bound.set(on_bound)

    async def beat() -> None:
        value = json.dumps({"name": name, "address": await advertised})
        failing = False
        while True:
            try:
                await client.set(key, value, px=int(ttl_s * 1000))
                if failing:
                    log.info("worker registration in redis restored")
                failing = False
            except (RedisError, OSError) as exc:
                if not failing:
                    log.warning("cannot register worker in redis, retrying: %s", exc)
                failing = True
            await asyncio.sleep(refresh_s)

    task = asyncio.create_task(beat(), name="worker-register")
    try:
        yield
    finally:
        worker_mod.on_bound.reset(hook)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(RedisError, OSError):
            await client.delete(key)
        await client.aclose()


class DiscoveryWatcher:
    """Mirror the registered workers into ``pool``; ``run()`` until cancelled."""

    def __init__(
        self,
        redis_url: str,
        pool: WorkerPool,
        *,
        prefix: str = "rt",
        interval_s: float = 1.0,
        heartbeat_timeout_s: float = 3.0,
    ) -> None:
        self.pool = pool
        self.prefix = prefix
        self.interval_s = interval_s
        self._heartbeat_timeout = heartbeat_timeout_s
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self.known: dict[str, str] = {}  # address → name, the workers this watcher added

    async def scan(self) -> dict[str, str]:
        """Registered workers now: address → name. Raises ``RedisError``/``OSError``."""
        keys: list[Any] = [k async for k in self._redis.scan_iter(match=worker_key(self.prefix, "*"), count=500)]
        found: dict[str, str] = {}
        if not keys:
            return found
        for raw in await self._redis.mget(keys):
            if raw is None:
                continue  # expired between SCAN and MGET
            try:
                info = json.loads(raw)
                found[str(info["address"])] = str(info["name"])
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring malformed worker registration %r", raw[:200])
        return found

    async def sync(self) -> None:
        """One pass: add new registrations, remove the ones that went away."""
        from rtserver.workers.client import WorkerClient

        found = await self.scan()
        static = {w.address for w in self.pool.workers} - set(self.known)
        for address, name in found.items():
            if address in self.known or address in static:
                continue
            log.info("discovered worker %s at %s", name, address)
            self.known[address] = name
            await self.pool.add(WorkerClient(address, name=name, heartbeat_timeout_s=self._heartbeat_timeout))
        for address in [a for a in self.known if a not in found]:
            log.info("worker %s at %s unregistered", self.known[address], address)
            del self.known[address]
            await self.pool.remove(address)

    async def run(self) -> None:
        failing = False
        try:
            while True:
                try:
                    await self.sync()
                    failing = False
                except (RedisError, OSError) as exc:
                    if not failing:
                        log.warning("worker discovery: redis unavailable, keeping known workers: %s", exc)
                    failing = True
                await asyncio.sleep(self.interval_s)
        finally:
            await self._redis.aclose()
