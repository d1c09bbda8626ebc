"""Every PromQL expression of the Grafana dashboard returns data from a real Prometheus
scraping a live gateway under a little load, and every alert rule evaluates cleanly.

A panel that references a metric rtserver does not export shows "No data" forever;
this test is what stops that. (Expressions ending in ``or on() vector(0)`` always
return data; tests/unit/deploy/test_dashboard.py checks their metrics exist.)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rtserver.client import Client
from rtserver.config import load_settings
from rtserver.server.app import Gateway
from tests.conftest import require
from tests.unit.deploy.conftest import COMPOSE, DASHBOARD_JSON, dashboard_expressions, free_port

DEADLINE_S = 60.0  # upper bound for Prometheus to scrape and evaluate; never a latency claim


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


async def _until(what: str, probe: Any) -> Any:
    """Poll ``probe()`` (blocking, run in a thread) until it returns a truthy value."""
    end = time.monotonic() + DEADLINE_S
    last: Any = None
    while time.monotonic() < end:
        try:
            last = await asyncio.to_thread(probe)
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(0.25)
    pytest.fail(f"{what}: nothing after {DEADLINE_S:.0f} s (last: {last!r})")


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    settings = load_settings(env={}, overrides=dict(
        port=0, embedded_engine="synthetic", model_id="synthetic", embedded_mode="inproc",
        synthetic_rate=500.0, synthetic_tokens=16,
        # every first message goes to the classifier, however loaded the machine: the panels'
        # expected decisions below do not depend on the fast-signal fallback (tested in test_batching)
        classifier_max_wait_ms=60_000.0))
    gw = Gateway(settings)
    async with gw.lifespan():
        yield gw


@pytest.fixture
def prometheus(tmp_path: Path, gateway: Gateway) -> Any:
    binary = require("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(COMPOSE / "alerts.yml")],
        "scrape_configs": [{"job_name": "rtserver-gateway",
                            "static_configs": [{"targets": [f"127.0.0.1:{gateway.port}"]}]}],
    }))
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def _load(url: str) -> int:
    """A few conversations touching every path the dashboard shows; returns messages sent."""
    async def chat(encoding: str) -> None:
        async with await Client.connect(url, encoding=encoding) as c:
            for text in ("hello there", "tell me more"):
                turn = await c.ask(text)
                assert turn.done is not None and turn.done["finish_reason"] == "stop"

    await asyncio.gather(chat("json"), chat("msgpack"), chat("json"))  # 6 messages: full + bypass
    c = await Client.connect(url)
    await c.ask("hello")                                             # full
    await c.ask("about the invoice", context={"page": "billing"})    # new context: context change
    turn = await c.ask("plan it", context={"use_case": "agent"})     # override: reroute
    assert turn.route is not None and turn.route["decision"] == "reroute"
    bad = await c.send_message("x", context={"use_case": "nonsense"})  # an error frame
    while (frame := await c.recv(10)).get("ref") != bad:
        pass
    assert frame["type"] == "error" and frame["code"] == "invalid_route_override"
    assert c.session is not None
    # resume on a second socket while the first is open: a resume, a replay, a replaced socket
    again = await Client.connect(url, hello={"session_id": c.session["session_id"],
                                             "resume_token": c.session["resume_token"],
                                             "response_id": turn.route["response_id"], "last_seq": 3})
    assert again.session is not None and again.session["resumed"] is True
    await again.close()
    await c.close()
    return 6 + 3  # answered messages (the refused one may or may not count)


async def test_every_dashboard_expression_returns_data(gateway: Gateway, prometheus: str) -> None:
    await _until("prometheus ready", lambda: urllib.request.urlopen(f"{prometheus}/-/ready", timeout=2).status == 200)

    def query(expr: str) -> list[Any]:
        reply = _get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert reply["status"] == "success", reply
        return list(reply["data"]["result"])

    await _until("gateway scraped", lambda: query('up{job="rtserver-gateway"} == 1'))

    def counted(n: int) -> bool:
        result = query("sum(rtserver_messages_total)")
        return bool(result) and float(result[0]["value"][1]) >= n

    # Twice: a series is born with its first value, and rate() only sees increases after that.
    sent = 0
    for _ in range(2):
        sent += await _load(f"ws://127.0.0.1:{gateway.port}/ws")
        await _until("messages counted by Prometheus", lambda n=sent: counted(n))  # type: ignore[misc]
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    results: dict[str, list[Any]] = {}
    for title, expr in dashboard_expressions(dashboard):
        data = await _until(f"panel {title!r}: {expr}", lambda e=expr: query(e))  # type: ignore[misc]
        results[title] = results.get(title, []) + data
    # the panels say what happened: some messages bypassed routing, some did not; sessions were created
    bypass_rate = float(results["Bypass rate"][0]["value"][1])
    assert 0.0 < bypass_rate < 1.0
    decisions = {r["metric"]["decision"] for r in results["Routing decisions"]}
    assert decisions == {"full", "bypass", "reroute"}
    assert any(r["metric"].get("result") == "ok" for r in results["Resumes"])


async def test_every_alert_rule_evaluates(gateway: Gateway, prometheus: str) -> None:
    def evaluated() -> list[dict[str, Any]]:
        groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else []

    rules = await _until("alert rules evaluated", evaluated)
    assert len(rules) >= 5
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
