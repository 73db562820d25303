"""Replay the validation split as one or many live meters.

House ``k`` of ``N`` replays the split rotated by ``k * len / N`` readings, so that the
houses differ; house ``h000`` is the split exactly as it is.  The other houses'
readings are re-stamped as consecutive minutes from the split's first minute, so
every house covers the same event-time window, like meters that run side by side.
Minute by minute, one reading of every house is published.

Pacing: ``speed`` readings-minutes per wall minute (1 = real time); ``None`` = as fast
as flow control allows.  Two levels of flow control:

* the MQTT bus blocks while too many QoS 1 publishes wait for the broker's
  acknowledgement (the broker is never flooded);
* with ``await_models`` and ``await_nodes``, the simulator follows those nodes'
  :class:`~wattcast.contract.Progress` (the collector's: the newest reading it stored,
  and up to which minute it holds every model's forecasts) and keeps at most ``window``
  readings (over all houses; at least one minute of every house) ahead of the slowest
  of them, so a slow predictor or collector sets the pace instead of building a backlog
  (and latency).  With ``await_models`` alone it subscribes to the models' forecasts
  instead (four more messages per reading with four models).  The window trades replay
  speed for forecast latency (Little's law: latency ~ window / throughput); see
  :data:`DEFAULT_WINDOW`.  Models that make no progress for ``stall_s`` seconds stop being
  waited for (logged), so a dead predictor cannot stall the replay; a stuck complete
  minute first switches to the models' own forecasts (a dead collector keeps them pacing).
"""

from __future__ import annotations

import logging
import queue
import sys
import time
from collections.abc import Callable

from simulator.streams import HouseStream, pacing_streams
from wattcast.bus import Bus
from wattcast.contract import (
    ALL_STATUS,
    EndOfStream,
    Forecast,
    MessageError,
    Progress,
    Reading,
    Status,
    decode,
    forecast_topic,
    new_run_id,
    progress_topic,
    status_topic,
)
from wattcast.node import decode_delivered

log = logging.getLogger(__name__)

#: Readings in flight at max speed.  Measured with ``wattcast run`` (default split, four
#: models and the collector awaited, 2 cores), replay time / lstm forecast latency p99:
#: window 8 4.3-4.4 s / 11-12 ms; 10 4.0-4.5 s / 13-17 ms; 16 3.4-3.6 s / 17-23 ms;
#: 24 2.8-2.9 s / 23-30 ms.
DEFAULT_WINDOW = 10


class Simulator:
    def __init__(
        self,
        bus: Bus,
        streams: list[HouseStream],
        speed: float | None = None,
        progress: Callable[[str], None] | None = None,
        qos: int = 1,
        await_models: tuple[str, ...] = (),
        window: int = DEFAULT_WINDOW,
        stall_s: float = 10.0,
        await_nodes: tuple[str, ...] = (),
        recover_from: str | None = None,
        recover_nodes: tuple[str, ...] = (),
        recover_wait_s: float = 300.0,
        run: str | None = None,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be positive or 'max', got {speed}")
        if window < 1:
            raise ValueError("window must be at least 1")
        self.bus = bus
        #: this replay's id, on every reading and end; forecasts and progress of other runs are not ours
        self.run_id = run or new_run_id()
        self.await_models = set(await_models)
        self.await_nodes = set(await_nodes)
        self.window = window
        self.stall_s = stall_s
        self.forecast_seq: dict[tuple[str, str], int] = {}
        #: per awaited node: the newest minute it has handled for every house
        self.node_minute: dict[str, int] = {}
        self.malformed = 0
        #: With models and nodes (the collector) awaited, the models are followed through the nodes'
        #: Progress.complete instead of every forecast (see _follow_forecasts for when that stalls).
        self.models_via = sorted(self.await_nodes) if self.await_models else []
        #: per awaited node: the newest minute up to which it holds every awaited model's forecasts
        self.node_complete: dict[str, int] = {}
        # QoS 0: a lost flow-control message only delays the replay until the next one.
        if self.await_models and not self.models_via:
            bus.subscribe(*(forecast_topic(s.house, m) for s in pacing_streams(streams) for m in self.await_models), qos=0)
        if self.await_nodes:
            bus.subscribe(*(progress_topic(n) for n in sorted(self.await_nodes)), qos=0)
        #: Recovery from a broker that lost what it had acknowledged (see :meth:`_rewind`): the
        #: node whose Progress says up to which minute everything is stored (the collector), and
        #: the nodes to wait for before sending again.
        self.recover_from = recover_from
        self.recover_nodes = set(recover_nodes) | ({recover_from} if recover_from else set())
        self.recover_wait_s = recover_wait_s
        self.complete = -1  # the recover_from node's newest complete minute (over every house)
        self.complete_houses = 0  # ... over this many houses
        self.resent = 0
        self.seen_reconnects = 0
        self.recover_gone = False
        if recover_from:
            bus.subscribe(progress_topic(recover_from), qos=0)
            bus.subscribe(ALL_STATUS)
        self.streams = streams
        self.speed = speed
        self.qos = qos
        self.progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
        self.published = 0

    def run(self, stop: Callable[[], bool] = lambda: False) -> int:
        """Publish every reading, then an end-of-stream per house; returns the readings published.

        With ``recover_from``, a lost broker connection is followed by a rewind: once the
        nodes are back, the readings from the first minute not known to be stored with all
        its forecasts are sent again (:meth:`_rewind`), and the replay ends only once the
        collector holds everything (or stops making progress).
        """
        minutes = max(len(s) for s in self.streams)
        total = sum(len(s) for s in self.streams)
        start = time.monotonic()
        next_report = start + 2.0
        seconds_per_minute = None if self.speed is None else 60.0 / self.speed
        self.seen_reconnects = self._reconnects()
        sent_up_to = -1  # the newest minute ever published (a rewind sends earlier ones again)
        i = 0
        while True:
            while i < minutes:
                if stop():
                    self.progress(f"simulator: stopped after {self.published}/{total} readings")
                    break
                if self.recover_from:
                    self._take_forecasts()  # keeps the collector's complete minute current
                    if self._reconnects() != self.seen_reconnects:
                        i, self.seen_reconnects = self._rewind(i, stop), self._reconnects()
                if seconds_per_minute is not None and i > sent_up_to:
                    delay = start + i * seconds_per_minute - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if self.await_models or self.await_nodes:
                    # ``window`` readings in flight over all houses: so many minutes behind
                    self._await_window(i - max(1, self.window // len(self.streams)), stop)
                with self.bus.batched():  # one minute of every house
                    for s in self.streams:
                        if i >= len(s):
                            continue
                        gap, grp, volt, amps, sub1, sub2, sub3 = s.values_at(i)
                        assert gap is not None  # the forecast target: every data file has it
                        reading = Reading(
                            s.house,
                            i,
                            s.ts_at(i),
                            gap,
                            grp,
                            volt,
                            amps,
                            sub1,
                            sub2,
                            sub3,
                            sent_at=time.time(),
                            run=self.run_id,
                        )
                        self.bus.publish(reading.topic, reading.to_json(), qos=self.qos)
                        if i > sent_up_to:
                            self.published += 1
                        else:
                            self.resent += 1
                sent_up_to = max(sent_up_to, i)
                i += 1
                now = time.monotonic()
                if now >= next_report:
                    rate = self.published / (now - start)
                    self.progress(
                        f"simulator: {self.published}/{total} readings "
                        f"({100 * self.published / total:.0f} %), {rate:,.0f}/s, {len(self.streams)} house(s)"
                        + (f", {self.resent} sent again" if self.resent else "")
                    )
                    next_report = now + 2.0
            if stop():
                break
            for s in self.streams:
                if len(s):
                    end = EndOfStream(s.house, len(s), len(s) - 1, s.ts_at(len(s) - 1), run=self.run_id)
                    self.bus.publish(end.topic, end.to_json(), qos=1)
            if not self.recover_from:
                break
            rewind = self._await_complete(minutes - 1, stop)
            if rewind is None:
                break
            i, self.seen_reconnects = rewind, self._reconnects()
        self.bus.flush(timeout=60)
        elapsed = time.monotonic() - start
        self.progress(
            f"simulator: published {self.published} readings in {elapsed:.2f} s "
            f"({self.published / max(elapsed, 1e-9):,.0f}/s)"
            + (f"; {self.resent} sent again after losing the broker" if self.resent else "")
        )
        return self.published

    def _reconnects(self) -> int:
        return int(getattr(self.bus, "reconnects", 0))

    def _rewind(self, at: int, stop: Callable[[], bool]) -> int:
        """The broker connection was lost at minute ``at``: where to go on from.

        A broker acknowledges a message before it is on disk, so one that dies loses what
        it held: readings and forecasts that no node can ask for again.  Once the nodes are
        back (a live status from each after the reconnection: their subscriptions are then
        in place again), the replay goes on from the minute after the last one the collector
        holds completely; predictors answer a reading they have seen with its forecast again,
        and the collector drops what it already has.
        """
        self._await_live(stop)
        houses_ok = self.complete_houses == len(self.streams)
        frm = min(at, self.complete + 1) if houses_ok else 0
        log.warning("simulator: the broker connection was lost at minute %d; sending again from minute %d", at, frm)
        self.progress(f"simulator: lost the broker at minute {at}; nodes back, sending again from minute {frm}")
        return frm

    def _await_live(self, stop: Callable[[], bool]) -> None:
        """Block until every node to recover with has published a live (not retained) online status
        since the last reconnection; another reconnection meanwhile starts the wait again."""
        deadline = time.monotonic() + self.recover_wait_s
        reconnects, live = self._reconnects(), set[str]()
        while not self.recover_nodes <= live and not stop():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nodes not back after losing the broker ({self.recover_wait_s:.0f} s): "
                    f"{', '.join(sorted(self.recover_nodes - live))}"
                )
            if self._reconnects() != reconnects:
                reconnects, live = self._reconnects(), set[str]()
            try:
                message = self.bus.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if "/status/" in message.topic and not message.retain:
                try:
                    msg = decode(message.topic, message.payload)
                except MessageError:
                    continue
                if isinstance(msg, Status) and msg.state == "online":
                    live.add(msg.node)
            else:
                self._note(message)

    def _await_complete(self, last: int, stop: Callable[[], bool]) -> int | None:
        """After the ends: wait until the collector holds every minute up to ``last``; the minute to
        send again from if the broker connection was lost meanwhile, else None.  Gives up (None)
        when the collector's complete minute stops moving for ``stall_s`` x 3: the collector then
        names what is missing."""
        moved, seen = time.monotonic(), self.complete
        while not stop():
            self._take_forecasts()
            if self._reconnects() != self.seen_reconnects:
                return self._rewind(last + 1, stop)
            if self.complete >= last and self.complete_houses == len(self.streams) or self.recover_gone:
                return None
            if self.complete != seen:
                moved, seen = time.monotonic(), self.complete
            elif time.monotonic() - moved > 3 * self.stall_s:
                log.warning(
                    "simulator: %s holds everything only up to minute %d of %d; not waiting longer",
                    self.recover_from,
                    self.complete,
                    last,
                )
                return None
            try:
                self._note(self.bus.inbox.get(timeout=0.05))
            except queue.Empty:
                pass
        return None

    def _last_house(self, seq: int) -> str | None:
        """The house published last in minute ``seq`` (None after the end of every stream)."""
        return next((s.house for s in reversed(self.streams) if seq < len(s)), None)

    def _await_window(self, seq: int, stop: Callable[[], bool]) -> None:
        """Block until every awaited model has forecast, and every awaited node handled, minute ``seq``.

        For the models it is enough to follow the house published last in that minute
        (see :func:`pacing_streams`); a node's :class:`Progress` names the newest reading
        it handled.
        """
        if seq < 1:
            return
        last = self._last_house(seq)
        if last is None:
            return
        last_progress = time.monotonic()
        while not stop():
            if self.recover_from and self._reconnects() != self.seen_reconnects:
                return  # the broker was lost: the replay goes back first (run)
            if self._take_forecasts():
                last_progress = time.monotonic()
            if self.models_via:
                behind = any(self.node_complete.get(n, -1) < seq for n in self.models_via)
                models = sorted(self.await_models) if behind else []
            else:
                models = [m for m in self.await_models if self.forecast_seq.get((last, m), -1) < seq]
            nodes = [n for n in self.await_nodes if self.node_minute.get(n, -1) < seq]
            if not models and not nodes:
                return
            # only progress counts: a dead predictor's peers keep sending their statuses
            if time.monotonic() - last_progress > self.stall_s and self.models_via and models:
                # the collector's complete minute is stuck: a dead collector or a dead predictor,
                # it cannot tell which; follow the models' own forecasts from here on instead
                self._follow_forecasts(last, seq, nodes)
                last_progress = time.monotonic()
                continue
            if time.monotonic() - last_progress > self.stall_s:
                log.warning(
                    "no progress from %s for %.0f s; no longer waiting for them",
                    ", ".join(sorted(models) + sorted(nodes)),
                    self.stall_s,
                )
                self.await_models -= set(models)
                self.await_nodes -= set(nodes)
                continue
            try:
                message = self.bus.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if self._note(message):
                last_progress = time.monotonic()

    def _follow_forecasts(self, last: str, seq: int, stalled_nodes: list[str]) -> None:
        """Follow the models by their own forecasts, each taken as at minute ``seq`` (a window was in
        flight): a live model paces again, a dead one is found alone by the next stall."""
        dropped = f"; no longer waiting for {', '.join(stalled_nodes)}" if stalled_nodes else ""
        log.warning("no complete minute from %s; following the forecasts directly%s", self.models_via, dropped)
        self.models_via = []
        self.await_nodes -= set(stalled_nodes)
        self.bus.subscribe(
            *(forecast_topic(s.house, m) for s in pacing_streams(self.streams) for m in self.await_models), qos=0
        )
        for m in self.await_models:
            self.forecast_seq[(last, m)] = max(self.forecast_seq.get((last, m), -1), seq)

    def _take_forecasts(self) -> bool:
        """Note what is in the inbox already; True if any of it was progress."""
        advanced = False
        while True:
            try:
                message = self.bus.inbox.get_nowait()
            except queue.Empty:
                return advanced
            advanced = self._note(message) or advanced

    def _note(self, message) -> bool:
        """Take a forecast or a node's progress into account; True if it moved a model or node forward."""
        if self.recover_from and message.topic == status_topic(self.recover_from) and not message.retain:
            # the collector said goodbye (finished, or stopped): nothing more to wait for from it
            self.recover_gone = b'"offline"' in message.payload
            return False
        if "/forecast/" not in message.topic and "/progress/" not in message.topic:
            return False  # e.g. node statuses
        try:
            msg = decode_delivered(message)
        except MessageError as exc:
            self.malformed += 1
            log.warning("simulator: ignored a malformed message on %s: %s", message.topic[:120], exc)
            return False
        if getattr(msg, "run", None) != self.run_id:
            return False  # of another replay: an earlier one's late forecasts, or another simulator's
        if isinstance(msg, Forecast):
            key = (msg.house, msg.model)
            if msg.seq > self.forecast_seq.get(key, -1):
                self.forecast_seq[key] = msg.seq
                return True
        elif isinstance(msg, Progress):
            if msg.node == self.recover_from and msg.complete is not None:
                self.complete, self.complete_houses = msg.complete, msg.houses or 0
            if msg.node not in self.await_nodes:
                return False
            advanced = False
            if msg.complete is not None and msg.complete > self.node_complete.get(msg.node, -1):
                self.node_complete[msg.node] = msg.complete
                advanced = True
            # minute seq is done once the house published last in it is
            minute = msg.seq if msg.house == self._last_house(msg.seq) else msg.seq - 1
            if minute > self.node_minute.get(msg.node, -1):
                self.node_minute[msg.node] = minute
                advanced = True
            return advanced
        return False
