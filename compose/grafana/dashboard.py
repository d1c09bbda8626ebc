"""Writes compose/grafana/dashboards/rtserver.json, the provisioned Grafana dashboard.

Edit the panels here, then run ``python compose/grafana/dashboard.py``; a unit test checks
the committed JSON is this script's output, and tests/integration/test_dashboard_promql.py
evaluates every expression against a real Prometheus scraping a live gateway.

An expression may end in ``or on() vector(0)`` only when its metric appears after a rare
event (a worker loss, a store failure); the tests still check that its metric is exported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "rtserver.json"
DS = {"type": "prometheus", "uid": "prometheus"}


def q(quantile: float, metric: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({quantile}, sum by ({labels}) (rate({metric}_bucket[5m])))"


def pcts(metric: str, by: str = "") -> list[tuple[str, str]]:
    suffix = f" {{{{{by}}}}}" if by else ""
    return [(q(p, metric, by), f"p{round(p * 100)}{suffix}") for p in (0.5, 0.95, 0.99)]


# (row title, [(panel title, kind, unit, description, [(expr, legend), ...]), ...])
ROWS: list[tuple[str, list[tuple[str, str, str, str, list[tuple[str, str]]]]]] = [
    ("Traffic", [
        ("Open WebSocket connections", "stat", "none", "Sockets open on all gateways.",
         [("sum(rtserver_connections)", "connections")]),
        ("Active conversations", "stat", "none", "Sessions live on a gateway (attached or in their resume grace).",
         [("sum(rtserver_conversations_active)", "conversations")]),
        ("Gateways up", "stat", "none", "Gateways answering Prometheus scrapes.",
         [('sum(up{job="rtserver-gateway"})', "gateways")]),
        ("Messages per second", "timeseries", "reqps", "User messages accepted, by encoding.",
         [("sum by (encoding) (rate(rtserver_messages_total[1m]))", "{{encoding}}")]),
        ("Session creation rate", "timeseries", "ops", "New sessions per second (a resume is not a creation).",
         [("sum(rate(rtserver_session_creations_total[1m]))", "created/s"),
          ("sum by (encoding) (rate(rtserver_connections_opened_total[1m]))", "sockets opened/s {{encoding}}")]),
        ("Resumes", "timeseries", "ops", "Resumes by result, and frames replayed to resuming clients.",
         [("sum by (result) (rate(rtserver_resumes_total[5m]))", "resume {{result}}"),
          ("sum(rate(rtserver_replayed_frames_total[5m]))", "replayed frames/s")]),
    ]),
    ("Routing", [
        ("Bypass rate", "timeseries", "percentunit",
         "Share of messages that skipped the classifier (smart bypass).",
         [('sum(rate(rtserver_route_decisions_total{decision="bypass"}[1m])) / '
           "sum(rate(rtserver_route_decisions_total[1m]))", "bypass rate")]),
        ("Routing decisions", "timeseries", "ops", "Decisions per second: full, bypass, reroute.",
         [("sum by (decision) (rate(rtserver_route_decisions_total[1m]))", "{{decision}}")]),
        ("Context change frequency", "timeseries", "percentunit",
         "Share of messages whose routing signals fell outside the conversation's route basis.",
         [("sum(rate(rtserver_context_changes_total[5m])) / sum(rate(rtserver_messages_total[5m]))", "all"),
          ("sum by (use_case) (rate(rtserver_context_changes_total[5m])) / scalar(sum(rate(rtserver_messages_total[5m])))",
           "{{use_case}}")]),
        ("Routing latency by decision", "timeseries", "s", "Time to a routing decision.",
         [(q(0.5, "rtserver_route_seconds", "decision"), "p50 {{decision}}"),
          (q(0.99, "rtserver_route_seconds", "decision"), "p99 {{decision}}")]),
        ("Bypass and classifier latency", "timeseries", "s",
         "The bypass check (microseconds) and the ONNX classifier when it runs.",
         [(q(0.99, "rtserver_bypass_decision_seconds"), "bypass p99"),
          (q(0.5, "rtserver_classifier_seconds"), "classifier p50"),
          (q(0.99, "rtserver_classifier_seconds"), "classifier p99")]),
    ]),
    ("Latency", [
        ("Request latency distribution (message to done)", "heatmap", "s",
         "End-to-end turn time: message received to done sent.",
         [("sum by (le) (increase(rtserver_turn_seconds_bucket[1m]))", "{{le}}")]),
        ("Time to first token", "timeseries", "s", "Message received to first token sent.",
         pcts("rtserver_ttft_seconds")),
        ("Inter-token gap", "timeseries", "s", "Gap between token frames of one response.",
         pcts("rtserver_token_gap_seconds")),
        ("End-to-end turn time", "timeseries", "s", "Message received to done sent.",
         pcts("rtserver_turn_seconds")),
        ("Time to first token p95 by use case", "timeseries", "s", "TTFT per routed use case.",
         [(q(0.95, "rtserver_ttft_seconds", "use_case"), "{{use_case}}")]),
        ("Wait for a worker slot", "timeseries", "s", "Gateway plus worker queueing before the first token.",
         pcts("rtserver_queue_seconds")),
    ]),
    ("Model endpoints", [
        ("Model endpoint health", "stat", "none",
         "1: the worker is connected to every gateway; 0: at least one gateway lost it.",
         [("min by (worker, model) (rtserver_worker_up)", "{{worker}} {{model}}")]),
        ("Per-worker load", "timeseries", "none", "Sequences generating on each worker (as its gateways see it).",
         [("max by (worker) (rtserver_worker_active_sequences)", "{{worker}}")]),
        ("Worker queue depth", "timeseries", "none", "Requests waiting beyond a worker's capacity.",
         [("max by (worker) (rtserver_worker_queue_depth)", "{{worker}}")]),
        ("Tokens per second by model", "timeseries", "none", "Completion tokens streamed.",
         [("sum by (model) (rate(rtserver_tokens_total[1m]))", "{{model}}")]),
        ("Worker losses", "timeseries", "ops", "Requests hit by a worker loss, before or after their first token.",
         [("sum by (stage) (rate(rtserver_worker_failures_total[5m])) or on() vector(0)", "{{stage}}")]),
        ("Responses by finish reason", "timeseries", "ops", "stop, length, cancelled, error.",
         [("sum by (finish_reason) (rate(rtserver_responses_total[1m]))", "{{finish_reason}}")]),
    ]),
    ("Errors and backpressure", [
        ("Errors by code", "timeseries", "ops", "Error frames sent, by wire code.",
         [("sum by (code) (rate(rtserver_errors_total[5m]))", "{{code}}")]),
        ("Server closes by reason", "timeseries", "ops", "Sockets the server closed, by close code name.",
         [("sum by (reason) (rate(rtserver_closes_total[5m]))", "{{reason}}")]),
        ("Slow clients", "timeseries", "ops",
         "Outbox overflows (socket closed with 4008) and token frames merged for lagging sockets.",
         [("sum(rate(rtserver_outbox_overflows_total[5m]))", "outbox overflows/s"),
          ("sum(rate(rtserver_coalesced_tokens_total[5m]))", "coalesced tokens/s")]),
    ]),
    ("Session store (Redis)", [
        ("Session store up", "stat", "none", "1 when every gateway's store answers.",
         [("min(rtserver_store_up)", "store up")]),
        ("Session store latency", "timeseries", "s", "Store operations, by op.",
         [(q(0.5, "rtserver_store_seconds", "op"), "p50 {{op}}"),
          (q(0.99, "rtserver_store_seconds", "op"), "p99 {{op}}")]),
        ("Session store errors", "timeseries", "ops", "Failed store operations, by op.",
         [("sum by (op) (rate(rtserver_store_errors_total[5m])) or on() vector(0)", "{{op}}")]),
    ]),
]


def panel(pid: int, x: int, y: int, title: str, kind: str, unit: str, desc: str,
          targets: list[tuple[str, str]]) -> dict[str, Any]:
    width = 8
    p: dict[str, Any] = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"h": 8, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend,
             **({"format": "heatmap"} if kind == "heatmap" else {})}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if kind == "heatmap":
        p["options"] = {"calculate": False, "yAxis": {"unit": unit}, "cellGap": 1}
    elif kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area"}
    else:
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                        "tooltip": {"mode": "multi"}}
    return p


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row_title, row_panels in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid += 1
        y += 1
        for i, spec in enumerate(row_panels):
            panels.append(panel(pid, (i % 3) * 8, y + (i // 3) * 8, *spec))
            pid += 1
        y += ((len(row_panels) + 2) // 3) * 8
    return {
        "uid": "rtserver",
        "title": "rtserver",
        "description": "Realtime conversation server: traffic, routing, latency, model endpoints, store.",
        "tags": ["rtserver"],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
