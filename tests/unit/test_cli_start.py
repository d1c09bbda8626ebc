"""The start of ``rtserver serve``/``worker``: the port check and the engine's progress lines."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from rtserver.cli import port_problem
from rtserver.engines.base import ChatMessage, FinishEvent, GenerateRequest
from rtserver.engines.synthetic import SyntheticEngine
from rtserver.workers.host import start_with_progress


def test_a_free_port_has_no_problem_and_port_0_is_never_checked() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert port_problem("127.0.0.1", free) is None
    assert port_problem("127.0.0.1", 0) is None


def test_a_port_someone_listens_on_is_named_in_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        problem = port_problem("127.0.0.1", port)
    assert problem is not None and f"port {port}" in problem and "already in use" in problem and "\n" not in problem


def test_a_host_that_is_not_here_is_a_problem() -> None:
    problem = port_problem("192.0.2.1", 8123)  # TEST-NET-1: never a local address
    assert problem is not None and "192.0.2.1" in problem


class _Slow(SyntheticEngine):
    async def start(self) -> None:
        await asyncio.sleep(0.05)


async def test_engine_start_logs_load_progress_and_the_engine_still_works(caplog: pytest.LogCaptureFixture) -> None:
    engine = _Slow(tokens=3, tokens_per_s=0)
    with caplog.at_level(logging.INFO, logger="rtserver"):
        await start_with_progress(engine, every_s=0.01)
    text = caplog.text
    assert "loading and warming up the synthetic model synthetic" in text
    assert "still loading" in text and "loaded and warmed up in" in text
    events = [ev async for ev in engine.generate(GenerateRequest("r", (ChatMessage("user", "hi"),)))]
    assert isinstance(events[-1], FinishEvent) and events[-1].reason == "stop"
    assert engine.load().active == 0 and engine.info.engine == "synthetic"
    await engine.close()
