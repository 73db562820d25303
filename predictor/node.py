"""The predictor's logic, free of MQTT: readings in, forecasts out.

Per house it keeps a :class:`~wattcast.forecasters.Forecaster`; readings of a batch
are applied in order per house, and the queries of every house and reading in the
batch are predicted in one call of the model (one NumPy pass for the LSTMs).

With a ``state_path`` the node checkpoints every house's forecaster and newest
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
from pathlib import Path
from typing import Any

import numpy as np

from wattcast.bus import Bus, Message
from wattcast.forecasters import Forecaster, Model
from wattcast.messages import (
    NOT_RETAINED,
    EndOfStream,
    Forecast,
    MessageError,
    Reading,
    check_int,
    decode,
    may_be_retained,
    parse_json,
)
from wattcast.node import NodeStats

log = logging.getLogger(__name__)

#: version of the state file's layout
STATE_FORMAT = 1


#: A reading whose seq is further ahead of its house's newest than this is rejected (a day of readings).
MAX_SEQ_JUMP = 1440


class PredictorNode:
    def __init__(self, bus: Bus, model: Model, node: str | None = None, state_path: Path | None = None) -> None:
        self.bus = bus
        self.model = model
        self.node = node or f"predictor-{model.name}"
        self.stats = NodeStats(self.node)
        self.houses: dict[str, Forecaster] = {}
        self.last_seq: dict[str, int] = {}
        self.state_path = Path(state_path) if state_path is not None else None
        if self.state_path is not None and self.state_path.exists():
            self.load_state()

    # -- state across restarts -------------------------------------------------------------
    def checkpoint(self) -> None:
        """Write every house's state to ``state_path`` (atomically: a crash leaves the old file)."""
        if self.state_path is None:
            return
        doc = {
            "format": STATE_FORMAT,
            "node": self.node,
            "model": self.model.name,
            "model_version": self.model.version,
            "saved_at": time.time(),
            "houses": {h: {"last_seq": self.last_seq[h], "state": f.state()} for h, f in self.houses.items()},
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(doc, separators=(",", ":"), allow_nan=False))
        os.replace(tmp, self.state_path)
        self.stats.counters["checkpoints"] += 1

    def load_state(self) -> None:
        """Take the houses' state from ``state_path``; a file that does not fit is logged and left out."""
        assert self.state_path is not None
        try:
            houses = self._restored(parse_json(self.state_path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # MessageError is a ValueError
            self.stats.counters["state_errors"] += 1
            log.error("%s: ignored the saved state %s (starting afresh): %s", self.node, self.state_path, exc)
            return
        for house, (seq, forecaster) in houses.items():
            self.houses[house], self.last_seq[house] = forecaster, seq
        self.stats.counters["restored_houses"] = len(houses)
        log.info("%s: restored %d house(s) from %s", self.node, len(houses), self.state_path)

    def _restored(self, doc: Any) -> dict[str, tuple[int, Forecaster]]:
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise ValueError(f"not a wattcast predictor state of format {STATE_FORMAT}")
        if (doc.get("model"), doc.get("model_version")) != (self.model.name, self.model.version):
            raise ValueError(f"saved by model {doc.get('model')} {doc.get('model_version')}, "
                             f"this node runs {self.model.name} {self.model.version}")
        houses = {}
        for house, entry in doc["houses"].items():
            seq = check_int(f"last_seq of house {house!r:.40}", entry["last_seq"])
            forecaster = self.model.new_forecaster()
            forecaster.restore(entry["state"])
            query = forecaster.query()
            if query is not None and not np.isfinite(self.model.predict([query])).all():
                raise ValueError(f"house {house!r}: its state forecasts a value that is not finite")
            houses[house] = (seq, forecaster)
        return houses

    def handle(self, batch: list[Message]) -> None:
        c = self.stats.counters
        pending: list[tuple[Reading, object]] = []
        for message in batch:
            try:
                if message.retain and not may_be_retained(message.topic):
                    raise MessageError(NOT_RETAINED)
                msg = decode(message.topic, message.payload)
            except MessageError as exc:
                self.stats.reject(message.topic, str(exc))
                continue
            if isinstance(msg, EndOfStream):
                c["ends"] += 1
                continue
            if not isinstance(msg, Reading):
                continue  # statuses and other kinds are not ours
            c["received"] += 1
            last = self.last_seq.get(msg.house)
            if last is not None and msg.seq <= last:
                c["duplicates"] += 1  # QoS 1 redelivery or replay: already forecast
                continue
            if last is not None and msg.seq > last + MAX_SEQ_JUMP:
                # not a loss of a few readings: a broken or forged seq, which would make every
                # following reading of the house look like a duplicate
                self.stats.reject(message.topic, f"seq {msg.seq} jumps more than {MAX_SEQ_JUMP} past {last}")
                continue
            if last is not None and msg.seq > last + 1:
                c["gaps"] += msg.seq - last - 1
                log.warning("%s: house %s skipped from seq %d to %d", self.node, msg.house, last, msg.seq)
            self.last_seq[msg.house] = msg.seq
            forecaster = self.houses.get(msg.house)
            if forecaster is None:
                forecaster = self.houses[msg.house] = self.model.new_forecaster()
            forecaster.learn_one(msg)
            query = forecaster.query()
            if query is not None:
                pending.append((msg, query))
        if not pending:
            return
        values = self.model.predict([q for _, q in pending])
        c["predict_calls"] += 1
        horizon = self.model.horizon_s
        for (reading, _), value in zip(pending, values, strict=True):
            try:
                forecast = Forecast(
                    reading.house, self.model.name, self.model.version, reading.seq, reading.ts,
                    reading.ts + horizon, float(value), reading.sent_at,
                )
            except MessageError as exc:  # e.g. a model that diverged to NaN for one house: not the others
                c["bad_forecasts"] += 1
                if c["bad_forecasts"] <= 10 or c["bad_forecasts"] % 1000 == 0:
                    log.warning("%s: no forecast for house %s seq %d (%d so far): %s", self.node, reading.house,
                                reading.seq, c["bad_forecasts"], exc)
                continue
            self.bus.publish(forecast.topic, forecast.to_json(), qos=1)
            c["forecasts"] += 1
