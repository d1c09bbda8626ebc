"""A real ``rtserver serve`` process whose stderr (its log) goes to a file, in its own
process group, so a test can read what it logged and signal it like a terminal does."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_READY = re.compile(r"rtserver ready on http://[\d.]+:(\d+)/")


@dataclass
class LoggedGateway:
    proc: subprocess.Popen[str]
    port: int
    log_path: Path

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, Any]:
        """GET ``path``: (status, JSON body or text)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                body = r.read().decode()
                status = r.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read().decode(), exc.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def metric(self, name: str) -> float:
        """The value of an unlabelled metric on /metrics (0 when absent)."""
        _, text = self.get("/metrics")
        for line in str(text).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def children(self) -> list[int]:
        """Pids whose parent is the gateway (its embedded worker)."""
        kids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    kids.append(int(entry))
        return kids

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_logged_gateway(log_path: Path, *args: str, timeout: float = 120.0) -> LoggedGateway:
    cmd = [sys.executable, "-m", "rtserver", "serve", "--host", "127.0.0.1", "--port", "0", *args]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if m := _READY.search(line):
                return LoggedGateway(proc, int(m.group(1)), log_path)
            if not line and proc.poll() is not None:
                break
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    raise RuntimeError(f"gateway did not start: {log_path.read_text()[-3000:]}")


@pytest.fixture
def logged_gateway(tmp_path: Path) -> Iterator[Callable[..., LoggedGateway]]:
    """``logged_gateway(*serve_flags)``: a gateway process, stopped (its group SIGTERMed) at teardown."""
    started: list[LoggedGateway] = []

    def make(*args: str) -> LoggedGateway:
        gw = start_logged_gateway(tmp_path / f"gateway{len(started)}.log", *args)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
