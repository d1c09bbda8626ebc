"""Every Prometheus metric rtserver exports, in one place.

Names follow Prometheus conventions; label values come from closed sets only
(decisions, use cases, finish reasons, error codes, configured worker names),
never from user input. Each gateway/worker process owns one ``Metrics`` registry.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_MS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_US_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 5e-3)
_ROUTE_BUCKETS = (1e-5, 5e-5, 1e-4, 5e-4, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1)
_STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("rtserver_connections", "Open WebSocket connections", registry=r,
                                 multiprocess_mode="livesum")
        self.connections_total = Counter(
            "rtserver_connections_opened_total", "WebSocket connections accepted", ["encoding"], registry=r
        )
        self.conversations = Gauge("rtserver_conversations_active", "Sessions live on this gateway", registry=r,
                                   multiprocess_mode="livesum")
        self.messages = Counter("rtserver_messages_total", "User messages accepted", ["encoding"], registry=r)
        self.responses = Counter(
            "rtserver_responses_total", "Responses finished", ["finish_reason"], registry=r
        )
        self.decisions = Counter(
            "rtserver_route_decisions_total", "Routing decisions", ["decision", "use_case"], registry=r
        )
        self.context_changes = Counter(
            "rtserver_context_changes_total", "Messages whose routing signals changed", ["use_case"], registry=r
        )
        self.session_creations = Counter("rtserver_session_creations_total", "Sessions created", registry=r)
        self.resumes = Counter("rtserver_resumes_total", "Sessions resumed", ["result"], registry=r)
        self.replayed_frames = Counter("rtserver_replayed_frames_total", "Frames replayed on resume", registry=r)
        self.route_seconds = Histogram(
            "rtserver_route_seconds", "Time to a routing decision", ["decision"], buckets=_ROUTE_BUCKETS, registry=r
        )
        self.classifier_seconds = Histogram(
            "rtserver_classifier_seconds", "ONNX classifier latency", buckets=_ROUTE_BUCKETS, registry=r
        )
        self.ttft_seconds = Histogram(
            "rtserver_ttft_seconds", "Message received to first token sent",
            ["use_case"], buckets=_MS_BUCKETS, registry=r,
        )
        self.token_gap_seconds = Histogram(
            "rtserver_token_gap_seconds", "Gap between token frames of one response", buckets=_MS_BUCKETS, registry=r
        )
        self.turn_seconds = Histogram(
            "rtserver_turn_seconds", "Message received to done sent", buckets=_MS_BUCKETS + (30.0, 60.0), registry=r
        )
        self.queue_seconds = Histogram(
            "rtserver_queue_seconds", "Time waiting for a worker slot", buckets=_MS_BUCKETS, registry=r
        )
        self.tokens = Counter("rtserver_tokens_total", "Completion tokens streamed", ["model"], registry=r)
        self.errors = Counter("rtserver_errors_total", "Error frames sent", ["code"], registry=r)
        self.closes = Counter("rtserver_closes_total", "Connections closed by the server", ["reason"], registry=r)
        self.outbox_drops = Counter(
            "rtserver_outbox_overflows_total", "Slow consumers whose bounded outbox overflowed", registry=r
        )
        self.coalesced = Counter("rtserver_coalesced_tokens_total", "Token frames merged for a lagging socket",
                                 registry=r)
        self.worker_up = Gauge("rtserver_worker_up", "1 when the worker is connected", ["worker", "model"], registry=r,
                               multiprocess_mode="livemin")
        self.worker_load = Gauge(
            "rtserver_worker_active_sequences", "Sequences generating on the worker", ["worker"], registry=r,
            multiprocess_mode="livemax",
        )
        self.worker_queue = Gauge("rtserver_worker_queue_depth", "Requests waiting on the worker", ["worker"],
                                  registry=r, multiprocess_mode="livemax")
        self.worker_failures = Counter(
            "rtserver_worker_failures_total", "Requests hit by a worker loss", ["stage"], registry=r
        )
        self.store_seconds = Histogram(
            "rtserver_store_seconds", "Session store operation latency", ["op"], buckets=_STORE_BUCKETS, registry=r
        )
        self.store_errors = Counter("rtserver_store_errors_total", "Session store failures", ["op"], registry=r)
        self.store_up = Gauge("rtserver_store_up", "1 when the session store answers", registry=r,
                              multiprocess_mode="livemin")
        self.bypass_seconds = Histogram(
            "rtserver_bypass_decision_seconds", "Time to a bypass decision", buckets=_US_BUCKETS, registry=r
        )
        self.write_frames = Histogram(
            "rtserver_socket_write_frames", "WebSocket frames per socket write (batched writes)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r,
        )

    def render(self) -> bytes:
        """This process's metrics; under ``serve --processes N`` (prometheus-client's multiprocess
        mode, switched on by ``PROMETHEUS_MULTIPROC_DIR``) those of every gateway process of
        the host: counters and histograms summed, gauges as their ``multiprocess_mode`` says."""
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not folder:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        host = CollectorRegistry()
        multiprocess.MultiProcessCollector(host, path=folder)  # type: ignore[no-untyped-call]
        return generate_latest(host)


class WorkerMetrics:
    """What a worker process exports (``rtserver worker --metrics-port N``)."""

    def __init__(self, load: Callable[[], tuple[int, int, int]]) -> None:
        """``load`` returns (active, waiting, capacity) of the engine, read at scrape time."""
        r = self.registry = CollectorRegistry()
        self.requests = Counter("rtserver_worker_requests_total", "Generations finished", ["finish_reason"],
                                registry=r)
        self.rejected = Counter("rtserver_worker_rejected_total", "Generations refused", ["reason"], registry=r)
        self.tokens = Counter("rtserver_worker_tokens_total", "Tokens generated", registry=r)
        self.ttft_seconds = Histogram("rtserver_worker_ttft_seconds", "Request received to first token, in the worker",
                                      buckets=_MS_BUCKETS, registry=r)
        self.queue_seconds = Histogram("rtserver_worker_queue_seconds", "Wait for a sequence slot",
                                       buckets=_MS_BUCKETS, registry=r)
        Gauge("rtserver_worker_engine_active_sequences", "Sequences generating", registry=r).set_function(
            lambda: load()[0])
        Gauge("rtserver_worker_engine_waiting", "Requests waiting for a slot", registry=r).set_function(
            lambda: load()[1])
        Gauge("rtserver_worker_engine_capacity", "Sequence slots", registry=r).set_function(lambda: load()[2])

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose /metrics on ``addr:port`` (a thread; the worker's event loop is not involved)."""
        from prometheus_client import start_http_server

        start_http_server(port, addr=addr, registry=self.registry)


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """Observe ``values`` at once: one increment per touched bucket instead of one lock
    round trip per value (token gaps are summarised per response, off the token path).
    Falls back to plain ``observe`` if prometheus_client's internals ever change."""
    if not values:
        return
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for v in values:
            histogram.observe(v)
        return
    counts = [0] * len(bounds)
    for v in values:
        counts[bisect_left(bounds, v)] += 1
    for i, c in enumerate(counts):
        if c:
            buckets[i].inc(c)
    total.inc(sum(values))


class KvRetentionCollector:
    """KV retention of an engine that keeps conversations' KV between turns (the gpu engine),
    read at scrape time from ``stats()``, which returns an object with ``retained_tokens``,
    ``retained_conversations``, ``hits``, ``misses``, ``evictions`` and ``reused_tokens``."""

    def __init__(self, stats: Callable[[], object]) -> None:
        self._stats = stats

    def collect(self) -> list[object]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self._stats()
        return [
            GaugeMetricFamily("rtserver_worker_kv_retained_tokens", "Tokens of KV kept for conversations between turns",
                              value=getattr(s, "retained_tokens", 0)),
            GaugeMetricFamily("rtserver_worker_kv_retained_conversations", "Conversations whose KV is kept",
                              value=getattr(s, "retained_conversations", 0)),
            CounterMetricFamily("rtserver_worker_kv_hits", "Turns that found their conversation's KV",
                                value=getattr(s, "hits", 0)),
            CounterMetricFamily("rtserver_worker_kv_misses", "Turns with a conversation key but no retained KV",
                                value=getattr(s, "misses", 0)),
            CounterMetricFamily("rtserver_worker_kv_evictions", "Retained KV dropped to make room (LRU)",
                                value=getattr(s, "evictions", 0)),
            CounterMetricFamily("rtserver_worker_kv_reused_tokens", "Prompt tokens served from retained KV",
                                value=getattr(s, "reused_tokens", 0)),
        ]
