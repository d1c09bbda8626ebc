"""create_engine refuses an option the chosen engine does not take (no silent ``**_ignored``)."""

from __future__ import annotations

import pytest

from rtserver.config import Settings
from rtserver.engines.registry import create_engine
from rtserver.engines.synthetic import SyntheticEngine
from rtserver.exceptions import ConfigError


def test_a_misspelt_synthetic_option_is_refused() -> None:
    with pytest.raises(ConfigError, match="synthetic_rat"):
        create_engine("synthetic", model="synthetic", synthetic_rat=5.0)


def test_a_misspelt_openai_option_is_refused() -> None:
    with pytest.raises(ConfigError, match="base_urll"):
        create_engine("openai", model="m", base_urll="http://127.0.0.1:1/v1")


def test_the_worker_cli_synthetic_options_do_not_reach_other_engines() -> None:
    engine = create_engine("openai", model="m", base_url="http://127.0.0.1:1/v1",
                           synthetic_tokens=3, synthetic_rate=0.0, synthetic_first_token_ms=0.0)
    assert engine.info.engine == "openai"


def test_gateway_worker_cli_and_registry_share_the_synthetic_defaults() -> None:
    from rtserver.cli import build_parser
    from rtserver.config import worker_settings_from_args

    worker = worker_settings_from_args(build_parser().parse_args(["worker", "--engine", "synthetic"]), env={})
    settings = Settings()
    built = create_engine("synthetic", model="synthetic")
    assert isinstance(built, SyntheticEngine)
    assert worker.synthetic_rate == settings.synthetic_rate
    assert worker.synthetic_tokens == settings.synthetic_tokens
    assert built._interval == pytest.approx(1.0 / settings.synthetic_rate)
    assert built._tokens == settings.synthetic_tokens
