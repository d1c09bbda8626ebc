"""``rtserver serve --processes N``: N gateway processes on one port of one host.

The supervisor (this module, in the process you started) does what must happen once:

* refuses a setup that cannot share state: ``processes > 1`` needs ``redis``, because the
  memory session store lives in one process and a reconnect may land on any of them
  (the kernel picks the process per connection); ``embedded_mode = "inproc"`` would load
  one model per process, so it is refused too;
* reserves the port (``SO_REUSEPORT``; port 0 picks one free port for all);
* starts the embedded worker once, unless ``worker`` addresses are given; every gateway
  process connects to it as to any worker, so the host runs one model, not N;
* points prometheus-client's multiprocess mode at a fresh folder
  (``PROMETHEUS_MULTIPROC_DIR``), so ``/metrics`` on any process reports the whole host;
* starts N gateway processes (``spawn``), each binding the same port with
  ``SO_REUSEPORT``, and prints one "ready" line when all of them listen;
* restarts a gateway process that dies, and on SIGTERM/SIGINT stops them all (each drains
  as one gateway does), then the worker.

Sessions, resume and worker discovery then work as between several gateways sharing a
Redis (docs/architecture.md): sessions and replay logs live in Redis, a resume on another
process follows the response, and each process watches worker registrations itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import tempfile
import time
from multiprocessing.process import BaseProcess
from typing import Any

from rtserver.config import Settings
from rtserver.exceptions import ConfigError
from rtserver.runner import run_uvloop

__all__ = ["check_processes", "serve_processes"]

log = logging.getLogger("rtserver.processes")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own switch, read at its import


def check_processes(settings: Settings) -> None:
    """Raise ``ConfigError`` when ``settings`` cannot run as several processes."""
    if settings.processes <= 1:
        return
    if not settings.redis:
        raise ConfigError(
            "--processes > 1 needs --redis URL: sessions and resume must be shared, and the memory "
            "store lives inside one process (a reconnect may reach any of them)"
        )
    if settings.embedded_mode == "inproc" and not settings.worker:
        raise ConfigError("--processes > 1 with embedded_mode inproc would load one model per process: "
                          "use embedded_mode process (the default) or --worker")
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("--processes > 1 needs SO_REUSEPORT (Linux, BSD, macOS)")


def _reserve(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket holding the port while the processes start.

    The port is first bound without SO_REUSEPORT, so a port that anything holds, even
    another ``--processes`` gateway (whose group this one would silently join), is refused.
    """
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    probe = socket.socket(family, kind, proto)
    sock = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(addr)
        addr = (addr[0], probe.getsockname()[1], *addr[2:])  # port 0: the one just picked
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.close()
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        probe.close()
    return sock


def _child(settings: Settings, index: int, ready: Any) -> None:
    """One gateway process: serve until SIGTERM, telling the supervisor when it listens."""
    from rtserver.logs import configure
    from rtserver.server.app import run_gateway

    configure(settings.log_level, settings.log_json)
    run_uvloop(run_gateway(settings, ready=lambda port: ready.put((index, os.getpid(), port))))


class _Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ctx = multiprocessing.get_context("spawn")
        self.ready: Any = self.ctx.Queue()
        self.procs: list[BaseProcess] = []
        self.stop = asyncio.Event()

    def start(self, index: int) -> BaseProcess:
        proc = self.ctx.Process(target=_child, args=(self.settings, index, self.ready), name=f"gateway-{index}")
        proc.start()
        return proc

    async def wait_ready(self, count: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < count:
            dead = [p for p in self.procs if p.exitcode is not None]
            if dead:
                raise RuntimeError(f"gateway process {dead[0].name} exited with {dead[0].exitcode} while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count - len(seen)} gateway processes not ready after {timeout:.0f} s")
            with contextlib.suppress(queue.Empty):
                index, _, _ = await loop.run_in_executor(None, self.ready.get, True, 0.5)
                seen.add(index)

    async def watch(self) -> None:
        """Restart a gateway process that exits on its own (backoff up to 10 s)."""
        from prometheus_client import multiprocess

        backoff = 0.5
        while not self.stop.is_set():
            for i, proc in enumerate(self.procs):
                if proc.exitcode is not None and not self.stop.is_set():
                    log.error("gateway process %s exited with %s; restarting", proc.name, proc.exitcode)
                    if proc.pid is not None:
                        multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    self.procs[i] = self.start(i)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)

    async def terminate(self, grace_s: float) -> None:
        for proc in self.procs:
            if proc.exitcode is None and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(p.exitcode is None for p in self.procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for proc in self.procs:
            if proc.exitcode is None:
                proc.kill()
            proc.join(5.0)


async def serve_processes(settings: Settings) -> int:
    """Run ``settings.processes`` gateway processes until SIGTERM/SIGINT (see the module docstring)."""
    check_processes(settings)
    n = settings.processes
    reserved = _reserve(settings.host, settings.port)
    port = reserved.getsockname()[1]
    metrics_dir = tempfile.mkdtemp(prefix="rtserver-metrics-")
    child = dataclasses.replace(settings, port=port)
    sup: _Supervisor | None = None
    embedded: Any = None
    try:
        if not settings.worker:
            from rtserver.server.embedded import EmbeddedWorker

            embedded = EmbeddedWorker(settings)
            await embedded.start()
            child = dataclasses.replace(child, worker=[embedded.address])
        os.environ[MULTIPROC_ENV] = metrics_dir  # the gateway processes inherit it; the worker has its own /metrics
        sup = _Supervisor(child)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, sup.stop.set)
        sup.procs = [sup.start(i) for i in range(n)]
        await sup.wait_ready(n, 120.0)
        reserved.close()
        host = settings.host
        print(f"rtserver ready on http://{host}:{port}/  (WebSocket ws://{host}:{port}/ws; {n} processes)",
              flush=True)
        await sup.watch()
        return 0
    finally:
        reserved.close()
        if sup is not None:
            sup.stop.set()
            await sup.terminate(settings.shutdown_grace_s + 5.0)
        if embedded is not None:
            await embedded.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)
