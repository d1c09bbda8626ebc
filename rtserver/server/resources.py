"""What the gateway's lifespan opens: the session store, the router, the model workers,
and the watch that keeps the worker and store gauges current."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtserver.routing.contract import GatewayRouter
from rtserver.sessions.base import SessionStore

if TYPE_CHECKING:
    from rtserver.config import Settings
    from rtserver.server.context import GatewayContext as Gateway


def engine_blocks_loop(s: Settings) -> bool:
    """Whether the gateway computes, in its own process, an engine whose steps hold the GIL:
    the embedded openvino with ``embedded_mode = "inproc"`` (no ``--worker``). Its loop must
    then be a gated one (engines/stepgate.py), as a worker's that computes such an engine inline."""
    from rtserver.workers.worker import INLINE_ENGINES

    return not s.worker and s.embedded_mode == "inproc" and s.embedded_engine not in INLINE_ENGINES


async def open_store(gw: Gateway) -> SessionStore:
    s = gw.settings
    if s.redis:
        from rtserver.sessions.redis import RedisSessionStore

        store: SessionStore = RedisSessionStore(
            s.redis, prefix=s.key_prefix, ttl_s=s.session_ttl_s, replay_frames=s.replay_frames,
            replay_ttl_s=s.replay_ttl_s, op_timeout_s=s.store_timeout_s,
        )
    else:
        from rtserver.sessions.memory import MemorySessionStore

        mem = MemorySessionStore(ttl_s=s.session_ttl_s, replay_frames=s.replay_frames, replay_ttl_s=s.replay_ttl_s)
        mem.start()
        store = mem
    gw.metrics.store_up.set(1 if await store.healthy() else 0)
    return store


def open_router(gw: Gateway) -> GatewayRouter:
    """The classifier (loaded and warmed up) behind the router, on its own threads."""
    from rtserver.routing.batching import batch_settings
    from rtserver.routing.classifier import IntentClassifier
    from rtserver.routing.router import Router

    s = gw.settings
    classifier = IntentClassifier.load(Path(s.classifier) if s.classifier else None)
    batching = batch_settings(s)
    gw.executor = ThreadPoolExecutor(batching.threads, thread_name_prefix="classifier")
    if batching.max_batch > 1:
        classifier.enable_batches()
    classifier.warm_up()
    return Router(classifier, s.model_map(), executor=gw.executor, batching=batching)


async def open_workers(gw: Gateway, stack: contextlib.AsyncExitStack) -> None:
    """``--worker`` addresses; else the embedded worker (a child process, or in-process)."""
    from rtserver.workers.client import WorkerClient

    s = gw.settings
    if s.worker:
        for address in s.worker:
            await gw.pool.add(WorkerClient(address, heartbeat_timeout_s=s.heartbeat_timeout_s))
        await gw.pool.wait_for_any(30.0)
        return
    if s.embedded_mode == "inproc":
        from rtserver.workers.local import LocalWorker

        await gw.pool.add(LocalWorker(_make_engine(gw), name="embedded"), wait=True)
        return
    from rtserver.server.embedded import EmbeddedWorker

    embedded = EmbeddedWorker(s)
    await embedded.start()
    stack.push_async_callback(embedded.stop)
    gw.embedded = embedded
    await gw.pool.add(
        WorkerClient(embedded.address, name="embedded", heartbeat_timeout_s=s.heartbeat_timeout_s), wait=True
    )


def _make_engine(gw: Gateway) -> Any:
    """The in-process engine, built from the same worker settings as the embedded worker process."""
    from rtserver.server.embedded import worker_settings
    from rtserver.workers.host import EngineSpec

    ws = worker_settings(gw.settings, name="embedded", listen="127.0.0.1:0")
    return EngineSpec.from_settings(ws).build()


async def watch(gw: Gateway) -> None:
    """Every second: the workers' gauges (a worker that left loses its series) and the store's health."""
    m = gw.metrics
    shown: set[tuple[str, str]] = set()
    while True:
        now: set[tuple[str, str]] = set()
        for w in gw.pool.workers:
            now.add((w.state.name, w.state.model))
            m.worker_up.labels(w.state.name, w.state.model).set(1 if w.alive else 0)
            m.worker_load.labels(w.state.name).set(w.state.active)
            m.worker_queue.labels(w.state.name).set(w.state.waiting)
        for name, model in shown - now:
            with contextlib.suppress(KeyError):
                m.worker_up.remove(name, model)
            if name not in {n for n, _ in now}:
                for gauge in (m.worker_load, m.worker_queue):
                    with contextlib.suppress(KeyError):
                        gauge.remove(name)
        shown = now
        if gw.store is not None and gw.writer is not None and not gw.writer.degraded:
            m.store_up.set(1 if await gw.store.healthy() else 0)
        await asyncio.sleep(1.0)
