"""What a user sees when ``rtserver serve`` starts and stops (README, "Two commands"):
a busy port is one line and exit code 2 before anything loads; the model's fetch, load
and warm-up are logged (from the embedded worker child too) and the URL is printed when
ready; Ctrl-C during a reply exits without openvino's leaked-block errors."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtserver.client import Client
from tests.procs import gateway, stop

READY = re.compile(rb"rtserver ready on (http://127\.0\.0\.1:(\d+)/)")


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    ready_line: str
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


def serve(tmp: Path, *args: str, timeout: float = 300.0) -> Served:
    """``rtserver serve --port 0 ARGS`` in its own process group, stderr kept in a file."""
    err = tmp / "stderr.log"
    with open(err, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "rtserver", "serve", "--port", "0", *args],
                                stdout=subprocess.PIPE, stderr=fh, stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"serve exited with {proc.wait()}:\n{err.read_text()[-3000:]}")
        if m := READY.search(line):
            return Served(proc, int(m.group(2)), line.decode(), err)
    stop(proc)
    raise AssertionError("serve did not print its ready line")


def test_a_busy_port_is_one_line_and_exit_code_2_before_any_model_loads() -> None:
    with gateway("--embedded-engine", "synthetic", "--model-id", "synthetic") as first:
        second = subprocess.run([sys.executable, "-m", "rtserver", "serve", "--port", str(first.port)],
                                capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {first.port}" in lines[0] and "already in use" in lines[0], second.stderr
    assert "Traceback" not in second.stderr and "ready" not in second.stdout


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = serve(tmp_path_factory.mktemp("serve"), "--shutdown-grace-s", "2", "--max-tokens", "400")
    try:
        yield s
    finally:
        stop(s.proc)


@pytest.mark.model
def test_the_start_logs_model_load_and_warm_up_then_says_the_url(served: Served) -> None:
    log = served.log()
    steps = ["loading and warming up the openvino model smollm2-135m", "model file", "loaded and warmed up in",
             "embedded worker ready"]
    where = [log.find(step) for step in steps]
    assert all(i >= 0 for i in where), f"missing progress lines in:\n{log}"
    assert where == sorted(where), f"out of order:\n{log}"
    assert served.ready_line.startswith(f"rtserver ready on http://127.0.0.1:{served.port}/")


@pytest.mark.model
async def test_ctrl_c_during_a_reply_exits_cleanly_without_leak_errors(served: Served) -> None:
    async with await Client.connect(f"ws://127.0.0.1:{served.port}/ws") as c:
        mid = await c.send_message("Write a long story about a dragon who learns to cook.")
        async with asyncio.timeout(120):
            async for frame in c.stream(mid):
                if frame["type"] == "token":
                    break
            else:
                pytest.fail("no token before the reply ended")
        os.killpg(served.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
        code = await asyncio.to_thread(served.proc.wait, 90)
    log = served.log()
    assert "leaked" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert code == 0
