"""The predictor's logic, free of MQTT: readings in, forecasts out.

Per house it keeps a :class:`~wattcast.forecasters.Forecaster`; readings of a batch
are applied in order per house, and the queries of every house and reading in the
batch are predicted in one call of the model (one NumPy pass for the LSTMs).
"""

from __future__ import annotations

import logging

from wattcast.bus import Bus, Message
from wattcast.forecasters import Forecaster, Model
from wattcast.messages import EndOfStream, Forecast, MessageError, Reading, decode
from wattcast.node import NodeStats

log = logging.getLogger(__name__)


class PredictorNode:
    def __init__(self, bus: Bus, model: Model, node: str | None = None) -> None:
        self.bus = bus
        self.model = model
        self.node = node or f"predictor-{model.name}"
        self.stats = NodeStats(self.node)
        self.houses: dict[str, Forecaster] = {}
        self.last_seq: dict[str, int] = {}

    def handle(self, batch: list[Message]) -> None:
        c = self.stats.counters
        pending: list[tuple[Reading, object]] = []
        for message in batch:
            try:
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
            forecast = Forecast(
                reading.house, self.model.name, self.model.version, reading.seq, reading.ts,
                reading.ts + horizon, float(value), reading.sent_at,
            )
            self.bus.publish(forecast.topic, forecast.to_json(), qos=1)
        c["forecasts"] += len(pending)
