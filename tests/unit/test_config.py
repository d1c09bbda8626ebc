from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtserver.config import load_settings
from rtserver.exceptions import ConfigError


def test_layers_flow_one_way(tmp_path: Path) -> None:
    toml = tmp_path / "rt.toml"
    toml.write_text('port = 9000\nmax_text_chars = 500\nworker = ["a:1"]\n[models]\nagent = "coder"\n')
    s = load_settings(config_file=toml, env={"RTSERVER_PORT": "9100", "RTSERVER_LOG_JSON": "yes"},
                      overrides={"port": 9200})
    assert s.port == 9200 and s.max_text_chars == 500 and s.log_json is True and s.worker == ["a:1"]
    assert s.model_map()["agent"] == "coder" and s.model_map()["chat"] == s.model_id
    assert s.limits().max_text_chars == 500


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RTSERVER_PORT": "eighty"}, "port"),
        ({"RTSERVER_PORT": "70000"}, "port"),
        ({"RTSERVER_MODELS": "poetry=x"}, "unknown use cases"),
        ({"RTSERVER_EMBEDDED_ENGINE": "gpt"}, "embedded_engine"),
    ],
)
def test_bad_values_are_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_unknown_toml_key(tmp_path: Path) -> None:
    toml = tmp_path / "rt.toml"
    toml.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_settings(config_file=toml, env={})


def test_help_documents_every_setting() -> None:
    out = subprocess.run([sys.executable, "-m", "rtserver", "serve", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in ("--port", "--host", "--redis", "--worker", "--max-text-chars", "--config", "--session-ttl-s"):
        assert flag in out


def test_bad_flag_value_exits_with_a_message() -> None:
    proc = subprocess.run([sys.executable, "-m", "rtserver", "serve", "--port", "x"], capture_output=True, text=True)
    assert proc.returncode == 2 and "configuration error" in proc.stderr


# The shipped sampling of the default model, as README's settings table documents it.
README_SAMPLING = {"temperature": 0.0, "repetition_penalty": 1.05, "system_prompt": "Answer briefly and accurately."}


def test_default_sampling_is_the_default_models_card() -> None:
    s = load_settings(env={})
    assert {k: getattr(s, k) for k in README_SAMPLING} == README_SAMPLING


def test_a_model_without_a_card_gets_plain_sampling_and_no_system_prompt() -> None:
    s = load_settings(env={"RTSERVER_MODEL": "/models/qwen2.5-1.5b-instruct-q4_0.gguf"})
    assert s.system_prompt == "" and s.temperature > 0 and s.repetition_penalty == 1.0


def test_the_default_models_file_path_gets_its_card() -> None:
    s = load_settings(env={"RTSERVER_MODEL": "/anywhere/SmolLM2-135M-Instruct.Q4_1.gguf"})
    assert s.system_prompt == README_SAMPLING["system_prompt"]


def test_any_layer_overrides_the_card(tmp_path: Path) -> None:
    toml = tmp_path / "rt.toml"
    toml.write_text('system_prompt = ""\n')
    s = load_settings(config_file=toml, env={"RTSERVER_TEMPERATURE": "0.3"}, overrides={"repetition_penalty": 1.2})
    assert (s.temperature, s.repetition_penalty, s.system_prompt) == (0.3, 1.2, "")


def test_help_names_each_default_once() -> None:
    out = subprocess.run([sys.executable, "-m", "rtserver", "serve", "--help"], capture_output=True, text=True,
                         check=True, env={**os.environ, "COLUMNS": "200"}).stdout
    options = [line for line in out.splitlines() if line.lstrip().startswith("--")]
    assert len(options) > 30
    for line in options:
        assert line.count("(default") <= 1 and line.count("(repeatable)") <= 1, line
    assert "(default '')" not in out and "(default: )" not in out
    assert any("--web-root" in line and "the bundled web/ widget" in line for line in options)
