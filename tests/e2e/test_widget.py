"""The chat widget (web/rtchat.js) in a real browser against a real ``rtserver serve``
with the embedded SmolLM2 model.

Each test runs one scenario of ``widget.mjs`` (Node + playwright-core driving Debian's
chromium) and asserts its exit status and JSON report; the checks themselves, and what a
user would notice in each, are listed in that file. Screenshots land in
``test-artifacts/e2e/``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.procs import Proc, gateway, start_gateway, stop

pytestmark = [pytest.mark.browser, pytest.mark.model]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
SERVE_ARGS = ("--max-tokens", "96")  # keeps each CPU reply to a few seconds
SCENARIO_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def node() -> str:
    chromium = require("/usr/bin/chromium") if os.path.exists("/usr/bin/chromium") else require("chromium")
    os.environ.setdefault("CHROMIUM", chromium)
    path = require("node")
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        msg = "playwright-core is not installed: run `npm ci` in tests/e2e"
        if os.environ.get("RTSERVER_REQUIRE_SERVICES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def server(node: str) -> Iterator[Proc]:
    p = start_gateway(*SERVE_ARGS)
    try:
        yield p
    finally:
        stop(p.proc)


def _report(out: str) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.startswith('{"scenario"'):
            report: dict[str, Any] = json.loads(line)
            return report
    raise AssertionError(f"no report from the browser driver:\n{out[-4000:]}")


def run_scenario(node: str, proc: Proc, scenario: str, *extra: str) -> dict[str, Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cmd = [node, str(HERE / "widget.mjs"), "--base", proc.http, "--scenario", scenario, "--out", str(ARTIFACTS), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S, cwd=ROOT)
    report = _report(done.stdout)
    assert done.returncode == 0 and report["ok"], f"{scenario} failed:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    return report


def test_streams_text_with_route_and_latency_badge(node: str, server: Proc) -> None:
    report = run_scenario(node, server, "stream")
    first, second = report["result"]["first"], report["result"]["second"]
    assert first["decision"] == "full" and second["decision"] == "bypass"
    assert "smollm2-135m" in first["badge"] and "TTFT" in first["badge"] and "tok/s" in first["badge"]


def test_stop_button_and_escape_cancel_the_answer(node: str, server: Proc) -> None:
    run_scenario(node, server, "stop")


def test_image_attachment_routes_multimodal_and_shows_the_warning(node: str, server: Proc) -> None:
    report = run_scenario(node, server, "image")
    assert "multimodal" in report["result"]["badge"]
    assert any("cannot take image" in w for w in report["result"]["warnings"])


def test_model_and_user_markup_render_as_text(node: str, server: Proc) -> None:
    run_scenario(node, server, "xss")


def test_markdown_renderer(node: str, server: Proc) -> None:
    run_scenario(node, server, "markdown")


def test_keyboard_only_and_screen_reader_announcements(node: str, server: Proc) -> None:
    run_scenario(node, server, "keyboard")


def test_dropped_socket_resumes_the_stream_without_loss_or_duplication(node: str, server: Proc) -> None:
    report = run_scenario(node, server, "resume")
    assert report["result"]["last_seq"] > report["result"]["dropped_at_seq"]


def test_screenshots_desktop_phone_light_dark_and_floating_embed(node: str, server: Proc) -> None:
    run_scenario(node, server, "screens")
    for name in ("desktop-light", "desktop-dark", "phone-light", "phone-dark"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 0


def test_server_restart_on_the_same_port(node: str) -> None:
    """Kill the whole server (gateway and worker) mid-answer, start a new one on the same port."""
    first = start_gateway(*SERVE_ARGS)
    port = first.port
    second: Proc | None = None
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cmd = [node, str(HERE / "widget.mjs"), "--base", first.http, "--scenario", "restart", "--out", str(ARTIFACTS)]
    driver = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
    )
    assert driver.stdin is not None and driver.stdout is not None
    lines: list[str] = []
    try:
        for line in driver.stdout:
            lines.append(line)
            if line.startswith('{"event": "restart"}') or line.startswith('{"event":"restart"}'):
                stop(first.proc, signal.SIGKILL)  # a crash, not a drain: the socket just dies
                second = start_gateway("--port", str(port), *SERVE_ARGS)
                driver.stdin.write("restarted\n")
                driver.stdin.flush()
        driver.wait(SCENARIO_TIMEOUT_S)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        stop(first.proc)
        if second is not None:
            stop(second.proc)
    out = "".join(lines)
    report = _report(out)
    assert second is not None, f"the driver never asked for the restart:\n{out[-4000:]}"
    assert driver.returncode == 0 and report["ok"], f"restart failed:\n{out[-6000:]}"


def test_second_tab_takes_the_conversation_without_a_tug_of_war(node: str, server: Proc) -> None:
    run_scenario(node, server, "takeover")


def test_refused_origin_is_shown_and_not_retried(node: str) -> None:
    args = (
        "--embedded-engine",
        "synthetic",
        "--model-id",
        "synthetic",
        "--allowed-origins",
        "https://elsewhere.example",
    )
    with gateway(*args) as p:
        report = run_scenario(node, p, "refused")
    assert "Not allowed" in report["result"]["status"]


def test_token_auth(node: str) -> None:
    """A server with ``--auth-secret``: refused without a token, served with ``auth``."""
    from rtserver.auth import issue

    secret = "e2e-widget-secret"
    args = ("--embedded-engine", "synthetic", "--model-id", "synthetic", "--auth-secret", secret)
    with gateway(*args) as p:
        report = run_scenario(node, p, "auth", "--token", issue(secret, "widget-user", 600))
    assert "Not authorized" in report["result"]["status"]
