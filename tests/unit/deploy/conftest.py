"""Fixtures for the deployment files in compose/: parsed compose file, CLI flags, paths."""

from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose"
COMPOSE_FILE = COMPOSE / "docker-compose.yml"
# Values for the variables the compose file requires (it refuses to start without them).
COMPOSE_ENV = {"RTSERVER_AUTH_SECRET": "test-secret", "GRAFANA_ADMIN_PASSWORD": "test-password"}


def load_local_cluster() -> ModuleType:
    """compose/local_cluster.py as a module (compose/ is not a package)."""
    spec = importlib.util.spec_from_file_location("rtserver_local_cluster", COMPOSE / "local_cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def flag_values(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, tok in enumerate(cmd[:-1]) if tok == flag]


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def gateways(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if command_of(s)[:2] == ["rtserver", "serve"]}


@pytest.fixture(scope="session")
def workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if command_of(s)[:2] == ["rtserver", "worker"]}


@pytest.fixture(scope="session")
def cli_flags() -> dict[str, set[str]]:
    """The flags each rtserver subcommand accepts, read from its real ``--help``."""
    out: dict[str, set[str]] = {}
    for sub in ("serve", "worker"):
        proc = subprocess.run([sys.executable, "-m", "rtserver", sub, "--help"], capture_output=True, text=True,
                              timeout=60, check=True)
        out[sub] = set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", proc.stdout))
    return out


# ---------------------------------------------------------------- dashboard and rules
DASHBOARD_JSON = COMPOSE / "grafana" / "dashboards" / "rtserver.json"
PROMETHEUS_SERIES = {"up"}  # series Prometheus makes itself
_PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "min", "max", "scalar", "vector", "on", "or",
                 "le", "count", "avg", "without", "ignoring", "and", "unless", "bool", "offset"}


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load((COMPOSE / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects (label names and values and functions excluded)."""
    bare = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", bare)  # grouping labels
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # ranges
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", bare))
    return {n for n in names if n not in _PROMQL_WORDS and not n.replace("e", "").isdigit()}


def exported_series(exposition: str) -> set[str]:
    """Every series name a /metrics text can hold, from its ``# TYPE`` lines (also for
    labelled metrics that have no sample yet)."""
    out: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE):
        if kind == "counter":
            base = name.removesuffix("_total")
            out |= {base + "_total", base + "_created"}
        elif kind == "histogram":
            out |= {name + "_bucket", name + "_sum", name + "_count", name + "_created"}
        else:
            out.add(name)
    return out
