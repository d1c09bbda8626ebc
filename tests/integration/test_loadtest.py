"""The load tester against a real ``rtserver serve`` process (synthetic engine), small scale."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.__main__ import main
from loadtest.runner import LoadConfig, LoadRun

READY = re.compile(rb"rtserver ready on http://127\.0\.0\.1:(\d+)/")


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    cmd = [
        sys.executable,
        "-m",
        "rtserver",
        "serve",
        "--port",
        "0",
        "--embedded-engine",
        "synthetic",
        "--model-id",
        "synthetic",
        "--synthetic-tokens",
        "24",
        "--synthetic-rate",
        "1000",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline, port, buf = time.monotonic() + 60.0, None, b""
    try:
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            if sel.select(timeout=0.5):
                chunk = os.read(proc.stdout.fileno(), 4096)
                buf += chunk
                if m := READY.search(buf):
                    port = int(m.group(1))
        assert port is not None, f"server did not become ready: {buf!r}"
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_four_conversations_three_turns_each(server_url: str, encoding: str) -> None:
    cfg = LoadConfig(
        url=server_url,
        conversations=4,
        turns=3,
        ramp=0,
        encoding=encoding,
        duration_s=60.0,
        turn_timeout_s=20.0,
        progress_every_s=0,
    )
    report = await LoadRun(cfg).run(progress=None)

    assert report["connections"] == {"opened": 4, "failed": 0, "not_started": 0}
    assert report["turns"]["completed"] == 12
    assert report["turns"]["failed"] == 0
    assert report["errors_by_code"] == {}
    assert report["seq"] == {"lost": 0, "out_of_order": 0}
    assert report["tokens"] == 12 * 24
    # every conversation is routed once (in full, or by fast signals when the classifier is
    # busy on a slow machine: docs/routing.md), then its follow-ups bypass the classifier
    decisions = report["routing"]["decisions"]
    assert sum(decisions.values()) == 12
    assert decisions.get("full", 0) + decisions.get("reroute", 0) + decisions.get("fast", 0) >= 4
    assert decisions.get("bypass", 0) > 0
    assert report["routing"]["bypass_rate"] == round(decisions["bypass"] / 12, 4)
    for side in ("client", "server"):
        assert report["ttft_ms"][side]["n"] == 12
        assert report["ttft_ms"][side]["p50"] <= report["ttft_ms"][side]["p99"]
        assert report["gap_ms"][side]["n"] > 0
    assert report["turn_ms"]["n"] == 12
    assert report["tokens_per_s"]["aggregate"] > 0
    assert report["tokens_per_s"]["per_stream"]["n"] == 12


def test_command_line_writes_json_and_exits_zero(
    server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    plot = tmp_path / "latency.png"
    rc = main(
        [
            "--url",
            server_url,
            "-c",
            "2",
            "-t",
            "2",
            "--scenario",
            "mixed_media",
            "--encoding",
            "msgpack",
            "--json",
            str(out),
            "--plot",
            str(plot),
            "--duration-s",
            "30",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    report = json.loads(out.read_text())
    assert report["turns"]["completed"] == 4
    # the synthetic model takes text only: the image is refused with a warning, the text answered
    assert report["warnings_by_code"] == {"attachment_unsupported": 2}
    assert "TTFT client" in captured.out
    assert "open " in captured.err  # the live progress line
    assert plot.exists() or "matplotlib is not installed" in captured.err


def test_an_unreachable_server_is_a_counted_failure(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--url", "ws://127.0.0.1:9/ws", "-c", "2", "-t", "1", "--connect-timeout-s", "2", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "failed 2" in out


def test_two_client_processes_share_the_conversations(
    server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    rc = main(["--url", server_url, "-c", "6", "-t", "2", "--ramp", "0", "--processes", "2", "--quiet",
               "--json", str(out), "--duration-s", "60"])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    report = json.loads(out.read_text())
    assert report["config"]["processes"] == 2
    assert report["connections"]["opened"] == 6
    assert report["turns"]["planned"] == report["turns"]["completed"] == 12
    assert report["ttft_ms"]["client"]["n"] == 12
    assert report["seq"] == {"lost": 0, "out_of_order": 0}
    assert "planned 12  sent 12 (completed 12, failed 0, cut by the cap 0)  not sent 0" in captured.out
