"""Logs carry session and response ids, and no message content unless asked for."""

from __future__ import annotations

import logging

import pytest

from rtserver.client import Client
from rtserver.config import load_settings
from rtserver.logs import JsonFormatter
from rtserver.server.app import Gateway

SECRET = "my card number is 4111 1111 1111 1111"


async def converse(caplog: pytest.LogCaptureFixture, **overrides: object) -> list[str]:
    gw = Gateway(load_settings(env={}, overrides=dict(
        port=0, embedded_engine="synthetic", embedded_mode="inproc", model_id="synthetic", synthetic_tokens=3,
        synthetic_rate=0, **overrides)))
    with caplog.at_level(logging.DEBUG, logger="rtserver"):  # all of rtserver; the library is kept at WARNING
        async with gw.lifespan():
            async with await Client.connect(f"ws://127.0.0.1:{gw.port}/ws") as c:
                turn = await c.ask(SECRET)
                assert turn.done is not None
    fmt = JsonFormatter()
    return [fmt.format(r) for r in caplog.records]


async def test_no_content_by_default(caplog: pytest.LogCaptureFixture) -> None:
    lines = await converse(caplog)
    assert not any("4111" in line for line in lines)
    finished = [line for line in lines if '"finish_reason": "stop"' in line]
    assert finished and '"session_id": "s_' in finished[0] and '"response_id": "r_' in finished[0]


async def test_content_only_when_enabled(caplog: pytest.LogCaptureFixture) -> None:
    lines = await converse(caplog, log_content=True)
    assert any("4111" in line for line in lines)
