from __future__ import annotations

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
