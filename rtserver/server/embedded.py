"""The embedded default worker: a child ``rtserver worker`` process on a unix socket.

Supervised: if the child exits, it is started again (with backoff) so a crashed model
never takes the gateway down, but never once the gateway's shutdown began
(``shutting_down``). The gateway reaches it through ``WorkerClient`` like any other
worker.

The child runs in its own session (process group), so a signal to the gateway's
group (Ctrl-C in a terminal) reaches the gateway only: the gateway drains its
responses with the worker still serving, then stops the worker itself (``stop``).
On Linux the child also gets SIGTERM when the gateway dies (``PR_SET_PDEATHSIG``),
so a killed gateway leaves no orphan.
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

# Run before exec'ing the worker: ask for SIGTERM when the parent (argv[1]) dies, and
# quit if it already died between fork and prctl. PR_SET_PDEATHSIG survives execve.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


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
        cmd += ["--engine-host", s.embedded_engine_host]
        if s.prefill_chunk and s.embedded_engine == "openvino":  # the synthetic engine has no prefill
            cmd += ["--prefill-chunk", str(s.prefill_chunk)]
        if s.embedded_engine == "synthetic":
            cmd += ["--synthetic-tokens", str(s.synthetic_tokens), "--synthetic-rate", str(s.synthetic_rate)]
        return cmd

    async def start(self, timeout: float = 300.0) -> None:
        """Start the child and wait until it has loaded and warmed its model."""
        await self._spawn(timeout)
        self._supervisor = asyncio.create_task(self._supervise(), name="embedded-supervisor")

    async def _spawn(self, timeout: float) -> None:
        cmd = self.command()
        if sys.platform.startswith("linux"):
            cmd = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *cmd]
        self.proc = proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=None, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await proc.stdout.readline()
                    if not line:
                        raise RuntimeError(f"embedded worker exited with {await proc.wait()} before it was ready")
                    if line.startswith(b"READY"):
                        break
        except BaseException:  # not ready (or we are stopping): leave no process behind
            if proc.returncode is None:
                proc.kill()
                await asyncio.shield(proc.wait())
            raise
        log.info("embedded worker ready (pid %s, %s)", proc.pid, self.settings.model)

    def shutting_down(self) -> None:
        """The gateway is shutting down: an exit of the child from now on is not restarted."""
        self._stopping = True

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
            if self._stopping:
                return
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
