"""``rtserver worker`` as a real process, configured by a TOML file (``--config``), ``RTSERVER_WORKER_*``
variables and flags (README "Configure"): what each layer set shows on the worker wire
(docs/worker-protocol.md: ``ready`` {name, capacity}, ``load`` {limit}, ``done`` {completion}) and in its logs.
The embedded worker of a gateway gets the gateway's log settings, whatever ``RTSERVER_WORKER_*`` says."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rtserver.config import load_settings
from rtserver.server.embedded import EmbeddedWorker
from rtserver.workers.wire import FrameReader, pack
from tests.procs import stop

pytestmark = pytest.mark.asyncio


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


async def _frames(reader: asyncio.StreamReader, decoder: FrameReader, until: str) -> list[dict[str, Any]]:
    """Frames from the worker up to and including the first of type ``until``."""
    got: list[dict[str, Any]] = []
    while True:
        data = await asyncio.wait_for(reader.read(65536), 60)
        assert data, "the worker closed the connection"
        for frame in decoder.feed(data):
            got.append(frame)
            if frame["t"] == until:
                return got


def _start(cmd: list[str], env: dict[str, str], log: Path, timeout: float = 120.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``cmd`` (stderr to ``log``); returns once it printed ``READY ADDRESS``."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and select.select([proc.stdout], [], [], deadline - time.monotonic())[0]:
        line = proc.stdout.readline()
        if line.startswith(b"READY "):
            return proc, line.split()[1].decode()
        if not line:
            break
    stop(proc)
    raise AssertionError(f"the worker did not start: {log.read_text()[-2000:]}")


async def test_file_env_and_flags_each_reach_a_running_worker(tmp_path: Path) -> None:
    toml = tmp_path / "worker.toml"
    toml.write_text('name = "from-file"\ncapacity = 2000\nmax_queue = 7\nsynthetic_tokens = 3\nsynthetic_rate = 0\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTSERVER_WORKER_")}
    env |= {"RTSERVER_WORKER_NAME": "from-env", "RTSERVER_WORKER_LOG_JSON": "true"}
    cmd = [sys.executable, "-m", "rtserver", "worker", "--engine", "synthetic", "--config", str(toml),
           "--listen", "127.0.0.1:0", "--max-queue", "9"]
    proc, address = _start(cmd, env, tmp_path / "worker.log")
    try:
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        decoder = FrameReader()
        frames = await _frames(reader, decoder, "load")
        ready = next(f for f in frames if f["t"] == "ready")
        assert ready["name"] == "from-env"  # env over file
        assert ready["capacity"] == 2000  # file over default
        assert frames[-1]["limit"] == 2000 + 9  # flag over file
        writer.write(pack({"t": "gen", "id": 1, "rid": "r1", "messages": [["user", "hi"]],
                           "params": {"max_tokens": 100}}))
        done = next(f for f in await _frames(reader, decoder, "done") if f["t"] == "done")
        assert done["reason"] == "stop" and done["completion"] == 3  # synthetic_tokens from the file
        writer.close()
    finally:
        stop(proc)
    logged = _json_lines((tmp_path / "worker.log").read_text())  # log_json from the env
    assert any(r["msg"].startswith("worker from-env ready on") for r in logged)


async def test_a_bad_file_stops_the_worker_before_it_serves(tmp_path: Path) -> None:
    toml = tmp_path / "worker.toml"
    toml.write_text("capacty = 4\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rtserver", "worker", "--engine", "synthetic", "--config", str(toml),
        "--listen", "127.0.0.1:0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and b"READY" not in out
    assert b"unknown setting 'capacty'" in err


async def test_a_gpu_worker_gets_its_max_len_from_the_file(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the gpu engine needs torch (the 'gpu' extra)")
    pytest.importorskip("transformers", reason="the gpu engine needs transformers (the 'gpu' extra)")
    from tests.fixtures.tiny_model import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny", initializer_range=0.2, tie_word_embeddings=False)
    toml = tmp_path / "worker.toml"
    toml.write_text(f'engine = "gpu"\nmodel = "{folder}"\nmodel_id = "tiny"\ndevice = "cpu"\nmax_len = 24\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTSERVER_WORKER_")}
    env |= {"RTSERVER_WORKER_DECODE_MODE": "eager"}
    cmd = [sys.executable, "-m", "rtserver", "worker", "--config", str(toml), "--listen", "127.0.0.1:0",
           "--capacity", "1", "--slots", "2"]
    proc, address = _start(cmd, env, tmp_path / "worker.log")
    try:
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        decoder = FrameReader()
        await _frames(reader, decoder, "ready")
        params = {"max_tokens": 4, "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0, "seed": 1}
        long_prompt = " ".join(f"t{i}" for i in range(10, 50))
        writer.write(pack({"t": "gen", "id": 1, "rid": "r1", "messages": [["user", long_prompt]], "params": params}))
        done = next(f for f in await _frames(reader, decoder, "done") if f["t"] == "done")
        assert done["reason"] == "error" and "24" in done["error"]  # the prompt does not fit max_len
        writer.write(pack({"t": "gen", "id": 2, "rid": "r2", "messages": [["user", "t10 t11"]], "params": params}))
        done = next(f for f in await _frames(reader, decoder, "done") if f["t"] == "done")
        assert done["reason"] == "length" and done["completion"] == 4
        writer.close()
    finally:
        stop(proc)


async def test_the_embedded_worker_logs_as_the_gateway_says(capfd: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON at info, as set for the gateway: the stray worker variables in the environment change nothing."""
    monkeypatch.setenv("RTSERVER_WORKER_LOG_LEVEL", "error")
    monkeypatch.setenv("RTSERVER_WORKER_LOG_JSON", "false")
    monkeypatch.setenv("RTSERVER_WORKER_NAME", "intruder")
    settings = load_settings(env={}, overrides={"embedded_engine": "synthetic", "log_json": True, "log_level": "info"})
    worker = EmbeddedWorker(settings)
    await worker.start(120)
    await worker.stop()
    logged = _json_lines(capfd.readouterr().err)
    assert any(r["msg"].startswith("worker embedded ready on unix:") and r["level"] == "info" for r in logged)
