"""What the dashboard knows: everything it shows, built from the contract's messages.

:class:`DashboardState` takes decoded messages (from the MQTT thread of
:mod:`wattcast.dashboard.follow`) and hands out JSON-ready snapshots (to the web
server's threads); one lock guards both.  It keeps:

- per model, through :class:`~wattcast.live.LiveTable`, the newest metrics of every
  house pooled over the houses (n, cumulative and rolling MSE, forecasts/s, unmatched,
  pending), the nodes' statuses and the replay's progress;
- per model, the history of its pooled cumulative and rolling MSE over meter time
  (a point whenever the newest scored minute moves; thinned to at most ``history_points``);
- per house, the last ``keep_minutes`` of actual GAP and of every model's forecast,
  keyed by the target minute, so that a forecast and the reading it was for line up;
- per model, the latency of its recent forecasts (reading sent -> forecast received);
- the connection to the broker (connected, reconnects), shown on the page.

Like the live table it follows the newest run: a new run id starts it afresh.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from statistics import median
from typing import Any

from wattcast.contract import Forecast, Metrics, Progress, Reading, Status
from wattcast.live import LiveTable

#: the baseline that skill is measured against
BASELINE = "persistence"


class DashboardState:
    def __init__(
        self,
        keep_minutes: int = 180,
        history_points: int = 1500,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.keep_s = 60 * keep_minutes
        self.history_points = history_points
        self.clock, self.wall = clock, wall
        self._lock = threading.Lock()
        self.table = LiveTable(clock=clock, wall=wall)
        self.version = 0  # +1 on every change: the server sends a snapshot only when it moved
        self.broker: dict[str, Any] = {"url": None, "connected": False, "reconnects": 0, "since": None}
        self.rejected = 0
        self.sampled = False  # readings and forecasts sampled (too fast to follow: feed.py)
        #: nodes whose status came live (not retained): a node that says online only at its start (the
        #: simulator) is online until its offline or last will, not stale after FRESH_STATUS_S
        self.heard: set[str] = set()
        self.planned = 0  # readings the simulator sends in all (its status counter ``planned``)
        self.houses_total = 1
        self._reset_run()

    def _reset_run(self) -> None:
        #: meter time of each history point, and per model its (cumulative, rolling) MSE at that point
        self.history_t: list[int] = []
        self.history: dict[str, tuple[list[float | None], list[float | None]]] = {}
        #: house -> {target minute (unix s) -> actual GAP}; house -> model -> {target minute -> forecast}
        self.actual: dict[str, dict[int, float]] = {}
        self.forecasts: dict[str, dict[str, dict[int, float]]] = {}
        self.newest_ts: dict[str, int] = {}
        self.latency: dict[str, deque[float]] = {}

    # -- updates (the MQTT thread) -----------------------------------------------------
    def connection(self, url: str, connected: bool, reconnects: int) -> None:
        with self._lock:
            was = self.broker["connected"]
            if was != connected or self.broker["url"] != url or self.broker["reconnects"] != reconnects:
                self.broker = {"url": url, "connected": connected, "reconnects": reconnects, "since": self.wall()}
                self.version += 1

    def reject(self) -> None:
        with self._lock:
            self.rejected += 1

    def take(self, msg: object, received_at: float = 0.0, retained: bool = False) -> None:
        """One decoded message of any kind (others are ignored); ``retained``: the broker kept it."""
        with self._lock:
            if isinstance(msg, Metrics):
                self._metrics(msg)
            elif isinstance(msg, Reading):
                if self._current(msg.run):
                    self._reading(msg)
            elif isinstance(msg, Forecast):
                if self._current(msg.run):
                    self._forecast(msg, received_at)
            elif isinstance(msg, Status):
                self.table.update_status(msg.after(self.table.nodes.get(msg.node)))
                if not retained:  # said while we listen: its node was there, whatever the status's age
                    self.heard.add(msg.node)
                if msg.role == "simulator" and msg.counters and msg.counters.get("planned"):
                    self.planned = int(msg.counters["planned"])
            elif isinstance(msg, Progress):
                if self._current(msg.run):
                    self._progress(msg)
            else:
                return
            self.version += 1

    def _current(self, run: str) -> bool:
        """Is ``run`` the one shown?  A reading of a newer run than the metrics' starts it."""
        before = self.table.run
        if not self.table.follow(run):
            return False
        if self.table.run != before:
            self._reset_run()
        return True

    def _metrics(self, m: Metrics) -> None:
        before = self.table.run
        if not self.table.update(m):
            return
        if self.table.run != before:
            self._reset_run()
        as_of = self.table.as_of()
        if as_of is None:
            return
        lines = {x.model: x for x in self.table.lines()}
        if self.history_t and self.history_t[-1] == as_of:
            for model, x in lines.items():  # the same minute: its newest figures
                if model in self.history:
                    self.history[model][0][-1], self.history[model][1][-1] = x.mse, x.rolling_mse
            return
        self.history_t.append(as_of)
        earlier = len(self.history_t) - 1  # a model first seen now has no points before
        for model, x in lines.items():
            none: list[float | None] = [None] * earlier
            cum, roll = self.history.setdefault(model, (none, list(none)))
            cum.append(x.mse)
            roll.append(x.rolling_mse)
        for cum, roll in self.history.values():
            if len(cum) < len(self.history_t):
                cum.append(None)
                roll.append(None)
        if len(self.history_t) > self.history_points:  # every other point (keep the newest)
            keep = slice(len(self.history_t) % 2 ^ 1, None, 2)
            self.history_t = self.history_t[keep]
            self.history = {m: (c[keep], r[keep]) for m, (c, r) in self.history.items()}

    def _reading(self, r: Reading) -> None:
        series = self.actual.setdefault(r.house, {})
        series[r.ts] = r.global_active_power
        newest = self.newest_ts[r.house] = max(r.ts, self.newest_ts.get(r.house, r.ts))
        cutoff = newest - self.keep_s
        if len(series) > self.keep_s // 60 + 16:
            for ts in [ts for ts in series if ts < cutoff]:
                del series[ts]
            for by_target in self.forecasts.get(r.house, {}).values():
                for ts in [ts for ts in by_target if ts < cutoff]:
                    del by_target[ts]

    def _forecast(self, f: Forecast, received_at: float) -> None:
        self.forecasts.setdefault(f.house, {}).setdefault(f.model, {})[f.target_ts] = f.value
        self.newest_ts.setdefault(f.house, f.issued_at)
        if f.reading_sent_at is not None and received_at:
            recent = self.latency.setdefault(f.model, deque(maxlen=200))
            recent.append(max(0.0, received_at - f.reading_sent_at))

    def _progress(self, p: Progress) -> None:
        if p.houses:
            self.houses_total = p.houses
        if self.planned:
            self.table.progress_of(p.house, p.seq, self.houses_total, self.planned)

    # -- snapshots (the web server's threads) -----------------------------------------
    def houses(self) -> list[str]:
        with self._lock:
            return self._houses()

    def _houses(self) -> list[str]:
        return sorted({h for h, _ in self.table.metrics} | set(self.actual) | set(self.forecasts))

    def snapshot(self, house: str | None = None, window_minutes: int = 120) -> dict[str, Any]:
        """Everything the page shows, for ``house`` (default: the first one), as JSON-ready data."""
        with self._lock:
            now = self.clock()
            lines = self.table.lines(now)
            latency = {m: round(1000 * median(v), 1) for m, v in self.latency.items() if v}
            base = next((x.mse for x in lines if x.model == BASELINE), None)
            models = [
                {
                    "model": x.model,
                    "houses": x.houses,
                    "n": x.n,
                    "mse": x.mse,
                    "rolling_mse": x.rolling_mse,
                    "skill": 1 - x.mse / base if base and x.mse is not None else None,
                    "rate": round(x.rate, 2),
                    "unmatched": x.unmatched,
                    "pending": x.pending,
                    "window_s": x.window_s,
                    "latency_ms": latency.get(x.model),
                }
                for x in lines
            ]
            houses = self._houses()
            if house not in houses:
                house = houses[0] if houses else None
            return {
                "version": self.version,
                "broker": dict(self.broker),
                "run": self.table.run,
                "as_of": self.table.as_of(),
                "progress": self._progress_json(now),
                "models": models,
                "history": {
                    "t": list(self.history_t),
                    "mse": {m: list(c) for m, (c, _) in self.history.items()},
                    "rolling_mse": {m: list(r) for m, (_, r) in self.history.items()},
                },
                "houses": houses,
                "house": self._house_json(house, window_minutes) if house else None,
                "nodes": self._nodes_json(latency),
                "rejected": self.rejected,
                "sampled": self.sampled,
            }

    def _progress_json(self, now: float) -> dict[str, Any] | None:
        t = self.table
        if t.done is None or not t.total:
            return None
        return {"done": t.done, "total": t.total, "text": t.progress_text(now)}

    def _house_json(self, house: str, window_minutes: int) -> dict[str, Any]:
        actual = self.actual.get(house, {})
        forecasts = self.forecasts.get(house, {})
        newest = self.newest_ts.get(house)
        if newest is None:
            return {"id": house, "t": [], "actual": [], "forecasts": {}}
        start = newest - 60 * window_minutes
        targets = sorted({ts for ts in actual if ts >= start} | {ts for f in forecasts.values() for ts in f if ts >= start})
        return {
            "id": house,
            "t": targets,
            "actual": [actual.get(ts) for ts in targets],
            "forecasts": {m: [f.get(ts) for ts in targets] for m, f in sorted(forecasts.items())},
        }

    def _nodes_json(self, latency: dict[str, float]) -> list[dict[str, Any]]:
        return [
            {
                "node": name,
                "role": s.role,
                "model": s.model,
                "state": self.table.node_state(name, heard=name in self.heard),
                "age_s": round(self.wall() - s.ts, 1) if s.ts else None,
                "counters": dict(s.counters or {}),
                "latency_ms": latency.get(s.model) if s.model else None,
            }
            for name, s in sorted(self.table.nodes.items())
        ]
