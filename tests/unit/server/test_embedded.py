"""The embedded worker is configured from the gateway's settings, one way: what an operator sets on
``rtserver serve`` (flag, env or TOML) reaches the child worker's command line."""

from __future__ import annotations

import pytest

from rtserver.config import PREFILL_CHUNK, load_settings
from rtserver.exceptions import ConfigError
from rtserver.server.embedded import EmbeddedWorker


def _flag(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def test_engine_host_and_prefill_chunk_reach_the_embedded_worker() -> None:
    settings = load_settings(env={"RTSERVER_PREFILL_CHUNK": "96"}, overrides={"embedded_engine_host": "inline"})
    cmd = EmbeddedWorker(settings).command()
    assert _flag(cmd, "--engine-host") == "inline"
    assert _flag(cmd, "--prefill-chunk") == "96"


def test_by_default_the_worker_picks_its_host_and_gets_the_measured_chunk() -> None:
    cmd = EmbeddedWorker(load_settings(env={})).command()
    assert _flag(cmd, "--engine-host") == "auto"
    assert _flag(cmd, "--prefill-chunk") == str(PREFILL_CHUNK)


def test_chunk_zero_leaves_it_to_the_engine() -> None:
    cmd = EmbeddedWorker(load_settings(env={}, overrides={"prefill_chunk": 0})).command()
    assert "--prefill-chunk" not in cmd


@pytest.mark.parametrize("overrides", [{"embedded_engine_host": "thread"}, {"prefill_chunk": -1}])
def test_a_bad_value_is_refused_at_start(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        load_settings(env={}, overrides=overrides)


def test_a_synthetic_embedded_worker_gets_no_chunk() -> None:
    cmd = EmbeddedWorker(load_settings(env={}, overrides={"embedded_engine": "synthetic"})).command()
    assert "--prefill-chunk" not in cmd
