"""Start real rtserver processes for integration tests, and stop them cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_READY = re.compile(rb"rtserver ready on http://[^:]+:(\d+)/")


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_gateway(*args: str, timeout: float = 240.0, env: dict[str, str] | None = None) -> Proc:
    """``rtserver serve --port 0 ARGS`` as a process; returns once it printed its ready line."""
    cmd = [sys.executable, "-m", "rtserver", "serve", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, env={**os.environ, **(env or {})},
                            start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"gateway exited with {proc.wait()} before it was ready: {' '.join(cmd)}")
        m = _READY.search(line)
        if m:
            return Proc(proc, int(m.group(1)))
    stop(proc)
    raise TimeoutError("gateway did not become ready")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
    """Signal the process group and wait; SIGKILL after ``timeout``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


@contextmanager
def gateway(*args: str, **kw: object) -> Iterator[Proc]:
    p = start_gateway(*args, **kw)  # type: ignore[arg-type]
    try:
        yield p
    finally:
        stop(p.proc)
