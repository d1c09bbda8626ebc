"""The embedded worker is configured from the gateway's settings, one way: what an operator sets on
``rtserver serve`` (flag, env or TOML) reaches the child worker's command line, and the child, parsing
that command line as ``rtserver worker`` does, runs with exactly the settings derived for it."""

from __future__ import annotations

import pytest

from rtserver.cli import build_parser
from rtserver.config import WorkerSettings, load_settings, worker_settings_from_args
from rtserver.exceptions import ConfigError
from rtserver.server.embedded import EmbeddedWorker


def _child(worker: EmbeddedWorker) -> WorkerSettings:
    """The settings the child runs with: its command line through the real ``rtserver worker`` parser,
    in the environment it is given."""
    cmd = worker.command()
    assert cmd[1:4] == ["-m", "rtserver", "worker"]
    return worker_settings_from_args(build_parser().parse_args(cmd[3:]), env=worker.environment())


def test_engine_host_and_prefill_chunk_reach_the_embedded_worker() -> None:
    settings = load_settings(env={"RTSERVER_PREFILL_CHUNK": "64"}, overrides={"embedded_engine_host": "inline"})
    child = _child(EmbeddedWorker(settings))
    assert (child.engine_host, child.prefill_chunk) == ("inline", 64)


def test_by_default_the_worker_picks_its_host_and_the_engine_its_chunk() -> None:
    child = _child(EmbeddedWorker(load_settings(env={})))
    assert (child.engine_host, child.prefill_chunk) == ("auto", 0)
    assert "prefill_chunk" not in child.engine_options()  # the engine keeps its own default


def test_the_log_settings_reach_the_embedded_worker() -> None:
    settings = load_settings(env={"RTSERVER_LOG_JSON": "1"}, overrides={"log_level": "debug"})
    child = _child(EmbeddedWorker(settings))
    assert (child.log_level, child.log_json) == ("debug", True)


def test_the_child_runs_with_exactly_the_settings_derived_from_the_gateways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTSERVER_WORKER_REDIS", "redis://elsewhere:6379")  # an operator's shell, not the gateway's say
    monkeypatch.setenv("RTSERVER_WORKER_CAPACITY", "1")
    settings = load_settings(env={}, overrides={
        "embedded_engine": "synthetic", "model_id": "syn", "capacity": 5, "synthetic_tokens": 9,
        "synthetic_rate": 0.0, "log_json": True, "log_level": "warning", "embedded_engine_host": "process",
    })
    worker = EmbeddedWorker(settings)
    child = _child(worker)
    assert child == worker.worker
    assert (child.engine, child.model_id, child.capacity, child.synthetic_tokens, child.synthetic_rate) == (
        "synthetic", "syn", 5, 9, 0.0)
    assert (child.name, child.listen, child.redis) == ("embedded", worker.address, "")


@pytest.mark.parametrize("overrides", [{"embedded_engine_host": "thread"}, {"prefill_chunk": -1}])
def test_a_bad_value_is_refused_at_start(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        load_settings(env={}, overrides=overrides)


def test_a_synthetic_embedded_worker_gets_no_chunk() -> None:
    cmd = EmbeddedWorker(load_settings(env={}, overrides={"embedded_engine": "synthetic"})).command()
    assert "--prefill-chunk" not in cmd


def test_the_openvino_engine_prefills_the_measured_chunk_by_default() -> None:
    """The worker leaves the chunk to the engine (0); openvino's default is the measured one."""
    import inspect

    from rtserver.config import PREFILL_CHUNK
    from rtserver.engines.openvino import OpenVinoEngine

    assert inspect.signature(OpenVinoEngine.__init__).parameters["prefill_chunk"].default == PREFILL_CHUNK
