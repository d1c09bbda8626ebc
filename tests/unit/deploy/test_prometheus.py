"""compose/prometheus.yml and alerts.yml: ``promtool check`` and what they scrape."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.conftest import require
from tests.unit.deploy.conftest import COMPOSE, command_of, flag_values

PROM = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())


def test_promtool_accepts_the_config_and_its_rules() -> None:
    promtool = require("promtool")
    proc = subprocess.run([promtool, "check", "config", str(COMPOSE / "prometheus.yml")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = require("promtool")
    proc = subprocess.run([promtool, "check", "rules", str(COMPOSE / "alerts.yml")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_gateway_is_scraped_directly(gateways: dict[str, Any]) -> None:
    job = next(j for j in PROM["scrape_configs"] if j["job_name"] == "rtserver-gateway")
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    expected = {f"{name}:{flag_values(command_of(svc), '--port')[0]}" for name, svc in gateways.items()}
    assert targets == expected
    assert job.get("metrics_path", "/metrics") == "/metrics"
