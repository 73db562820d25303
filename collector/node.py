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
from typing import TYPE_CHECKING

import numpy as np

from collector.runs import RunState
from wattcast.bus import Bus, Message
from wattcast.contract import MODELS, EndOfStream, Forecast, MessageError, Progress, Reading, Status, model_name
from wattcast.homeassistant import discovery_messages
from wattcast.node import NodeStats, decode_delivered
from wattcast.scoring import Conflict, Scoreboard
from wattcast.store import Store

if TYPE_CHECKING:
    from collector.prometheus import Exporter

log = logging.getLogger(__name__)

__all__ = ["CollectorNode", "RunState"]

#: an idle collector sends its newest progress again after this many seconds, at most this often
PROGRESS_RESEND_S = 0.5
PROGRESS_RESENDS = 3


class CollectorNode:
    """Scores every run it receives, each apart (:class:`RunState`), in one store.

    A run's end of stream is scored once every house has every model's last forecast
    (or ``drain_s`` passed without news).  With ``--exit-on-end`` the process ends once
    every run that sent anything since it started is scored: a run the store already
    holds as finished is not scored again, so a restarted collector waits for the next
    replay instead of exiting at once.
    """

    def __init__(
        self,
        bus: Bus,
        store: Store,
        models: tuple[str, ...] = MODELS,
        window_s: int = 3600,
        metrics_every: float = 1.0,
        drain_s: float = 30.0,
        node: str = "collector",
        exporter: Exporter | None = None,
        ha_prefix: str | None = None,
        sharded: bool = False,
    ) -> None:
        self.bus = bus
        #: one of several collectors, each scoring the houses of its shards (see :meth:`owns`)
        self.sharded = sharded
        self.reconnects_seen = 0
        #: Home Assistant discovery prefix (--ha-discovery): sensors announced per house, on its first reading
        self.ha_prefix = ha_prefix
        self.ha_announced: set[str] = set()
        #: the scores for Prometheus (--prometheus-port), if served
        self.exporter = exporter
        self.store = store
        self.models = tuple(model_name(m) for m in models)
        self.window_s = window_s
        self.metrics_every = metrics_every
        self.drain_s = drain_s
        self.node = node
        self.stats = NodeStats(node)
        self.runs: dict[str, RunState] = {}
        #: the runs scored since the start: what each lacks, and its conflicts
        self.scored: dict[str, list[str]] = {}
        self.conflicts: dict[str, int] = {}
        self.dirty: set[tuple[str, str, str]] = set()  # (run, house, model)
        self.next_metrics = 0.0
        #: handling lag of every message (s), for the end-of-run percentiles: 8 bytes each
        self.lags = array("d")
        #: the newest Progress sent, when, and how often it was sent again while idle
        self.progress: Progress | None = None
        self.progress_at = 0.0
        self.progress_resends = 0
        self.started = time.time()
        for run in [] if sharded else store.unfinished_runs():  # a restarted collector goes on with what it scored
            self.run_state(run)
        store.set_meta("collector", {"models": list(self.models), "window_s": window_s, "started_at": self.started})
        store.commit()

    # -- runs ----------------------------------------------------------------------------
    def run_state(self, run: str) -> RunState:
        """The state of ``run``: known, restored from the store, or new.  Finished runs nobody
        writes to any more are let go first (the store has them; a late message restores them)."""
        state = self.runs.get(run)
        if state is not None:
            return state
        for old in [r for r, st in self.runs.items() if st.finished]:
            del self.runs[old]
            if self.exporter is not None:
                self.exporter.forget(old)
        state = self.runs[run] = RunState(run, self.window_s)
        rows = 0 if self.sharded else state.restore(self.store, self.models)  # sharded: shard by shard (owns)
        if rows:
            self.stats.counters["restored"] += rows
            log.info("collector: restored %d readings and forecasts of run %s from %s", rows, run, self.store.shown)
        else:
            log.info("collector: run %s started", run)
        return state  # the store notes the run with its first row

    @property
    def board(self) -> Scoreboard:
        """The scoreboard of the run seen last (for a look at one run; tests)."""
        return next(reversed(self.runs.values())).board

    @property
    def finished(self) -> bool:
        """A run was scored since the collector started, and every run that sent anything since is."""
        return bool(self.scored) and all(st.finished for st in self.runs.values() if st.active)

    @property
    def missing(self) -> list[str]:
        """What the runs scored since the start lack, one line per house and model (prefixed by the
        run when several were scored)."""
        if len(self.scored) == 1:
            return list(next(iter(self.scored.values())))
        return [f"run {run}: {line}" for run, lines in self.scored.items() for line in lines]

    @property
    def failed(self) -> list[str]:
        """Why the runs scored since the start cannot be trusted: what they lack, and conflicts."""
        return self.missing + [f"run {run}: {n} conflicting messages (rejections)" for run, n in self.conflicts.items() if n]

    # -- messages ------------------------------------------------------------------------
    def handle(self, batch: list[Message]) -> None:
        c = self.stats.counters
        readings: list[tuple[Reading, float]] = []
        forecasts: list[tuple[Forecast, float]] = []
        matches: dict[str, list] = {}
        touched: dict[str, RunState] = {}  # the runs of this batch
        advanced: set[str] = set()  # ... that got a new reading or forecast
        fresh_readings: set[str] = set()  # ... that got a new reading
        new_shards: list[tuple[str, str, int]] = []
        if self.sharded and self.bus.reconnects != self.reconnects_seen:
            # a lost connection may have lost shards to another collector meanwhile: read them again
            self.reconnects_seen = self.bus.reconnects
            for st in self.runs.values():
                st.restored_shards.clear()
        for message in batch:
            c["received"] += 1
            try:
                msg = decode_delivered(message)
            except MessageError as exc:
                self.stats.reject(message.topic, str(exc))
                self.store.add_rejection(message.topic, str(exc), message.payload, message.received_at)
                continue
            if isinstance(msg, Status):
                self.store.set_node(msg)
                if self.exporter is not None:
                    self.exporter.status(msg)
                continue
            if not isinstance(msg, Reading | Forecast | EndOfStream):
                continue
            if isinstance(msg, Forecast) and msg.model not in self.models:
                reason = f"forecast of model {msg.model!r}, which this collector does not score"
                self.stats.reject(message.topic, reason)
                self.store.add_rejection(message.topic, reason, message.payload, message.received_at, msg.run)
                continue
            st = touched.get(msg.run) or self.run_state(msg.run)
            touched[msg.run] = st
            if message.shard is not None and not self.owns(st, msg, message.shard, new_shards):
                c["ends_elsewhere"] += 1  # the end of a house of another shard (ends go to every shard)
                continue
            st.active = True
            if isinstance(msg, Reading):
                try:
                    new = st.board.add_reading(msg)
                except Conflict as exc:
                    self.conflict(st, message, str(exc))
                    continue
                if new is None:
                    c["duplicates"] += 1
                    continue
                c["readings"] += 1
                readings.append((msg, message.received_at))
                if self.ha_prefix is not None and msg.house not in self.ha_announced:
                    self.announce(msg.house)
                st.newest = msg
                advanced.add(msg.run)
                fresh_readings.add(msg.run)
                matches.setdefault(msg.run, []).extend(new)
                self.dirty.update((msg.run, m.house, m.model) for m in new)
            elif isinstance(msg, Forecast):
                try:
                    fresh, match = st.board.add_forecast(msg)
                except Conflict as exc:
                    self.conflict(st, message, str(exc))
                    continue
                if not fresh:
                    c["duplicates"] += 1
                    continue
                c["forecasts"] += 1
                forecasts.append((msg, message.received_at))
                if self.exporter is not None:
                    self.exporter.forecast(msg, message.received_at)
                self.dirty.add((msg.run, msg.house, msg.model))
                advanced.add(msg.run)
                if match is not None:
                    matches.setdefault(msg.run, []).append(match)
            else:
                c["ends"] += 1
                st.ends[msg.house] = msg
                self.store.add_end(msg, message.received_at)
                st.finished = False
        self.store.add_house_shards(new_shards)
        self.store.add_readings(readings)
        self.store.add_forecasts(forecasts)
        for run, done in matches.items():
            self.store.add_matches(run, done)
            c["matched"] += len(done)
        self.store.commit()  # before the bus acknowledges the batch
        moment = time.monotonic()
        for run, st in touched.items():
            complete = st.board.complete(self.models)
            if st.newest is not None and (run in fresh_readings or complete != st.complete_sent):
                # stored: tell a max-speed simulator how far the collector is, and a simulator
                # that lost its broker where to send again from
                st.complete_sent = complete
                self.publish_progress(
                    Progress(self.node, st.newest.house, st.newest.seq, complete, len(st.board.reading_seqs), run=run)
                )
            if run in advanced:
                st.last_progress = moment
                st.finished = False  # scored already: something new arrived late, score it again
        now = time.time()
        self.lags.extend(now - m.received_at for m in batch if m.received_at)

    def owns(self, st: RunState, msg: Reading | Forecast | EndOfStream, shard: int, new: list) -> bool:
        """Sharded: whether ``msg`` is of a house scored here.  A reading or forecast is (its shard queue
        holds its house's); an end of stream, which goes to every shard, only for a house of ``shard``.
        A shard's first message here (this collector took it over) restores its houses from the store."""
        if shard not in st.restored_shards:
            self.stats.counters["restored"] += st.restore_shard(self.store, self.models, shard)
        if isinstance(msg, EndOfStream):
            return st.shard_of.get(msg.house) == shard
        if msg.house not in st.shard_of:
            st.shard_of[msg.house] = shard
            new.append((st.run, msg.house, shard))
        return True

    def announce(self, house: str) -> None:
        """Home Assistant discovery configs of ``house``'s sensors (retained; see wattcast.homeassistant)."""
        assert self.ha_prefix is not None
        for topic, payload in discovery_messages(self.ha_prefix, house, self.models):
            self.bus.publish(topic, payload, qos=1, retain=True)
        self.ha_announced.add(house)
        self.stats.counters["ha_discovery"] += 1

    def conflict(self, st: RunState, message: Message, reason: str) -> None:
        """A second, different message for a key already scored: counted, logged, kept for the report."""
        c = self.stats.counters
        c["conflicts"] += 1
        st.conflicts += 1
        if c["conflicts"] <= 10 or c["conflicts"] % 1000 == 0:
            log.warning(
                "collector: run %s: %s (topic %s; %d conflicts so far)", st.run, reason, message.topic, c["conflicts"]
            )
        self.store.add_rejection(message.topic, reason, message.payload, message.received_at, st.run)

    def publish_progress(self, progress: Progress) -> None:
        """QoS 0: it only paces.  Lost (a reconnection), the simulator would wait for it in vain:
        :meth:`tick` sends the newest again when the collector idles (at most ``PROGRESS_RESENDS`` times)."""
        self.bus.publish(progress.topic, progress.to_json(), qos=0)
        if progress != self.progress:
            self.progress, self.progress_resends = progress, 0
        self.progress_at = time.monotonic()

    # -- periodic work -------------------------------------------------------------------
    def publish_metrics(self, keys) -> None:
        for run, house, model in sorted(keys):
            st = self.runs.get(run)
            if st is None:
                continue  # let go (finished) since
            m = st.board.metrics(house, model)
            self.bus.publish(m.topic, m.to_json(), qos=1)
            if self.exporter is not None:
                self.exporter.metrics(m)
        self.stats.counters["metrics"] += len(keys)

    def tick(self) -> bool:
        """Publish due metrics; resend the newest progress when idle; score every run whose stream ended.

        True once every run that sent anything since the start is scored (:attr:`finished`).
        """
        now = time.monotonic()
        if (
            self.progress is not None
            and self.progress_resends < PROGRESS_RESENDS
            and now - self.progress_at >= PROGRESS_RESEND_S
        ):
            self.progress_resends += 1
            self.publish_progress(self.progress)
        if self.dirty and now >= self.next_metrics:
            self.publish_metrics(self.dirty)
            self.dirty = set()
            self.next_metrics = now + self.metrics_every
        for st in list(self.runs.values()):
            if st.finished or not st.ends:
                continue
            if st.ended(self.models) or now - st.last_progress > self.drain_s:
                if not st.ended(self.models):
                    log.warning(
                        "collector: run %s: end of stream without every final forecast after %.0f s; finalizing",
                        st.run,
                        self.drain_s,
                    )
                self.finalize(st)
        return self.finished

    def finalize(self, st: RunState) -> None:
        keys = {(h, m) for h in set(st.board.actuals) | set(st.ends) for m in self.models}
        final = [st.board.metrics(h, m) for h, m in sorted(keys)]
        self.store.set_summary(final)
        # what the simulator says it published and this store does not hold: a loss, never silent
        st.missing = self.store.missing(st.run, self.models, st.ends, set(st.shard_of) if self.sharded else None)
        for line in st.missing:
            log.error("collector: run %s incomplete: the store lacks %s", st.run, line)
        lags = np.frombuffer(self.lags, dtype=np.float64) * 1000.0
        stats = {
            **dict(self.stats.counters),  # the process's, since it started
            "run": st.run,
            "conflicts": st.conflicts,
            "duplicates_total": st.board.duplicates,
            "missing": st.missing,
            "lag_ms_p50": float(np.percentile(lags, 50)) if lags.size else None,
            "lag_ms_p99": float(np.percentile(lags, 99)) if lags.size else None,
            "lag_ms_max": float(lags.max()) if lags.size else None,
            "finished_at": time.time(),
        }
        # the final metrics (MQTT, /metrics) before the store says finished: whoever sees it finished
        # finds the same figures everywhere (a scrape right after read none under load, in CI once)
        self.publish_metrics({(st.run, h, m) for h, m in keys})
        self.store.finish_run(st.run, stats)
        self.store.set_meta("collector_stats", stats)  # of the run finished last
        self.store.commit()
        self.dirty = {k for k in self.dirty if k[0] != st.run}
        st.finished = True
        self.scored[st.run], self.conflicts[st.run] = list(st.missing), st.conflicts
        for m in final:
            log.info(
                "collector: %s %-15s n=%d mse=%.4f unmatched=%d pending=%d (run %s)",
                m.house,
                m.model,
                m.n,
                m.mse,
                m.unmatched,
                m.pending,
                st.run,
            )
