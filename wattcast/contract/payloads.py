"""The payloads of wattcast, declared once: typed msgspec structs whose constraints are the contract.

Each class below is one kind of message.  Its fields, their types, ranges and
descriptions are what :mod:`wattcast.contract.codec` enforces when it decodes a
payload and what :mod:`wattcast.contract.schema` writes into the published JSON
Schemas (``wattcast/schemas/*.json``, generated, never edited by hand).

Every payload is a compact UTF-8 JSON object.  Times ``ts``, ``issued_at``,
``target_ts``, ``last_ts`` and ``as_of`` are *event time* (integer unix seconds of the
meter's clock: the data set's local time read as UTC); ``sent_at`` fields and a
status ``ts`` are wall-clock unix seconds, for latency.

Structs built in Python are not validated (producers are our own nodes; a value a
model computed is checked where it is computed, e.g. a forecast's finiteness); what
arrives is (:func:`wattcast.contract.codec.decode`).
"""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any, Literal, Self

import msgspec
from msgspec import Meta, Struct

from wattcast.contract.topics import (
    end_topic,
    forecast_topic,
    metrics_topic,
    progress_topic,
    reading_topic,
    status_topic,
)

MAX_PAYLOAD_BYTES = 4096
HORIZON_S = 300
MODELS = ("lstm", "lstm-augmented", "gbm", "gbm-history", "rls", "linear", "persistence")
#: The run of a message that names none (a producer older than run ids, or one without replays).
DEFAULT_RUN = "default"
#: A running node publishes its status every few seconds (2 s); a retained ``online`` older
#: than this is what a node said last, maybe in an earlier run, not proof that it is there.
FRESH_STATUS_S = 10.0
STATES = ("online", "offline")

READING_FIELDS = (
    "global_active_power",
    "global_reactive_power",
    "voltage",
    "global_intensity",
    "sub_metering_1",
    "sub_metering_2",
    "sub_metering_3",
)
#: A reading's measurements other than global active power are optional: a meter that does not
#: measure one leaves it out (a model that needs it refuses such readings, see ``Model.needs``).
ABSENT = "; absent when the meter does not measure it"
#: The range of every measurement of a reading (what a data file's values are checked against).
READING_MIN, READING_MAX = -1e6, 1e6
#: The range of event timestamps (unix seconds): 1990-01-01 .. 2100-01-01.
TS_MIN, TS_MAX = 631152000, 4102444800
#: The largest integer a JSON number holds exactly (an IEEE double): the bound of counts and seqs.
INT_MAX = 2**53

# ---------------------------------------------------------------- constraints of fields
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(?!\n)$"
ID_RULE = "1-64 characters of [A-Za-z0-9_.-] starting with a letter or digit"
ID = Meta(pattern=ID_PATTERN)
COUNT = Meta(ge=0, le=INT_MAX)
EVENT_TIME = Meta(ge=TS_MIN, le=TS_MAX)
KW = Meta(ge=READING_MIN, le=READING_MAX)
#: a finite upper bound: 1e999 and larger literals are out of range, never infinity
NON_NEGATIVE = Meta(ge=0.0, le=sys.float_info.max)

RUN_DOC = Meta(
    description=f"the replay (run) this message belongs to, {ID_RULE}; a simulator makes one per replay "
    '(UTC start time and 6 random hex digits); absent: "default"'
)
HOUSE_DOC = Meta(description=f"meter id, {ID_RULE}; equals the <house> level of the topic")
NODE_DOC = Meta(description=f"node id, {ID_RULE}; equals the <node> level of the topic")
Run = Annotated[str, ID, RUN_DOC]
House = Annotated[str, ID, HOUSE_DOC]
Node = Annotated[str, ID, NODE_DOC]
#: A model's name is data: the built-in ones (MODELS) and any a user registers (wattcast.forecasters.registry);
#: a collector scores the models its run or deployment declares.
ModelName = str
State = Literal["online", "offline"]
Model = Annotated[
    str,
    ID,
    Meta(description=f"the model ({ID_RULE}; built in: {', '.join(MODELS)}); equals the <model> level of the topic"),
]
_ID = re.compile(ID_PATTERN)


def model_name(name: str) -> ModelName:
    """``name`` as a model name of the contract (ValueError if it is not an id)."""
    if not isinstance(name, str) or not _ID.match(name):
        raise ValueError(f"not a model name ({ID_RULE}): {name!r}")
    return name


def D(text: str) -> Meta:  # noqa: N802 - reads like the annotation it is part of
    """A field's description (in the generated schema)."""
    return Meta(description=text)


class Payload(Struct, frozen=True, omit_defaults=True):
    """What every message shares: JSON out (:meth:`to_json`), its topic (``.topic``)."""

    def to_json(self) -> bytes:
        return _ENCODER.encode(self)

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)

    @classmethod
    def from_json(cls, payload: bytes | str) -> Self:
        from wattcast.contract.codec import decode_payload

        return decode_payload(cls, payload)

    @classmethod
    def from_dict(cls, obj: object) -> Self:
        from wattcast.contract.codec import from_builtins

        return from_builtins(cls, obj)


_ENCODER = msgspec.json.Encoder()


class Reading(Payload, frozen=True, omit_defaults=True):
    """One meter reading: a minute of the UCI household power data set, published by the simulator."""

    house: House
    seq: Annotated[int, COUNT, D("position of the reading in this house's stream, from 0, +1 per reading")]
    ts: Annotated[
        int,
        EVENT_TIME,
        D("event time of the reading: unix seconds of the meter's clock (the data set's local time read as UTC)"),
    ]
    global_active_power: Annotated[float, KW, D("household global minute-averaged active power (kW), the forecast target")]
    global_reactive_power: (
        Annotated[float, KW, D("household global minute-averaged reactive power (kW)" + ABSENT)] | None
    ) = None
    voltage: Annotated[float, KW, D("minute-averaged voltage (V)" + ABSENT)] | None = None
    global_intensity: Annotated[float, KW, D("household global minute-averaged current intensity (A)" + ABSENT)] | None = (
        None
    )
    sub_metering_1: Annotated[float, KW, D("energy sub-metering No. 1, kitchen (Wh of active energy)" + ABSENT)] | None = (
        None
    )
    sub_metering_2: (
        Annotated[float, KW, D("energy sub-metering No. 2, laundry room (Wh of active energy)" + ABSENT)] | None
    ) = None
    sub_metering_3: (
        Annotated[float, KW, D("energy sub-metering No. 3, water heater and air conditioner (Wh of active energy)" + ABSENT)]
        | None
    ) = None
    sent_at: (
        Annotated[float, NON_NEGATIVE, D("wall-clock unix seconds when the simulator published it (optional; for latency)")]
        | None
    ) = None
    run: Run = DEFAULT_RUN

    @property
    def topic(self) -> str:
        return reading_topic(self.house)


class EndOfStream(Payload, frozen=True, omit_defaults=True):
    """The simulator has published every reading of a house: ``readings`` of them, the last ``last_seq``."""

    house: House
    readings: Annotated[int, COUNT, D("number of readings published for the house")]
    last_seq: Annotated[int, COUNT, D("seq of the last reading")]
    last_ts: Annotated[int, EVENT_TIME, D("ts of the last reading")]
    run: Run = DEFAULT_RUN

    @property
    def topic(self) -> str:
        return end_topic(self.house)


class Forecast(Payload, frozen=True, omit_defaults=True):
    """A model's forecast of global active power (kW) at target_ts, issued after the reading at issued_at
    (target_ts - issued_at = 300 s); target_ts must be later than issued_at."""

    house: House
    model: Model
    model_version: Annotated[str, Meta(min_length=1, max_length=64), D("version of the model's artifact")]
    seq: Annotated[int, COUNT, D("seq of the reading the forecast was issued after")]
    issued_at: Annotated[int, EVENT_TIME, D("ts of that reading")]
    target_ts: Annotated[int, EVENT_TIME, D("event time the forecast is for (issued_at + 300)")]
    value: Annotated[float, KW, D("forecast global active power (kW)")]
    reading_sent_at: (
        Annotated[float, NON_NEGATIVE, D("sent_at of the reading it was issued after (optional; for latency)")] | None
    ) = None
    run: Run = DEFAULT_RUN

    @property
    def topic(self) -> str:
        return forecast_topic(self.house, self.model)


class Metrics(Payload, frozen=True, omit_defaults=True):
    """The collector's scores of one model for one house, as of event time as_of; published while scoring
    and once more at the end of the stream."""

    house: House
    model: Model
    as_of: Annotated[int, EVENT_TIME, D("event time of the newest reading scored")]
    n: Annotated[int, COUNT, D("forecasts matched with the actual reading at their target")]
    mse: Annotated[float, NON_NEGATIVE, D("mean squared error over the n matched forecasts (kW²)")]
    rmse: Annotated[float, NON_NEGATIVE, D("square root of mse (kW)")]
    mae: Annotated[float, NON_NEGATIVE, D("mean absolute error (kW)")]
    rolling_n: Annotated[int, COUNT, D("matched forecasts whose target lies in the last window_s seconds of event time")]
    rolling_mse: Annotated[float, NON_NEGATIVE, D("mean squared error over those (kW²)")]
    window_s: Annotated[int, COUNT, D("length of the rolling window (event-time seconds)")]
    unmatched: Annotated[int, COUNT, D("forecasts whose target lies inside the stream but has no reading")]
    pending: Annotated[int, COUNT, D("forecasts whose target is after the newest reading")]
    run: Run = DEFAULT_RUN

    @property
    def topic(self) -> str:
        return metrics_topic(self.house, self.model)


class Status(Payload, frozen=True, omit_defaults=True):
    """Liveness of a node, retained; the broker publishes the node's last will (state offline) if it
    disappears without saying so."""

    node: Node
    state: Annotated[State, D("online or offline")]
    role: Annotated[str, ID, D("simulator, predictor or collector")]
    ts: (
        Annotated[float, NON_NEGATIVE, D("wall-clock unix seconds of the status (optional; absent in a last will)")] | None
    ) = None
    counters: (
        Annotated[
            dict[Annotated[str, ID], Annotated[int, COUNT]],
            Meta(max_length=32),
            D("the node's counters (received, published, forecasts, malformed, ...), for monitoring (optional)"),
        ]
        | None
    ) = None
    model: (
        Annotated[
            str,
            ID,
            D("the model a predictor runs (optional; predictors only): a node's identity is data, not a naming convention"),
        ]
        | None
    ) = None

    @property
    def topic(self) -> str:
        return status_topic(self.node)

    def after(self, before: Status | None) -> Status:
        """This status as its node's newest, ``before`` the one it replaces: a last will carries no
        counters, so the node's final counters (and its model) are kept from before."""
        if before is None or (self.counters is not None and self.model is not None):
            return self
        return msgspec.structs.replace(
            self,
            counters=self.counters if self.counters is not None else before.counters,
            model=self.model if self.model is not None else before.model,
        )


class Progress(Payload, frozen=True, omit_defaults=True):
    """How far a node has handled the reading stream: the newest reading it handled, in arrival order
    (readings arrive minute by minute, the houses in a fixed order, so this one reading tells how far
    every house is done).  Published by the collector after each handled batch, QoS 0, not retained;
    a max-speed simulator paces itself on it, and one that lost its broker sends again from the
    minute after ``complete``."""

    node: Node
    house: Annotated[str, ID, D("house of the newest reading the node handled")]
    seq: Annotated[int, COUNT, D("sequence number of that reading")]
    complete: (
        Annotated[
            int,
            Meta(ge=-1, le=INT_MAX),
            D(
                "the newest minute (seq) up to which the node holds every reading of the houses it has seen and "
                "every model's forecast issued after them, with no hole; -1: none yet. After a broker restart the "
                "simulator re-sends from the minute after it"
            ),
        ]
        | None
    ) = None
    houses: Annotated[int, COUNT, D("how many houses the node has seen readings of (complete covers these)")] | None = None
    run: Run = DEFAULT_RUN

    @property
    def topic(self) -> str:
        return progress_topic(self.node)


#: topic kind -> payload class
KINDS: dict[str, type[Payload]] = {
    "reading": Reading,
    "end": EndOfStream,
    "forecast": Forecast,
    "metrics": Metrics,
    "status": Status,
    "progress": Progress,
}
