"""The predictor's logic, free of MQTT: readings in, forecasts out.

Per stream, a (run, house) pair, it keeps a :class:`~wattcast.forecasters.Forecaster`:
a second replay (a new run) into a running predictor starts afresh instead of
looking like repeated readings, and the states of the ``MAX_RUNS`` runs used last are
kept.  Readings of a batch are applied in order per stream, and the queries of every
stream and reading in the batch are predicted in one call of the model (one NumPy
pass for the LSTMs).

With a ``state_path`` the node checkpoints every stream's forecaster and newest
sequence number to that JSON file (:meth:`PredictorNode.checkpoint`), and the serve
loop acknowledges readings only once a checkpoint holds them.  A predictor that is
killed and restarted loads the file, gets the readings after it again from its
persistent session, and forecasts exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wattcast.bus import Bus, Message
from wattcast.contract import (
    READING_MAX,
    READING_MIN,
    EndOfStream,
    Forecast,
    MessageError,
    Reading,
    check_int,
    check_run,
    forecast_topic,
    model_name,
    parse_json,
)
from wattcast.forecasters import Forecaster, Model
from wattcast.node import NodeStats, decode_delivered

if TYPE_CHECKING:
    from wattcast.store.checkpoints import SharedCheckpoints

log = logging.getLogger(__name__)

#: version of the state file's layout (2: per run and house)
STATE_FORMAT = 2

#: A stream: the readings of one house in one run.
Stream = tuple[str, str]  # (run, house)


#: A reading whose seq is further ahead of its house's newest than this is rejected (a day of readings).
MAX_SEQ_JUMP = 1440
#: How long readings after a hole wait for the missing ones (a simulator sends them again once the
#: broker is back), and how many at most; then the node goes on past the hole (counted as gaps).
GAP_WAIT_S = 30.0
HOLD_MAX = 1440
#: Forecasts kept per house to send again when their reading comes again (a day of readings).
RESEND_KEEP = 1440
#: Runs whose forecasters are kept (used last); an older run's are dropped when a new one starts.
MAX_RUNS = 4


class PredictorNode:
    def __init__(
        self,
        bus: Bus,
        model: Model,
        node: str | None = None,
        state_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedCheckpoints | None = None,
    ) -> None:
        self.bus = bus
        self.clock = clock
        #: per stream, readings after a hole (seq -> reading) and since when they wait
        self.held: dict[Stream, dict[int, Reading]] = {}
        self.held_since: dict[Stream, float] = {}
        #: per stream, the forecasts sent lately (seq -> payload), to send again on request
        self.sent: dict[Stream, dict[int, bytes]] = {}
        self.held_restored: dict[Stream, list[Reading]] = {}
        #: the runs with state here, the one used last at the end
        self.runs: dict[str, None] = {}
        self.last_run: str | None = None
        self.model = model
        self.model_name = model_name(model.name)  # ValueError for a model the contract does not know
        self.node = node or f"predictor-{model.name}"
        self.stats = NodeStats(self.node)
        self.houses: dict[Stream, Forecaster] = {}
        self.last_seq: dict[Stream, int] = {}
        #: the streams whose readings lack a measurement this model needs (logged once each)
        self.lacking_said: set[Stream] = set()
        #: whether the model needs a measurement a reading may lack (all but global active power are optional)
        self.needs_optional = any(f != "global_active_power" for f in model.needs)
        self.state_path = Path(state_path) if state_path is not None else None
        if self.state_path is not None and self.state_path.exists():
            self.load_state()
        #: checkpoints every replica of the model reads (a sharded deployment), and the streams
        #: that moved on since the last save
        self.shared = shared
        self.unsaved: set[Stream] = set()

    # -- state across restarts -------------------------------------------------------------
    def checkpoint(self) -> None:
        """Save the state: the streams that moved on to the shared checkpoints, every stream's to
        ``state_path`` (atomically: a crash leaves the old file)."""
        if self.shared is not None and self.unsaved:
            self.shared.save(
                [
                    (run, house, self.last_seq[(run, house)], self.houses[(run, house)].state())
                    for run, house in self.unsaved
                    if (run, house) in self.houses  # not of a run dropped since
                ]
            )
            self.unsaved = set()
            self.stats.counters["checkpoints"] += 1
        if self.state_path is None:
            return
        doc = {
            "format": STATE_FORMAT,
            "node": self.node,
            "model": self.model.name,
            "model_version": self.model.version,
            "saved_at": time.time(),
            "streams": [
                {"run": run, "house": house, "last_seq": self.last_seq[(run, house)], "state": f.state()}
                for (run, house), f in self.houses.items()
            ],
            # readings after a hole, acknowledged to the broker but not learnt yet (each names its stream)
            "held": [r.to_dict() for held in self.held.values() for r in held.values()],
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(doc, separators=(",", ":"), allow_nan=False))
        os.replace(tmp, self.state_path)
        self.stats.counters["checkpoints"] += 1

    def load_state(self) -> None:
        """Take the streams' state from ``state_path``; a file that does not fit is logged and left out."""
        assert self.state_path is not None
        try:
            houses = self._restored(parse_json(self.state_path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # MessageError is a ValueError
            self.stats.counters["state_errors"] += 1
            log.error("%s: ignored the saved state %s (starting afresh): %s", self.node, self.state_path, exc)
            return
        for key, (seq, forecaster) in houses.items():
            self.houses[key], self.last_seq[key] = forecaster, seq
            self.runs[key[0]] = None
        for key, readings in self.held_restored.items():
            self.held[key] = {r.seq: r for r in readings}
            self.held_since[key] = self.clock()
        self.stats.counters["restored_houses"] = len(houses)
        log.info("%s: restored %d house(s) of %d run(s) from %s", self.node, len(houses), len(self.runs), self.state_path)

    def _restored(self, doc: Any) -> dict[Stream, tuple[int, Forecaster]]:
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise ValueError(f"not a wattcast predictor state of format {STATE_FORMAT}")
        if (doc.get("model"), doc.get("model_version")) != (self.model.name, self.model.version):
            raise ValueError(
                f"saved by model {doc.get('model')} {doc.get('model_version')}, "
                f"this node runs {self.model.name} {self.model.version}"
            )
        houses = {}
        for entry in doc["streams"]:
            key = (check_run(entry["run"]), entry["house"])
            house = key[1]
            seq = check_int(f"last_seq of house {house!r:.40}", entry["last_seq"])
            forecaster = self.model.new_forecaster()
            forecaster.restore(entry["state"])
            query = forecaster.query()
            if query is not None and not np.isfinite(self.model.predict([query])).all():
                raise ValueError(f"house {house!r}: its state forecasts a value that is not finite")
            houses[key] = (seq, forecaster)
        held: dict[Stream, list[Reading]] = {}
        for r in map(Reading.from_dict, doc.get("held", [])):
            if (r.run, r.house) in houses:
                held.setdefault((r.run, r.house), []).append(r)
        self.held_restored = held
        return houses

    def handle(self, batch: list[Message]) -> None:
        c = self.stats.counters
        pending: list[tuple[Reading, object]] = []
        for message in batch:
            try:
                msg = decode_delivered(message)
            except MessageError as exc:
                self.stats.reject(message.topic, str(exc))
                continue
            if isinstance(msg, EndOfStream):
                c["ends"] += 1
                continue
            if not isinstance(msg, Reading):
                continue  # statuses and other kinds are not ours
            c["received"] += 1
            self._take(msg, pending, message.topic)
        self._forecast(pending)

    def tick(self) -> bool:
        """Go on past a hole that was not filled in time (``GAP_WAIT_S``); never ends the node."""
        now = self.clock()
        pending: list[tuple[Reading, object]] = []
        for key in [k for k, since in self.held_since.items() if now - since >= GAP_WAIT_S]:
            self._release(key, pending)
        self._forecast(pending)
        return False

    def _use_run(self, run: str) -> None:
        """Note that ``run`` is in use; a new one beyond ``MAX_RUNS`` drops the state of the run used longest ago."""
        if run in self.runs:
            del self.runs[run]  # to the end: used last
        elif len(self.runs) >= MAX_RUNS:
            old = next(iter(self.runs))
            del self.runs[old]
            for table in (self.houses, self.last_seq, self.held, self.held_since, self.sent):
                for key in [k for k in table if k[0] == old]:
                    del table[key]
            self.lacking_said = {k for k in self.lacking_said if k[0] != old}
            self.stats.counters["runs_dropped"] += 1
            log.info("%s: run %s started; dropped the state of run %s (used longest ago)", self.node, run, old)
        self.runs[run] = None
        self.last_run = run

    def _take(self, msg: Reading, pending: list, topic: str) -> None:
        c = self.stats.counters
        if msg.run != self.last_run:
            self._use_run(msg.run)
        key = (msg.run, msg.house)
        last = self.last_seq.get(key)
        if self.shared is not None and (last is None or msg.seq != last + 1):
            last = self._adopt(key, last)
        if last is not None and msg.seq <= last:
            c["duplicates"] += 1  # QoS 1 redelivery, or a simulator sending again after a broker restart
            sent = self.sent.get(key, {}).get(msg.seq)
            if sent is not None:  # its forecast may be what the broker lost: send it again (deduplicated)
                self.bus.publish(forecast_topic(msg.house, self.model.name), sent, qos=1)
                c["resent"] += 1
            return
        if last is not None and msg.seq > last + MAX_SEQ_JUMP:
            held = self.held.get(key)
            newest = max(last, max(held)) if held else last  # readings held after a hole count too
            if msg.seq > newest + MAX_SEQ_JUMP:
                # not a loss of a few readings: a broken or forged seq, which would make every
                # following reading of the house look like a duplicate
                self.stats.reject(topic, f"seq {msg.seq} jumps more than {MAX_SEQ_JUMP} past {newest}")
                return
        if last is not None and msg.seq > last + 1:
            # a hole: readings a broker lost, which the simulator sends again; learning past
            # them would change this house's forecasts for good, so wait for them a while
            held = self.held.setdefault(key, {})
            held[msg.seq] = msg
            self.held_since.setdefault(key, self.clock())
            if len(held) > HOLD_MAX:
                self._release(key, pending)
            return
        self._learn(msg, pending)
        held = self.held.get(key)
        while held and self.last_seq[key] + 1 in held:
            self._learn(held.pop(self.last_seq[key] + 1), pending)
        if held is not None and not held:
            del self.held[key]
            del self.held_since[key]

    def _adopt(self, key: Stream, last: int | None) -> int | None:
        """The house's shared checkpoint, where it is ahead of what this replica holds (it took the
        house's shard over from another replica); returns the last seq now held."""
        try:
            saved = self.shared.load(*key) if self.shared is not None else None
        except Exception as exc:  # a broken row or store: go on with what this replica holds, said
            self.stats.counters["checkpoint_errors"] += 1
            log.error("%s: cannot load the checkpoint of house %s of run %s: %s", self.node, key[1], key[0], exc)
            return last
        if saved is None or (last is not None and saved[0] <= last):
            return last
        seq, state = saved
        forecaster = self.model.new_forecaster()
        forecaster.restore(state)
        self.houses[key], self.last_seq[key] = forecaster, seq
        for table in (self.held, self.held_since, self.sent):
            table.pop(key, None)  # of an older hold of this house: what they held is in the checkpoint
        self.stats.counters["adopted"] += 1
        log.info("%s: took over house %s of run %s at seq %d", self.node, key[1], key[0], seq)
        return seq

    def _release(self, key: Stream, pending: list) -> None:
        """Go on with the held readings of stream ``key`` past their holes (counted as gaps)."""
        c = self.stats.counters
        held = self.held.pop(key, {})
        self.held_since.pop(key, None)
        for seq in sorted(held):
            last = self.last_seq[key]
            if seq > last + 1:
                c["gaps"] += seq - last - 1
                log.warning("%s: house %s of run %s skipped from seq %d to %d", self.node, key[1], key[0], last, seq)
            self._learn(held[seq], pending)

    def _learn(self, msg: Reading, pending: list) -> None:
        key = (msg.run, msg.house)
        self.last_seq[key] = msg.seq
        lacking = self.model.lacks(msg) if self.needs_optional else None
        if lacking:  # a meter without this measurement: nothing to learn or forecast, said once per stream
            self.stats.counters["lacking"] += 1
            if key not in self.lacking_said:
                self.lacking_said.add(key)
                log.warning(
                    "%s: house %s of run %s: readings lack %s, which %s needs: no forecasts for them (counted as lacking)",
                    self.node,
                    msg.house,
                    msg.run,
                    ", ".join(lacking),
                    self.model.name,
                )
            return
        forecaster = self.houses.get(key)
        if forecaster is None:
            forecaster = self.houses[key] = self.model.new_forecaster()
        forecaster.learn_one(msg)
        if self.shared is not None:
            self.unsaved.add(key)
        query = forecaster.query()
        if query is not None:
            pending.append((msg, query))

    def _forecast(self, pending: list[tuple[Reading, object]]) -> None:
        if not pending:
            return
        c = self.stats.counters
        values = self.model.predict([q for _, q in pending])
        c["predict_calls"] += 1
        horizon = self.model.horizon_s
        for (reading, _), value in zip(pending, values, strict=True):
            value = float(value)
            if not READING_MIN <= value <= READING_MAX:  # NaN fails too: a model that diverged for one house
                c["bad_forecasts"] += 1
                if c["bad_forecasts"] <= 10 or c["bad_forecasts"] % 1000 == 0:
                    log.warning(
                        "%s: no forecast for house %s seq %d (%d so far): the model gave %r kW",
                        self.node,
                        reading.house,
                        reading.seq,
                        c["bad_forecasts"],
                        value,
                    )
                continue
            forecast = Forecast(
                reading.house,
                self.model_name,
                self.model.version,
                reading.seq,
                reading.ts,
                reading.ts + horizon,
                value,
                reading.sent_at,
                run=reading.run,
            )
            payload = forecast.to_json()
            self.bus.publish(forecast.topic, payload, qos=1)
            sent = self.sent.setdefault((reading.run, reading.house), {})
            sent[reading.seq] = payload
            sent.pop(reading.seq - RESEND_KEEP, None)
            c["forecasts"] += 1
