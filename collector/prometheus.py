"""The collector's scores and the nodes' counters for Prometheus (``--prometheus-port``).

Served by prometheus-client's own HTTP server (a thread of the collector) at
``http://<host>:<port>/metrics``.  The collector's thread updates the values when it
publishes metrics (:meth:`Exporter.metrics`), observes each forecast's latency as it
stores it, and copies the counters of every node's status; the server thread only
reads them.  Per (run, house, model): ``wattcast_scored_forecasts``, ``wattcast_mse_kw2``,
``wattcast_rolling_mse_kw2``, ``wattcast_unmatched_forecasts``, ``wattcast_pending_forecasts``;
per model the histogram ``wattcast_forecast_latency_seconds`` (reading sent to forecast
stored); per node ``wattcast_node_up`` and ``wattcast_node_counter``.  A run the collector
lets go (finished, then idle) drops out of the series.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server

from wattcast.contract import Forecast, Metrics, Status

#: forecast latency buckets (s): a few ms at max speed on one machine up to a slow broker
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCORE = ("run", "house", "model")


class Exporter:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.n = Gauge("wattcast_scored_forecasts", "forecasts matched to their actual reading", SCORE, registry=r)
        self.mse = Gauge("wattcast_mse_kw2", "cumulative mean squared error of the forecasts (kW^2)", SCORE, registry=r)
        self.rolling = Gauge(
            "wattcast_rolling_mse_kw2", "mean squared error over the rolling window of event time (kW^2)", SCORE, registry=r
        )
        self.unmatched = Gauge(
            "wattcast_unmatched_forecasts", "forecasts whose target minute has passed without a reading", SCORE, registry=r
        )
        self.pending = Gauge("wattcast_pending_forecasts", "forecasts whose target minute is still ahead", SCORE, registry=r)
        self.latency = Histogram(
            "wattcast_forecast_latency_seconds",
            "from the reading sent by the simulator to its forecast stored by the collector",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.up = Gauge("wattcast_node_up", "1 if the node's newest status is online", ("node", "role"), registry=r)
        self.counter = Gauge(
            "wattcast_node_counter", "a counter of the node's newest status", ("node", "counter"), registry=r
        )
        self._latency_of: dict[str, Any] = {}
        self._runs: dict[str, set[tuple[str, str]]] = {}
        self.server: Any = None

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the HTTP server (port 0: a free one); the port it listens on."""
        started = start_http_server(port, host, registry=self.registry)
        self.server = started[0] if isinstance(started, tuple) else None
        return int(self.server.server_port) if self.server is not None else port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def metrics(self, m: Metrics) -> None:
        labels = (m.run, m.house, m.model)
        self._runs.setdefault(m.run, set()).add((m.house, m.model))
        self.n.labels(*labels).set(m.n)
        self.mse.labels(*labels).set(m.mse)
        self.rolling.labels(*labels).set(m.rolling_mse)
        self.unmatched.labels(*labels).set(m.unmatched)
        self.pending.labels(*labels).set(m.pending)

    def forecast(self, f: Forecast, received_at: float) -> None:
        if f.reading_sent_at is None or not received_at:
            return
        child = self._latency_of.get(f.model)
        if child is None:
            child = self._latency_of[f.model] = self.latency.labels(f.model)
        child.observe(max(0.0, received_at - f.reading_sent_at))

    def status(self, s: Status) -> None:
        self.up.labels(s.node, s.role).set(1 if s.state == "online" else 0)
        for name, value in (s.counters or {}).items():
            self.counter.labels(s.node, name).set(value)

    def forget(self, run: str) -> None:
        """Drop a run's series (the collector let it go)."""
        for house, model in self._runs.pop(run, ()):
            for gauge in (self.n, self.mse, self.rolling, self.unmatched, self.pending):
                gauge.remove(run, house, model)
