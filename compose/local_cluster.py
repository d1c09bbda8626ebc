"""The compose topology on one machine, without containers.

    python compose/local_cluster.py up                    # synthetic workers (fast, no model)
    python compose/local_cluster.py up --engine openvino  # the real embedded SmolLM2 model on CPU

starts redis-server, two workers, two gateways (``--redis`` + ``--worker`` for each
worker) and nginx rendered from compose/nginx.conf, prints the load balancer URL and
runs until Ctrl-C, then stops everything in order (LB, gateways, workers, Redis).
Every process listens on 127.0.0.1 only; logs go to the work directory it prints.

``LocalCluster`` is the same thing as a context manager, for tests::

    with LocalCluster(Path(tmp)) as cluster:
        cluster.ws_url, cluster.gateway_ws_urls, cluster.redis_url
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

HERE = Path(__file__).resolve().parent
NGINX_TEMPLATE = HERE / "nginx.conf"
_UPSTREAM_SERVER = re.compile(r"^(\s*)server\s+[\w.-]+:\d+(\s+[^;]*)?;\n", re.MULTILINE)
_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class ClusterError(RuntimeError):
    """A process of the local cluster failed to start; the message names its log file."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_nginx_conf(template: str, upstreams: Sequence[str], listen: str, workdir: Path,
                      sockets_per_client: int | None = None) -> str:
    """compose/nginx.conf for local processes: ``upstreams`` (HOST:PORT) replace the
    gateway servers, ``listen`` replaces the port, logs and temp files go in ``workdir``;
    ``sockets_per_client`` replaces the per-address socket limit (local clients share 127.0.0.1)."""
    servers = list(_UPSTREAM_SERVER.finditer(template))
    if not servers:
        raise ValueError("nginx template has no upstream server lines")
    indent, params = servers[0].group(1), servers[0].group(2) or ""
    lines = "".join(f"{indent}server {u}{params};\n" for u in upstreams)
    text = template[: servers[0].start()] + lines + _UPSTREAM_SERVER.sub("", template[servers[0].start():])
    text, n = re.subn(r"^(\s*)listen\s+\d+\s*;", rf"\g<1>listen {listen};", text, flags=re.MULTILINE)
    if n != 1:
        raise ValueError("nginx template must have exactly one listen directive")
    text = re.sub(r"^error_log\s+\S+", f"error_log {workdir / 'error.log'}", text, flags=re.MULTILINE)
    text = re.sub(r"access_log\s+/dev/stdout", f"access_log {workdir / 'access.log'}", text)
    if sockets_per_client is not None:
        text = re.sub(r"limit_conn ws_per_ip \d+;", f"limit_conn ws_per_ip {sockets_per_client};", text)
    temp = "".join(f"    {name}_temp_path {workdir / 'tmp' / name};\n" for name in _TEMP_DIRS)
    return text.replace("http {\n", "http {\n" + temp, 1)


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class LocalCluster:
    """Redis, ``workers`` workers, ``gateways`` gateways and nginx, all on 127.0.0.1."""

    workdir: Path
    engine: str = "synthetic"
    gateways: int = 2
    workers: int = 2
    lb_port: int = 0
    synthetic_rate: float = 100.0
    synthetic_tokens: int = 32
    gateway_args: Sequence[str] = ()
    sockets_per_client: int = 10_000  # nginx's per-address limit; every local client is 127.0.0.1
    start_timeout_s: float = 60.0
    python: str = sys.executable
    redis_url: str = ""
    worker_addresses: list[str] = field(default_factory=list)
    gateway_ports: list[int] = field(default_factory=list)
    _procs: list[_Proc] = field(default_factory=list)

    # ------------------------------------------------------------------ urls
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.lb_port}/ws"

    @property
    def gateway_ws_urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{p}/ws" for p in self.gateway_ports]

    @property
    def model_id(self) -> str:
        return "synthetic" if self.engine == "synthetic" else "smollm2-135m"

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_redis()
            for i in range(self.workers):
                self._start_worker(i)
            for i in range(self.gateways):
                self._start_gateway(i)
            self._start_nginx()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop in order: LB, gateways (they drain), workers, Redis; SIGKILL what lingers."""
        for proc in reversed(self._procs):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGQUIT if proc.name == "nginx" else signal.SIGTERM)
                try:
                    proc.popen.wait(15)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait(5)
        self._procs.clear()

    def process(self, name: str) -> subprocess.Popen[bytes]:
        for proc in self._procs:
            if proc.name == name:
                return proc.popen
        raise KeyError(name)

    # ------------------------------------------------------------------ pieces
    def _spawn(self, name: str, args: Sequence[str]) -> _Proc:
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as fh:
            popen = subprocess.Popen(list(args), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, cwd=self.workdir)
        proc = _Proc(name, popen, log)
        self._procs.append(proc)
        return proc

    def _wait_for(self, proc: _Proc, pattern: str) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            match = rx.search(proc.log.read_text(errors="replace"))
            if match:
                return match
            if proc.popen.poll() is not None:
                raise ClusterError(f"{proc.name} exited with {proc.popen.returncode}; {proc.log}:\n{proc.tail()}")
            time.sleep(0.05)
        raise ClusterError(f"{proc.name} not ready after {self.start_timeout_s:.0f} s; {proc.log}:\n{proc.tail()}")

    def _start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ClusterError("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        proc = self._spawn("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no"])
        self._wait_for(proc, r"Ready to accept connections")
        self.redis_url = f"redis://127.0.0.1:{port}/0"

    def _start_worker(self, i: int) -> None:
        args = [self.python, "-m", "rtserver", "worker", "--engine", self.engine, "--listen", "127.0.0.1:0",
                "--name", f"w{i}"]
        if self.engine == "synthetic":
            args += ["--model", "synthetic", "--model-id", "synthetic", "--synthetic-rate", str(self.synthetic_rate),
                     "--synthetic-tokens", str(self.synthetic_tokens)]
        else:
            args += ["--model", "smollm2-135m", "--model-id", self.model_id, "--capacity", "4"]
        if importlib.util.find_spec("rtserver.workers.discovery") is not None:
            args += ["--redis", self.redis_url]
        proc = self._spawn(f"worker{i}", args)
        match = self._wait_for(proc, r"READY (\S+:\d+)")
        self.worker_addresses.append(match.group(1))

    def _start_gateway(self, i: int) -> None:
        args = [self.python, "-m", "rtserver", "serve", "--host", "127.0.0.1", "--port", "0",
                "--redis", self.redis_url, "--model-id", self.model_id,
                # as in docker-compose.yml: behind nginx every socket comes from one address,
                # and nginx enforces the per-client limit
                "--max-connections-per-ip", "100000"]
        for address in self.worker_addresses:
            args += ["--worker", address]
        args += list(self.gateway_args)
        proc = self._spawn(f"gateway{i}", args)
        match = self._wait_for(proc, r"rtserver ready on http://[\d.]+:(\d+)/")
        self.gateway_ports.append(int(match.group(1)))

    def _start_nginx(self) -> None:
        binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if binary is None:
            raise ClusterError("nginx is not installed (apt-get install nginx)")
        self.lb_port = self.lb_port or free_port()
        conf_dir = self.workdir / "nginx"
        for name in _TEMP_DIRS:
            (conf_dir / "tmp" / name).mkdir(parents=True, exist_ok=True)
        conf = conf_dir / "nginx.conf"
        conf.write_text(render_nginx_conf(NGINX_TEMPLATE.read_text(),
                                          [f"127.0.0.1:{p}" for p in self.gateway_ports],
                                          f"127.0.0.1:{self.lb_port}", conf_dir, self.sockets_per_client))
        proc = self._spawn("nginx", [binary, "-p", str(conf_dir), "-e", str(conf_dir / "error.log"),
                                     "-c", str(conf), "-g", f"daemon off; pid {conf_dir / 'nginx.pid'};"])
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise ClusterError(f"nginx exited with {proc.popen.returncode}:\n"
                                   f"{(conf_dir / 'error.log').read_text(errors='replace')}")
            if _http_ok("127.0.0.1", self.lb_port, "/healthz"):
                return
            time.sleep(0.05)
        raise ClusterError(f"nginx did not proxy /healthz within {self.start_timeout_s:.0f} s")


def _http_ok(host: str, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local_cluster", description=__doc__.split("\n\n")[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster; Ctrl-C stops it")
    up.add_argument("--engine", choices=("synthetic", "openvino"), default="synthetic")
    up.add_argument("--gateways", type=int, default=2)
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--port", type=int, default=0, help="load balancer port (default: a free one)")
    up.add_argument("--workdir", default="", help="logs and nginx config (default: a new temp dir)")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="rtserver-cluster-"))
    cluster = LocalCluster(workdir, engine=args.engine, gateways=args.gateways, workers=args.workers,
                           lb_port=args.port, start_timeout_s=300.0 if args.engine == "openvino" else 60.0)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cluster.start()
    except ClusterError as exc:
        print(f"local_cluster: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"redis     {cluster.redis_url}")
        for name, address in zip(("w" + str(i) for i in range(args.workers)), cluster.worker_addresses, strict=True):
            print(f"worker    {name} {address} ({args.engine})")
        for port in cluster.gateway_ports:
            print(f"gateway   http://127.0.0.1:{port}/  metrics http://127.0.0.1:{port}/metrics")
        print(f"logs      {workdir}")
        print(f"rtserver local cluster ready on {cluster.url}  (WebSocket {cluster.ws_url})", flush=True)
        while not stop.wait(0.5):
            for proc in cluster._procs:
                if proc.popen.poll() is not None:
                    print(f"local_cluster: {proc.name} exited with {proc.popen.returncode}; see {proc.log}",
                          file=sys.stderr)
                    stop.set()
    finally:
        print("stopping", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
