"""The Grafana dashboard and the alert rules reference only metrics rtserver exports, the
provisioning points at them, and the committed JSON is what dashboard.py generates."""

from __future__ import annotations

import json
import runpy
from typing import Any

import pytest
import yaml

from rtserver.metrics import Metrics
from tests.unit.deploy.conftest import (
    COMPOSE,
    DASHBOARD_JSON,
    PROMETHEUS_SERIES,
    alert_expressions,
    dashboard_expressions,
    exported_series,
    metric_names,
)

DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_JSON.read_text())
EXPORTED = exported_series(Metrics().render().decode()) | PROMETHEUS_SERIES


def test_committed_json_is_the_generator_output() -> None:
    generator = runpy.run_path(str(COMPOSE / "grafana" / "dashboard.py"))
    assert DASHBOARD_JSON.read_text() == generator["render"](), "run python compose/grafana/dashboard.py"


def test_metric_name_parser() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, op) (rate(rtserver_store_seconds_bucket{op="x"}[5m]))) or on() vector(0)'
    assert metric_names(expr) == {"rtserver_store_seconds_bucket"}


@pytest.mark.parametrize(("title", "expr"), dashboard_expressions(DASHBOARD) + alert_expressions())
def test_expression_uses_only_exported_metrics(title: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{title}: no metric in {expr}"
    assert names <= EXPORTED, f"{title}: {sorted(names - EXPORTED)} are not exported by rtserver/metrics.py"


def test_panels_the_design_note_asks_for() -> None:
    exprs = {title: [e for t, e in dashboard_expressions(DASHBOARD) if t == title] for title, _ in
             dashboard_expressions(DASHBOARD)}
    assert exprs["Bypass rate"] == ['sum(rate(rtserver_route_decisions_total{decision="bypass"}[1m])) / '
                                    "sum(rate(rtserver_route_decisions_total[1m]))"]
    heatmap = next(p for p in DASHBOARD["panels"] if p["type"] == "heatmap")
    assert "rtserver_turn_seconds_bucket" in heatmap["targets"][0]["expr"]
    for needle in ("rtserver_session_creations_total", "rtserver_context_changes_total", "rtserver_worker_up",
                   "rtserver_ttft_seconds_bucket", "rtserver_token_gap_seconds_bucket",
                   "rtserver_worker_active_sequences"):
        assert any(needle in e for _, e in dashboard_expressions(DASHBOARD)), needle
    assert any("histogram_quantile(0.99, sum by (le) (rate(rtserver_ttft_seconds_bucket" in e
               for _, e in dashboard_expressions(DASHBOARD))


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for p in DASHBOARD["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, p["title"]
        cells |= mine


def test_provisioning_matches_the_dashboard() -> None:
    prov = COMPOSE / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert ds["url"] == "http://prometheus:9090"
    for p in DASHBOARD["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == ds["uid"], p["title"]
    provider = yaml.safe_load((prov / "dashboards" / "rtserver.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert len({p["id"] for p in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])
