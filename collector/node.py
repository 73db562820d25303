"""The collector's logic, free of MQTT: store, match, score, publish metrics.

End of stream: once every house that announced its end has, for every expected
model, the forecast issued after its last reading (or ``drain_s`` seconds passed
without one), the collector writes the summary and publishes final metrics.
Forecasts whose target never arrives are reported as unmatched (target inside the
stream) or pending (target after the last reading), never dropped.
"""

from __future__ import annotations

import logging
import time
from array import array

import numpy as np

from collector.scoring import Conflict, Scoreboard
from collector.store import Store
from wattcast.bus import Bus, Message
from wattcast.messages import MODELS, EndOfStream, Forecast, MessageError, Progress, Reading, Status
from wattcast.node import NodeStats, decode_delivered

log = logging.getLogger(__name__)

#: an idle collector sends its newest progress again after this many seconds, at most this often
PROGRESS_RESEND_S = 0.5
PROGRESS_RESENDS = 3


class CollectorNode:
    def __init__(self, bus: Bus, store: Store, models: tuple[str, ...] = MODELS, window_s: int = 3600,
                 metrics_every: float = 1.0, drain_s: float = 30.0, node: str = "collector") -> None:
        self.bus = bus
        self.store = store
        self.models = tuple(models)
        self.board = Scoreboard(window_s)
        self.metrics_every = metrics_every
        self.drain_s = drain_s
        self.node = node
        self.stats = NodeStats(node)
        self.ends: dict[str, EndOfStream] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.next_metrics = 0.0
        self.last_progress = time.monotonic()
        self.finished = False
        self.missing: list[str] = []
        self.newest: Reading | None = None  # the newest reading stored
        self.complete_sent = -1  # Scoreboard.complete when the last Progress was sent
        #: handling lag of every message (s), for the end-of-run percentiles: 8 bytes each
        self.lags = array("d")
        #: the newest Progress sent, when, and how often it was sent again while idle
        self.progress: Progress | None = None
        self.progress_at = 0.0
        self.progress_resends = 0
        self.started = time.time()
        self.restore()
        store.set_meta("collector", {"models": list(self.models), "window_s": window_s, "started_at": self.started})
        store.commit()

    def restore(self) -> None:
        """Rebuild the scores from a store that already holds part of this run (a restarted collector).

        Matching is order-independent and idempotent, so replaying the stored readings and
        forecasts gives the state the collector had; the broker's persistent session then
        delivers what arrived while it was down.
        """
        db = self.store.db
        readings = db.execute("SELECT house, ts, seq, global_active_power FROM readings ORDER BY house, ts").fetchall()
        for house, ts, seq, value in readings:
            self.board.add_actual(house, ts, value)
            self.board.reading_seqs[house].add(seq)
        rows = db.execute("SELECT house, model, model_version, seq, issued_at, target_ts, value, reading_sent_at "
                          "FROM forecasts ORDER BY house, model, issued_at").fetchall()
        for house, model, version, seq, issued_at, target_ts, value, sent_at in rows:
            if model in self.models:
                self.board.add_forecast(Forecast(house, model, version, seq, issued_at, target_ts, value, sent_at))
        for house, count, last_seq, last_ts in db.execute("SELECT house, readings, last_seq, last_ts FROM ends"):
            self.ends[house] = EndOfStream(house, count, last_seq, last_ts)
        if readings or rows:
            self.stats.counters["restored"] = len(readings) + len(rows)
            log.info("collector: restored %d readings and %d forecasts from %s", len(readings), len(rows),
                     self.store.path)

    # -- messages ------------------------------------------------------------------------
    def handle(self, batch: list[Message]) -> None:
        c = self.stats.counters
        readings, forecasts, matches = [], [], []
        for message in batch:
            c["received"] += 1
            try:
                msg = decode_delivered(message)
            except MessageError as exc:
                self.stats.reject(message.topic, str(exc))
                self.store.add_rejection(message.topic, str(exc), message.payload, message.received_at)
                continue
            if isinstance(msg, Reading):
                try:
                    new = self.board.add_reading(msg)
                except Conflict as exc:
                    self.conflict(message, str(exc))
                    continue
                if new is None:
                    c["duplicates"] += 1
                    continue
                c["readings"] += 1
                readings.append((msg, message.received_at))
                matches += new
                self.dirty.update((m.house, m.model) for m in new)
            elif isinstance(msg, Forecast):
                if msg.model not in self.models:
                    reason = f"forecast of model {msg.model!r}, which this collector does not score"
                    self.stats.reject(message.topic, reason)
                    self.store.add_rejection(message.topic, reason, message.payload, message.received_at)
                    continue
                try:
                    fresh, match = self.board.add_forecast(msg)
                except Conflict as exc:
                    self.conflict(message, str(exc))
                    continue
                if not fresh:
                    c["duplicates"] += 1
                    continue
                c["forecasts"] += 1
                forecasts.append((msg, message.received_at))
                self.dirty.add((msg.house, msg.model))
                if match is not None:
                    matches.append(match)
            elif isinstance(msg, EndOfStream):
                c["ends"] += 1
                self.ends[msg.house] = msg
                self.store.add_end(msg, message.received_at)
                self.finished = False
            elif isinstance(msg, Status):
                self.store.set_node(msg)
        self.store.add_readings(readings)
        self.store.add_forecasts(forecasts)
        self.store.add_matches(matches)
        self.store.commit()  # before the bus acknowledges the batch
        c["matched"] += len(matches)
        complete = self.board.complete(self.models)
        if readings or complete != self.complete_sent:
            # stored: tell a max-speed simulator how far the collector is, and a simulator
            # that lost its broker where to send again from
            newest = readings[-1][0] if readings else self.newest
            self.newest, self.complete_sent = newest, complete
            if newest is not None:
                self.publish_progress(Progress(self.node, newest.house, newest.seq, complete,
                                               len(self.board.reading_seqs)))
        now = time.time()
        self.lags.extend(now - m.received_at for m in batch if m.received_at)
        if readings or forecasts:
            self.last_progress = time.monotonic()

    def conflict(self, message: Message, reason: str) -> None:
        """A second, different message for a key already scored: counted, logged, kept for the report."""
        c = self.stats.counters
        c["conflicts"] += 1
        if c["conflicts"] <= 10 or c["conflicts"] % 1000 == 0:
            log.warning("collector: %s (topic %s; %d conflicts so far)", reason, message.topic, c["conflicts"])
        self.store.add_rejection(message.topic, reason, message.payload, message.received_at)

    def publish_progress(self, progress: Progress) -> None:
        """QoS 0: it only paces.  Lost (a reconnection), the simulator would wait for it in vain:
        :meth:`tick` sends the newest again when the collector idles (at most ``PROGRESS_RESENDS`` times)."""
        self.bus.publish(progress.topic, progress.to_json(), qos=0)
        if progress != self.progress:
            self.progress, self.progress_resends = progress, 0
        self.progress_at = time.monotonic()

    # -- periodic work -------------------------------------------------------------------
    def publish_metrics(self, keys) -> None:
        for house, model in sorted(keys):
            m = self.board.metrics(house, model)
            self.bus.publish(m.topic, m.to_json(), qos=1)
        self.stats.counters["metrics"] += len(keys)

    def complete(self) -> bool:
        """Every announced house has the forecast of its last reading from every model."""
        if not self.ends:
            return False
        houses = set(self.board.actuals) | set(self.ends)
        if not houses <= set(self.ends):
            return False
        return all(self.board.last_forecast_seq.get((h, m), -1) >= self.ends[h].last_seq
                   for h in self.ends for m in self.models)

    def tick(self) -> bool:
        """Publish due metrics; resend the newest progress when idle; finalize at end of stream.

        True once finalized.
        """
        now = time.monotonic()
        if (self.progress is not None and self.progress_resends < PROGRESS_RESENDS
                and now - self.progress_at >= PROGRESS_RESEND_S):
            self.progress_resends += 1
            self.publish_progress(self.progress)
        if self.dirty and now >= self.next_metrics:
            self.publish_metrics(self.dirty)
            self.dirty = set()
            self.next_metrics = now + self.metrics_every
        if self.finished or not self.ends:
            return self.finished
        if self.complete() or now - self.last_progress > self.drain_s:
            if not self.complete():
                log.warning("collector: end of stream without every final forecast after %.0f s; finalizing",
                            self.drain_s)
            self.finalize()
        return self.finished

    def finalize(self) -> None:
        keys = {(h, m) for h in set(self.board.actuals) | set(self.ends) for m in self.models}
        final = [self.board.metrics(h, m) for h, m in sorted(keys)]
        self.store.set_summary(final)
        # what the simulator says it published and this store does not hold: a loss, never silent
        self.missing = self.store.missing(self.models, self.ends)
        for line in self.missing:
            log.error("collector: incomplete: the store lacks %s", line)
        lags = np.frombuffer(self.lags, dtype=np.float64) * 1000.0
        self.store.set_meta("collector_stats", {
            **dict(self.stats.counters),
            "duplicates_total": self.board.duplicates,
            "missing": self.missing,
            "lag_ms_p50": float(np.percentile(lags, 50)) if lags.size else None,
            "lag_ms_p99": float(np.percentile(lags, 99)) if lags.size else None,
            "lag_ms_max": float(lags.max()) if lags.size else None,
            "finished_at": time.time(),
        })
        self.store.commit()
        self.publish_metrics(keys)
        self.dirty = set()
        self.finished = True
        for m in final:
            log.info("collector: %s %-15s n=%d mse=%.4f unmatched=%d pending=%d", m.house, m.model, m.n, m.mse,
                     m.unmatched, m.pending)
