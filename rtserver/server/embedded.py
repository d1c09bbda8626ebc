"""The embedded default worker: a child ``rtserver worker`` process on a unix socket.

Supervised: if the child exits, it is started again (with backoff) so a crashed model
never takes the gateway down. The gateway reaches it through ``WorkerClient`` like
any other worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile

from rtserver.config import Settings

log = logging.getLogger("rtserver.embedded")


class EmbeddedWorker:
    def __init__(self, settings: Settings, *, name: str = "embedded") -> None:
        self.settings = settings
        self.name = name
        self._dir = tempfile.mkdtemp(prefix="rtserver-")
        self.address = f"unix:{os.path.join(self._dir, 'worker.sock')}"
        self.proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    def command(self) -> list[str]:
        s = self.settings
        cmd = [
            sys.executable, "-m", "rtserver", "worker",
            "--engine", s.embedded_engine, "--model", s.model, "--model-id", s.model_id,
            "--listen", self.address, "--name", self.name, "--capacity", str(s.capacity),
        ]
        cmd += ["--log-level", s.log_level, *(["--log-json"] if s.log_json else [])]  # its progress reaches our stderr
        if s.embedded_engine == "synthetic":
            cmd += ["--synthetic-tokens", str(s.synthetic_tokens), "--synthetic-rate", str(s.synthetic_rate)]
        return cmd

    async def start(self, timeout: float = 300.0) -> None:
        """Start the child and wait until it has loaded and warmed its model."""
        await self._spawn(timeout)
        self._supervisor = asyncio.create_task(self._supervise(), name="embedded-supervisor")

    async def _spawn(self, timeout: float) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.command(), stdout=asyncio.subprocess.PIPE, stderr=None, stdin=asyncio.subprocess.DEVNULL
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"embedded worker exited with {await self.proc.wait()} before it was ready")
                if line.startswith(b"READY"):
                    break
        log.info("embedded worker ready (pid %s, %s)", self.proc.pid, self.settings.model)

    async def _supervise(self) -> None:
        backoff = 0.5
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            log.error("embedded worker exited with %s; restarting", code)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            with contextlib.suppress(Exception):
                await self._spawn(300.0)

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10.0)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(OSError):
            os.unlink(self.address[5:])
            os.rmdir(self._dir)
