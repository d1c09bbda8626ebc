"""A real ``redis-server`` for tests: helper class and pytest fixtures.

Fixtures (load with ``pytest_plugins = ["tests.redis_server"]`` in tests/conftest.py,
or import them into a test module or conftest by name):

* ``redis_server`` (session scope): one server on a free port, in a temp dir, without
  persistence. Share it; isolate tests by key prefix.
* ``redis_prefix``: a key prefix unique to the test.
* ``redis_factory``: ``redis_factory(persistent=False)`` starts a private server the
  test may kill and restart (``.kill()``, ``.start()`` on the same port); stopped at teardown.
* ``gateway_factory``: ``gateway_factory(*serve_flags)`` starts ``rtserver serve --port 0``
  processes (``.ws``, ``.get("/readyz")``); stopped (SIGTERM) at teardown.

Every fixture skips the test when no ``redis-server`` binary is installed
(``apt-get install redis-server``), or fails it under ``RTSERVER_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "GatewayProcess",
    "RedisServer",
    "free_port",
    "gateway_factory",
    "redis_factory",
    "redis_prefix",
    "redis_server",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary() -> str:
    """The redis-server binary; skips the test without one (fails under RTSERVER_REQUIRE_SERVICES=1)."""
    from tests.conftest import require

    return require("redis-server")


class RedisServer:
    """One redis-server process on 127.0.0.1; ``start()`` again after ``kill()`` reuses the port."""

    def __init__(self, workdir: Path, *, port: int | None = None, persistent: bool = False) -> None:
        self.binary = _binary()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
        ]
        # persistent: an fsync'ed append-only file, so data survives kill -9 and a restart
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        log = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.workdir}/redis.log")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING in time")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """Crash it (SIGKILL): clients see refused connections until ``start()``."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def make(*, persistent: bool = False) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}", persistent=persistent).start()
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            with contextlib.suppress(Exception):
                server.stop()


class GatewayProcess:
    """``python -m rtserver serve --port 0 …`` as a child process; ``start()`` waits for its ready line."""

    def __init__(self, *args: str, log_path: Path) -> None:
        self.args = [sys.executable, "-m", "rtserver", "serve", "--host", "127.0.0.1", "--port", "0", *args]
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if match := re.search(r"rtserver ready on http://[\d.]+:(\d+)/", line):
                    self.port = int(match.group(1))
                    return self
                if not line and self.proc.poll() is not None:
                    break
        self.stop()
        raise RuntimeError(f"gateway did not start; see {self.log_path}:\n{self.log_path.read_text()[-3000:]}")

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        """GET ``path``; (status, JSON body)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """``gateway_factory("--redis", url, …)`` starts a gateway process; all are stopped at teardown."""
    started: list[GatewayProcess] = []

    def make(*args: str) -> GatewayProcess:
        gw = GatewayProcess(*args, log_path=tmp_path / f"gateway{len(started)}.log")
        started.append(gw)
        return gw.start()

    try:
        yield make
    finally:
        for gw in started:
            gw.stop()
