"""Where a worker's engine computes: an engine host process, or inline.

``HostLink`` starts ``python -m rtserver.workers.host`` under the worker and talks to it
over a ``socketpair``: msgpack frames (the worker wire's own ``gen`` / ``cancel`` /
``credit`` one way, ``tok`` / ``done`` / ``load`` the other), written in one batch per
event-loop turn on each side, so the tokens of one engine step cross in one write.
The host builds its engine by name through the registry, so any ``Engine`` works
there, and runs it with a ``Runner``. It may block for as long as a step takes (a
native step can hold the GIL for a whole prefill); the worker that answers sockets,
heartbeats and cancels never waits on it. Its event loop is a ``GatedLoop``, so an
engine that steps in a thread of its own lets the loop finish its work between steps.

The host dies with the worker: it exits on EOF on the channel, and on Linux the
kernel also kills it when the worker's thread that started it exits
(``PR_SET_PDEATHSIG``), even while it is inside a step. A host that exits completes
``lost``; the worker then exits too (see worker.py).

``InlineLink`` runs the same ``Runner`` in the worker's own event loop (for engines
that never block it: synthetic, openai).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

from rtserver.engines.base import Engine, EngineInfo, EngineLoad
from rtserver.exceptions import EngineError, WorkerProtocolError
from rtserver.runner import run_gated
from rtserver.workers.frames import Fail, HostLoad, HostReady
from rtserver.workers.runner import KV_STATS, Runner, kv_stats_of
from rtserver.workers.wire import FrameReader, pack

if TYPE_CHECKING:
    from rtserver.config import WorkerSettings

log = logging.getLogger("rtserver.host")

OnFrame = Callable[[dict[str, Any]], None]
LOAD_TICK_S = 0.2  # the host re-checks its engine's load this often when no frame carried it


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """What an engine host builds: ``create_engine(name, model=…, model_id=…, capacity=…, **opts)``."""

    name: str
    model: str
    model_id: str | None = None
    capacity: int = 16
    opts: dict[str, Any] = field(default_factory=dict)
    log_level: str = "info"
    log_json: bool = False

    @classmethod
    def from_settings(cls, ws: WorkerSettings) -> EngineSpec:
        """What a worker with settings ``ws`` builds."""
        return cls(ws.engine, ws.model, ws.model_id or None, ws.capacity, ws.engine_options(), ws.log_level,
                   ws.log_json)

    def build(self) -> Engine:
        from rtserver.engines.registry import create_engine

        return create_engine(self.name, model=self.model, model_id=self.model_id, capacity=self.capacity, **self.opts)


class EngineLink(Protocol):
    """The worker's side of its engine: send frames in, get frames out through ``on_frame``."""

    info: EngineInfo
    lost: asyncio.Future[str]  # completes (with a reason) if the engine can no longer serve

    async def start(self, on_frame: OnFrame) -> None: ...

    def send(self, frame: dict[str, Any]) -> None: ...

    def load(self) -> EngineLoad: ...

    def kv_stats(self) -> SimpleNamespace | None:
        """KV-retention counters (retained tokens, hits, misses, evictions…), None if the engine keeps none."""
        ...

    async def close(self) -> None: ...


class InlineLink:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.info = engine.info
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._runner: Runner | None = None

    async def start(self, on_frame: OnFrame) -> None:
        await self.engine.start()
        self._runner = Runner(self.engine, on_frame)

    def send(self, frame: dict[str, Any]) -> None:
        assert self._runner is not None
        self._runner.handle(frame)

    def load(self) -> EngineLoad:
        return self.engine.load()

    def kv_stats(self) -> SimpleNamespace | None:
        kv = kv_stats_of(self.engine)
        return None if kv is None else SimpleNamespace(**dict(kv))

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel_all()
            await self._runner.wait_idle()
        await self.engine.close()


# ---------------------------------------------------------------------------- batching writer
class _Batcher:
    """Frames packed into one buffer, written once per event-loop turn."""

    __slots__ = ("_buf", "_loop", "_scheduled", "before_flush", "transport")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buf = bytearray()
        self._scheduled = False
        self.transport: asyncio.Transport | None = None
        self.before_flush: Callable[[], None] | None = None

    def write(self, frame: dict[str, Any]) -> None:
        self._buf += pack(frame)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self.before_flush is not None:
            self.before_flush()
        if self._buf and self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes(self._buf))
        self._buf.clear()


class _Channel(asyncio.Protocol):
    """One end of the socketpair: frames in to ``on_frame``, EOF or loss to ``closed``."""

    def __init__(self, on_frame: OnFrame, closed: asyncio.Future[str]) -> None:
        self._on_frame = on_frame
        self._closed = closed
        self._decoder = FrameReader()

    def data_received(self, data: bytes) -> None:
        on_frame = self._on_frame
        try:
            for frame in self._decoder.feed(data):
                on_frame(frame)
        except WorkerProtocolError as exc:
            if not self._closed.done():
                self._closed.set_result(f"bad frame on the engine channel: {exc}")

    def eof_received(self) -> bool:
        if not self._closed.done():
            self._closed.set_result("engine channel closed")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(f"engine channel lost: {exc}" if exc else "engine channel closed")


# ---------------------------------------------------------------------------- worker side
class HostLink:
    def __init__(self, spec: EngineSpec, *, start_timeout_s: float = 600.0) -> None:
        self.spec = spec
        self.info = EngineInfo(engine=spec.name, model_id=spec.model_id or spec.model, capacity=spec.capacity)
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.proc: asyncio.subprocess.Process | None = None
        self._timeout = start_timeout_s
        self._out = _Batcher(asyncio.get_running_loop())
        self._load = EngineLoad(0, 0, spec.capacity)
        self._on_frame: OnFrame | None = None
        self._ready: asyncio.Future[HostReady | Fail] = asyncio.get_running_loop().create_future()
        self._closing = False
        self._kv: dict[str, int] | None = None

    def kv_stats(self) -> SimpleNamespace | None:
        """The host engine's KV-retention counters as last reported (None: it retains no KV)."""
        return None if self._kv is None else SimpleNamespace(**self._kv)

    async def start(self, on_frame: OnFrame) -> None:
        """Start the host and wait until its engine is loaded and warm. Raises ``EngineError``."""
        self._on_frame = on_frame
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "rtserver.workers.host", "--fd", str(theirs.fileno()),
                "--spec", json.dumps(asdict(self.spec)),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL, stdout=sys.stderr.fileno(),
            )
        finally:
            theirs.close()
        transport, _ = await loop.create_connection(lambda: _Channel(self._frame, self.lost), sock=ours)
        self._out.transport = transport
        waits: list[asyncio.Future[Any]] = [self._ready, self.lost]
        await asyncio.wait(waits, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.done():
            await self.close()
            why = self.lost.result() if self.lost.done() else "timed out"
            raise EngineError(f"engine host did not start ({why})")
        ready = self._ready.result()
        if isinstance(ready, Fail):
            await self.close()
            raise EngineError(ready.error)
        self.info = EngineInfo(engine=ready.engine, model_id=ready.model, modalities=ready.modalities,
                               capacity=ready.capacity, continues=ready.continues)
        self._load = EngineLoad(0, 0, self.info.capacity)
        if ready.kv:
            self._kv = {name: 0 for name in KV_STATS}
        self.lost.add_done_callback(self._log_loss)

    def _log_loss(self, lost: asyncio.Future[str]) -> None:
        if self._closing:
            log.info("engine host (pid %s) stopped", self.pid)
        else:
            log.error("engine host (pid %s) lost: %s", self.pid, lost.result())

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def _frame(self, frame: dict[str, Any]) -> None:
        """A frame from the engine host; raises ``WorkerProtocolError`` for a malformed one (the channel is lost)."""
        kind = frame["t"]
        if kind == "load":
            load = HostLoad.from_wire(frame)
            self._load = EngineLoad(load.active, load.waiting, load.capacity)
            if load.kv is not None:
                self._kv = dict(load.kv)
        elif kind == "ready" or kind == "fail":
            if not self._ready.done():
                self._ready.set_result(HostReady.from_wire(frame) if kind == "ready" else Fail.from_wire(frame))
        else:
            assert self._on_frame is not None
            self._on_frame(frame)

    def send(self, frame: dict[str, Any]) -> None:
        self._out.write(frame)

    def load(self) -> EngineLoad:
        return self._load

    async def close(self, timeout_s: float = 15.0) -> None:
        """Close the channel (the host cancels its streams, closes its engine, exits); kill it after ``timeout_s``."""
        self._closing = True
        self._out.flush()
        if self._out.transport is not None:
            self._out.transport.close()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


# ---------------------------------------------------------------------------- host process
def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the worker that started it exits."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the worker died before prctl took effect
            os._exit(1)


async def start_with_progress(engine: Engine, every_s: float = 5.0) -> None:
    """``engine.start()`` (model load and warm-up), saying what it does while it runs."""
    what = f"{engine.info.engine} model {engine.info.model_id}"
    log.info("loading and warming up the %s", what)
    t0 = time.monotonic()

    async def tick() -> None:
        while True:
            await asyncio.sleep(every_s)
            log.info("still loading the %s (%.0f s)", what, time.monotonic() - t0)

    ticker = asyncio.create_task(tick())
    try:
        await engine.start()
    finally:
        ticker.cancel()
    log.info("%s loaded and warmed up in %.1f s", what, time.monotonic() - t0)


async def _host(fd: int, spec: EngineSpec) -> int:
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[str] = loop.create_future()
    out = _Batcher(loop)
    runner: Runner | None = None
    early: list[dict[str, Any]] = []

    def on_frame(frame: dict[str, Any]) -> None:
        if runner is None:
            early.append(frame)
        else:
            runner.handle(frame)

    sock = socket.socket(fileno=fd)
    transport, _ = await loop.create_connection(lambda: _Channel(on_frame, closed), sock=sock)
    out.transport = transport
    try:
        engine = spec.build()
        await start_with_progress(engine)
    except Exception as exc:
        log.exception("engine host: the engine did not start")
        out.write(Fail(f"{type(exc).__name__}: {exc}").to_wire())
        out.flush()
        transport.close()
        return 1
    info = engine.info
    out.write(HostReady(info.engine, info.model_id, info.modalities, info.capacity, info.continues, os.getpid(),
                        kv_stats_of(engine) is not None).to_wire())
    runner = Runner(engine, out.write)

    def report_load() -> None:
        assert runner is not None
        load = runner.load_changed()
        if load is not None:
            out._buf += pack(load.to_wire())

    out.before_flush = report_load

    async def tick() -> None:  # load changes with no frame to carry them (a sequence leaving the engine)
        while True:
            await asyncio.sleep(LOAD_TICK_S)
            assert runner is not None
            if (load := runner.load_changed()) is not None:
                out.write(load.to_wire())

    ticker = asyncio.create_task(tick())
    for frame in early:
        runner.handle(frame)
    why = await closed
    ticker.cancel()
    log.info("engine host stopping: %s", why)
    runner.cancel_all()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(runner.wait_idle(), 10.0)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(engine.close(), 15.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rtserver.workers.host")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    _die_with_parent()
    # The worker decides when to stop: a signal to the whole process group (Ctrl-C, a
    # service manager) must not kill the engine under a worker that is still draining.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    spec = EngineSpec(**json.loads(args.spec))
    from rtserver.logs import configure

    configure(spec.log_level, spec.log_json)
    # asyncio's selector loop with a step gate, not uvloop: an engine stepping in a thread
    # that holds the GIL waits for this loop to be idle between steps (engines/stepgate.py).
    return run_gated(_host(args.fd, spec))


if __name__ == "__main__":
    raise SystemExit(main())
