"""compose/nginx.conf: WebSocket upgrade for /ws, long timeouts, no /metrics; ``nginx -t``
on a copy whose upstream hostnames point at 127.0.0.1 (the render local_cluster.py uses)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import require
from tests.unit.deploy.conftest import COMPOSE, load_local_cluster

CONF = (COMPOSE / "nginx.conf").read_text()


def _location(text: str, path: str) -> str:
    match = re.search(r"location\s+=\s+" + re.escape(path) + r"\s*\{(.*?)\n\s*\}", text, re.DOTALL)
    assert match, f"no location = {path}"
    return match.group(1)


def test_ws_location_upgrades_with_long_timeouts() -> None:
    ws = _location(CONF, "/ws")
    assert "proxy_http_version 1.1;" in ws
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    assert "proxy_buffering off;" in ws
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        seconds = int(re.search(directive + r"\s+(\d+)s;", ws).group(1))  # type: ignore[union-attr]
        assert seconds >= 300, f"{directive} would cut idle WebSockets"


def test_metrics_are_not_served_through_the_lb() -> None:
    assert "return 404;" in _location(CONF, "/metrics")


def test_access_log_never_records_query_strings() -> None:
    log_format = CONF[CONF.index("log_format"): CONF.index(";", CONF.index("log_format"))]
    assert "$request_uri" not in log_format and "$args" not in log_format and "$request " not in log_format


def test_upstream_lists_every_compose_gateway() -> None:
    upstream = re.search(r"upstream rtserver_gateways \{(.*?)\}", CONF, re.DOTALL).group(1)  # type: ignore[union-attr]
    assert re.findall(r"server\s+([\w-]+:\d+)", upstream) == ["gateway-1:8000", "gateway-2:8000"]


def test_render_points_the_upstream_at_local_ports(tmp_path: Path) -> None:
    lc = load_local_cluster()
    text = lc.render_nginx_conf(CONF, ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"], "127.0.0.1:9999",
                                tmp_path)
    assert re.findall(r"server\s+(\S+:\d+)", text) == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
    assert "gateway-1" not in text and "listen 127.0.0.1:9999;" in text
    assert f"access_log {tmp_path / 'access.log'}" in text
    assert "limit_conn ws_per_ip 64;" in text
    relaxed = lc.render_nginx_conf(CONF, ["127.0.0.1:9001"], "127.0.0.1:9999", tmp_path, sockets_per_client=5000)
    assert "limit_conn ws_per_ip 5000;" in relaxed


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = require("nginx")
    lc = load_local_cluster()
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / name).mkdir(parents=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(lc.render_nginx_conf(CONF, ["127.0.0.1:9001", "127.0.0.1:9002"], "127.0.0.1:9999", tmp_path))
    proc = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf),
                           "-g", f"pid {tmp_path / 'nginx.pid'};"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "syntax is ok" in proc.stderr
