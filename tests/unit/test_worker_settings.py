"""``rtserver worker`` is configured one way, like the gateway: defaults < TOML file (``--config``) <
``RTSERVER_WORKER_*`` env < flags (README "Configure", docs/engines.md). Unknown keys and bad values are
refused with a message naming the key."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtserver.cli import build_parser
from rtserver.config import (
    FIELDS,
    WORKER_ENV_PREFIX,
    WORKER_FIELDS,
    Settings,
    WorkerSettings,
    load_worker_settings,
    to_flags,
    worker_settings_from_args,
)
from rtserver.engines.registry import create_engine
from rtserver.exceptions import ConfigError


def _from_argv(*argv: str, env: dict[str, str] | None = None) -> WorkerSettings:
    """What ``rtserver worker ARGV`` runs with: the real parser, then the layers."""
    return worker_settings_from_args(build_parser().parse_args(["worker", *argv]), env={} if env is None else env)


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    toml = tmp_path / "worker.toml"
    toml.write_text('capacity = 4\nmax_queue = 5\nname = "file"\nlog_level = "debug"\nengine = "synthetic"\n')
    env = {"RTSERVER_WORKER_MAX_QUEUE": "6", "RTSERVER_WORKER_NAME": "env", "RTSERVER_WORKER_LOG_JSON": "yes"}
    s = _from_argv("--config", str(toml), "--name", "flag", env=env)
    assert (s.capacity, s.log_level, s.engine) == (4, "debug", "synthetic")  # file over defaults
    assert (s.max_queue, s.log_json) == (6, True)  # env over file and defaults
    assert s.name == "flag"  # flag over env over file
    assert s.listen == WorkerSettings().listen and s.heartbeat_s == WorkerSettings().heartbeat_s  # defaults


def test_with_no_layer_the_defaults_apply_and_the_name_comes_from_engine_and_pid() -> None:
    s = _from_argv()
    assert s == dataclasses.replace(WorkerSettings(), name=f"openvino-{os.getpid()}")
    assert _from_argv("--engine", "synthetic").name == f"synthetic-{os.getpid()}"


def test_every_flag_the_worker_had_keeps_its_name_and_meaning() -> None:
    s = _from_argv(
        "--engine", "openai", "--model", "m", "--model-id", "mid", "--gpu", "1", "--cpus", "0,1",
        "--listen", "unix:/tmp/w.sock", "--advertise", "10.0.0.2:7100", "--name", "w1", "--capacity", "3",
        "--max-queue", "0", "--metrics-port", "9100", "--metrics-host", "0.0.0.0", "--redis", "redis://r:6379",
        "--key-prefix", "k", "--base-url", "http://127.0.0.1:8080/v1", "--api-key", "sk", "--synthetic-tokens", "7",
        "--synthetic-rate", "0", "--synthetic-first-token-ms", "5", "--modalities", "text,image",
        "--device", "cuda:1", "--engine-host", "process", "--prefill-chunk", "64", "--log-level", "warning",
        "--log-json",
    )
    assert s == WorkerSettings(
        engine="openai", model="m", model_id="mid", gpu="1", cpus="0,1", listen="unix:/tmp/w.sock",
        advertise="10.0.0.2:7100", name="w1", capacity=3, max_queue=0, metrics_port=9100, metrics_host="0.0.0.0",
        redis="redis://r:6379", key_prefix="k", base_url="http://127.0.0.1:8080/v1", api_key="sk",
        synthetic_tokens=7, synthetic_rate=0.0, synthetic_first_token_ms=5.0, modalities="text,image",
        device="cuda:1", engine_host="process", prefill_chunk=64, log_level="warning", log_json=True,
    )
    assert s.cpu_set() == {0, 1}


def test_the_gpu_engine_options_are_settings_too(tmp_path: Path) -> None:
    toml = tmp_path / "worker.toml"
    toml.write_text('engine = "gpu"\nmax_len = 2048\n')
    s = _from_argv("--config", str(toml), "--slots", "40", env={"RTSERVER_WORKER_DECODE_MODE": "eager"})
    assert (s.max_len, s.slots, s.decode_mode) == (2048, 40, "eager")


def test_an_unknown_file_key_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "worker.toml"
    toml.write_text("capacty = 4\n")
    with pytest.raises(ConfigError, match="unknown setting 'capacty'"):
        load_worker_settings(config_file=toml, env={})


def test_an_unknown_worker_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match="RTSERVER_WORKER_CAPACTIY"):
        load_worker_settings(env={"RTSERVER_WORKER_CAPACTIY": "4"})


def test_the_gateways_variables_are_not_the_workers_business() -> None:
    s = load_worker_settings(env={"RTSERVER_WORKER_RETRY_S": "5", "RTSERVER_PORT": "9000", "RTSERVER_CAPACITY": "2"})
    assert s.capacity == WorkerSettings().capacity


def test_no_variable_means_one_thing_to_the_gateway_and_another_to_the_worker() -> None:
    gateway = {"RTSERVER_" + name.upper() for name in FIELDS}
    worker = {WORKER_ENV_PREFIX + name.upper() for name in WORKER_FIELDS}
    assert not gateway & worker


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"RTSERVER_WORKER_CAPACITY": "many"}, "capacity"),
        ({"RTSERVER_WORKER_CAPACITY": "0"}, "capacity"),
        ({"RTSERVER_WORKER_MAX_QUEUE": "-1"}, "max_queue"),
        ({"RTSERVER_WORKER_LOG_JSON": "maybe"}, "log_json"),
        ({"RTSERVER_WORKER_LOG_LEVEL": "loud"}, "log_level"),
        ({"RTSERVER_WORKER_ENGINE": "gpt"}, "engine"),
        ({"RTSERVER_WORKER_ENGINE_HOST": "thread"}, "engine_host"),
        ({"RTSERVER_WORKER_LISTEN": "nowhere"}, "listen"),
        ({"RTSERVER_WORKER_CPUS": "a,b"}, "cpus"),
        ({"RTSERVER_WORKER_METRICS_PORT": "70000"}, "metrics_port"),
        ({"RTSERVER_WORKER_MAX_LEN": "-5"}, "max_len"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_worker_settings(env=env)


def test_a_bad_value_in_the_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    toml = tmp_path / "worker.toml"
    toml.write_text('heartbeat_s = "often"\n')
    with pytest.raises(ConfigError, match="heartbeat_s"):
        load_worker_settings(config_file=toml, env={})


def test_the_worker_command_exits_2_with_the_message() -> None:
    env = {**os.environ, "RTSERVER_WORKER_CAPACITY": "many"}
    proc = subprocess.run([sys.executable, "-m", "rtserver", "worker", "--engine", "synthetic"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 2 and "configuration error" in proc.stderr and "capacity" in proc.stderr


def test_help_names_the_file_and_the_variables() -> None:
    out = subprocess.run([sys.executable, "-m", "rtserver", "worker", "--help"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    for text in ("--config", "RTSERVER_WORKER_<NAME>", "--max-len", "--slots", "--decode-mode", "--heartbeat-s"):
        assert text in out


def test_flags_rebuild_the_settings_they_came_from() -> None:
    changed = WorkerSettings(
        engine="gpu", model="/models/q", model_id="q", capacity=3, engine_host="inline", prefill_chunk=8,
        device="cpu", max_len=100, slots=9, decode_mode="eager", base_url="u", api_key="-k", modalities="text",
        synthetic_tokens=1, synthetic_rate=0.5, synthetic_first_token_ms=1.5, gpu="0", cpus="1", listen="h:1",
        advertise="a:2", name="--odd name", max_queue=0, heartbeat_s=0.25, drain_timeout_s=1.0, metrics_port=1,
        metrics_host="::", redis="redis://x", key_prefix="p", log_level="debug", log_json=True,
    )
    assert {f.name for f in dataclasses.fields(changed) if getattr(changed, f.name) == f.default} == set()
    assert _from_argv(*to_flags(changed)) == changed
    assert to_flags(WorkerSettings()) == []


def test_the_gateway_and_the_worker_share_their_defaults() -> None:
    gateway, worker = Settings(), WorkerSettings()
    assert (gateway.capacity, gateway.embedded_engine_host, gateway.prefill_chunk, gateway.key_prefix) == (
        worker.capacity, worker.engine_host, worker.prefill_chunk, worker.key_prefix)
    assert (gateway.model, gateway.synthetic_tokens, gateway.synthetic_rate) == (
        worker.model, worker.synthetic_tokens, worker.synthetic_rate)


# ---------------------------------------------------------------- what reaches the engine
def test_an_engine_option_the_engine_does_not_take_is_refused() -> None:
    s = _from_argv("--engine", "synthetic", "--max-len", "512")
    with pytest.raises(ConfigError, match="max_len"):
        create_engine(s.engine, model=s.model, capacity=s.capacity, **s.engine_options())


def test_unset_engine_options_leave_the_engine_its_defaults() -> None:
    s = _from_argv("--engine", "openvino")
    engine = create_engine(s.engine, model=s.model, capacity=s.capacity, **s.engine_options())
    assert engine.info.engine == "openvino"


def test_a_decode_mode_the_gpu_engine_does_not_have_is_refused() -> None:
    pytest.importorskip("torch")
    s = _from_argv("--engine", "gpu", "--decode-mode", "grpahs", "--max-len", "256")
    with pytest.raises(ConfigError, match="decode_mode"):
        create_engine(s.engine, model=s.model, capacity=s.capacity, **s.engine_options())


def test_the_readme_worker_file_is_a_valid_worker_configuration(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    example = readme.split("```toml\n# rtserver worker --config", 1)[1].split("```", 1)[0]
    toml = tmp_path / "gpu0.toml"
    toml.write_text("#" + example)
    s = load_worker_settings(config_file=toml, env={})
    assert (s.engine, s.gpu, s.max_len, s.slots, s.decode_mode, s.log_json) == ("gpu", "0", 8192, 128, "graphs", True)
