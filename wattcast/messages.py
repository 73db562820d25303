"""Topics and payloads of wattcast, defined once.

Every message on the bus is one of the frozen dataclasses below, serialised as a
compact UTF-8 JSON object.  ``from_json`` validates strictly (types, finiteness,
ranges, size) and raises :class:`MessageError` with a one-line reason; nodes count
and log such rejections instead of crashing.

Topic layout (``v1`` is the payload schema version)::

    wattcast/v1/<house>/reading             Reading        simulator -> all
    wattcast/v1/<house>/end                 EndOfStream    simulator -> all
    wattcast/v1/<house>/forecast/<model>    Forecast       predictor -> collector, viewers
    wattcast/v1/<house>/metrics/<model>     Metrics        collector -> viewers
    wattcast/v1/status/<node>               Status         every node (retained, last will)
    wattcast/v1/progress/<node>             Progress       collector -> simulator (flow control)

Timestamps ``ts``, ``issued_at`` and ``target_ts`` are event time: integer unix
seconds of the meter's clock (the UCI data set's local time read as UTC).
``sent_at`` fields are wall-clock unix seconds (float) used to measure latency.

Every reading, end of stream, forecast, metrics and progress message names its
``run``: one replay of the simulator, with an id of its own (optional in ``v1``:
absent, it is :data:`DEFAULT_RUN`).  Per run and house, ``seq`` starts at 0; a
second replay into running nodes is a new run, scored apart.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, ClassVar

ROOT = "wattcast/v1"
MAX_PAYLOAD_BYTES = 4096
HORIZON_S = 300
MODELS = ("lstm", "lstm-augmented", "linear", "persistence")

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Event timestamps must lie in a sane range: 1990-01-01 .. 2100-01-01.
_TS_MIN, _TS_MAX = 631152000, 4102444800


class MessageError(ValueError):
    """A payload or topic that does not follow the wattcast contract."""


# --------------------------------------------------------------------------- topics

def reading_topic(house: str) -> str:
    return f"{ROOT}/{house}/reading"


def end_topic(house: str) -> str:
    return f"{ROOT}/{house}/end"


def forecast_topic(house: str, model: str) -> str:
    return f"{ROOT}/{house}/forecast/{model}"


def metrics_topic(house: str, model: str) -> str:
    return f"{ROOT}/{house}/metrics/{model}"


def status_topic(node: str) -> str:
    return f"{ROOT}/status/{node}"


def progress_topic(node: str) -> str:
    return f"{ROOT}/progress/{node}"


def house_ids(count: int) -> list[str]:
    """The ids of the houses a simulator replays: h000, h001, ..."""
    return [f"h{k:03d}" for k in range(count)]


def house_filter(houses: list[str] | None, leaf: str) -> list[str]:
    """Subscription filters for ``leaf`` ("reading", "forecast/+", ...) of some or all houses."""
    if not houses:
        return [f"{ROOT}/+/{leaf}"]
    return [f"{ROOT}/{h}/{leaf}" for h in houses]


ALL_READINGS = f"{ROOT}/+/reading"
ALL_ENDS = f"{ROOT}/+/end"
ALL_FORECASTS = f"{ROOT}/+/forecast/+"
ALL_METRICS = f"{ROOT}/+/metrics/+"
ALL_STATUS = f"{ROOT}/status/+"


#: Why a node rejects a retained message on any other topic than a node status.
NOT_RETAINED = "retained, but only node statuses are retained (docs/contract.md)"


def may_be_retained(topic: str) -> bool:
    """Only node statuses are retained; a retained reading, end or forecast would be
    delivered again to every new subscriber (a stale or forged value in every new run)."""
    return topic.startswith(f"{ROOT}/status/")


def parse_topic(topic: str) -> tuple[str, str, str | None]:
    """Split a topic into (kind, house_or_node, model); raises MessageError if foreign."""
    parts = topic.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != ROOT:
        raise MessageError(f"not a wattcast topic: {topic[:120]!r}")
    if parts[2] in ("status", "progress") and len(parts) == 4:
        return parts[2], parts[3], None
    house = parts[2]
    if len(parts) == 4 and parts[3] in ("reading", "end"):
        return parts[3], house, None
    if len(parts) == 5 and parts[3] in ("forecast", "metrics"):
        return parts[3], house, parts[4]
    raise MessageError(f"unknown wattcast topic: {topic[:120]!r}")


# ------------------------------------------------------------------------- validation

#: ids (houses, nodes) seen valid: a node sees the same few over and over (bounded)
_VALID_IDS: set[str] = set()


def _check_id(name: str, value: Any) -> str:
    if type(value) is str and value in _VALID_IDS:
        return value
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise MessageError(f"{name} must be 1-64 characters of [A-Za-z0-9_.-], got {value!r:.80}")
    if len(_VALID_IDS) < 4096:
        _VALID_IDS.add(value)
    return value


# The number checks of every payload; also used for other untrusted JSON (a predictor's saved state).

def check_int(name: str, value: Any, lo: int = 0, hi: int = 2**53) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise MessageError(f"{name} out of range [{lo}, {hi}]: {value}")
    return value


def check_float(name: str, value: Any, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MessageError(f"{name} must be a number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise MessageError(f"{name} is out of range: an integer of {len(str(value))} digits") from None
    if not math.isfinite(value):
        raise MessageError(f"{name} must be finite, got {value}")
    if not lo <= value <= hi:
        raise MessageError(f"{name} out of range [{lo}, {hi}]: {value}")
    return value


#: The run of a message that names none (a producer older than run ids, or one without replays).
DEFAULT_RUN = "default"


def new_run_id(now: float | None = None) -> str:
    """A fresh run id: the UTC start time and 6 random hex digits (``20261202T150200Z-3fa9c1``);
    ids sort by start time and two simulators started in the same second still differ."""
    import secrets
    import time as _time

    stamp = _time.strftime("%Y%m%dT%H%M%SZ", _time.gmtime(_time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def check_run(value: Any) -> str:
    """A run id as the contract allows it (1-64 characters of [A-Za-z0-9_.-]); MessageError if not."""
    return _check_id("run", value)


def _check_ts(name: str, value: Any) -> int:
    return check_int(name, value, _TS_MIN, _TS_MAX)


#: the largest finite float: the upper bound of fields that have none (an infinite bound
#: would let infinity through the fast path of _set_floats)
_FLOAT_MAX = sys.float_info.max


def _set_floats(obj: Any, names: tuple[str, ...], lo: float, hi: float) -> None:
    """Validate float fields of a frozen dataclass in place (ints become floats).

    The common case, a float inside the range, costs one type check and a chained
    comparison; NaN fails the comparison and takes the full check, and so do
    infinities because the bounds are finite (:data:`_FLOAT_MAX` for "no bound").
    """
    for name in names:
        value = getattr(obj, name)
        if not (type(value) is float and lo <= value <= hi):
            object.__setattr__(obj, name, check_float(name, value, lo, hi))


def _check_model(value: Any) -> str:
    if value not in MODELS:
        raise MessageError(f"unknown model {value!r:.80}; known: {', '.join(MODELS)}")
    return value


def parse_json(text: str) -> Any:
    """Strict JSON: NaN and Infinity are refused, and so is nesting too deep to parse (MessageError)."""
    try:
        return _DECODER.decode(text)
    except MessageError:
        raise
    except (ValueError, RecursionError) as exc:
        raise MessageError(f"invalid JSON: {exc}") from None


def _load(payload: bytes | str) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes | bytearray) else payload
    except UnicodeDecodeError as exc:
        raise MessageError(f"invalid JSON: {exc}") from None
    obj = parse_json(text)
    if not isinstance(obj, dict):
        raise MessageError(f"payload must be a JSON object, got {type(obj).__name__}")
    return obj


def _reject_constant(name: str) -> None:
    raise MessageError(f"{name} is not allowed in a payload")


# One decoder for every payload (json.loads with options builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


class _Payload:
    """JSON round-trip shared by every message type."""

    _required: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if value is not None:
                out[name] = dict(value) if isinstance(value, dict) else value
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_json(cls, payload: bytes | str):
        return cls.from_dict(_load(payload))

    @classmethod
    def from_dict(cls, obj: dict[str, Any]):
        try:  # the common case: exactly the fields of cls
            return cls(**obj)  # __post_init__ validates
        except TypeError:  # a missing field, or fields this version does not know (ignored)
            pass
        names = _field_names(cls)
        missing = [k for k in cls._required if k not in obj]
        if missing:
            raise MessageError(f"{cls.__name__} is missing {', '.join(missing)}")
        return cls(**{k: v for k, v in obj.items() if k in names})


# --------------------------------------------------------------------------- payloads

READING_FIELDS = (
    "global_active_power",
    "global_reactive_power",
    "voltage",
    "global_intensity",
    "sub_metering_1",
    "sub_metering_2",
    "sub_metering_3",
)


#: The range of every measurement of a reading (what a data file's values are checked against).
READING_MIN, READING_MAX = -1e6, 1e6
#: The range of event timestamps (unix seconds): 1990-01-01 .. 2100-01-01.
TS_MIN, TS_MAX = _TS_MIN, _TS_MAX


@dataclass(frozen=True, slots=True)
class Reading(_Payload):
    """One meter reading: a minute of the UCI data set (kW, V, A, Wh)."""

    house: str
    seq: int
    ts: int
    global_active_power: float
    global_reactive_power: float
    voltage: float
    global_intensity: float
    sub_metering_1: float
    sub_metering_2: float
    sub_metering_3: float
    sent_at: float | None = None
    #: the replay this message belongs to (keyword-only; absent in a payload: :data:`DEFAULT_RUN`)
    run: str = field(default=DEFAULT_RUN, kw_only=True)

    _required: ClassVar[tuple[str, ...]] = ("house", "seq", "ts", *READING_FIELDS)

    def __post_init__(self) -> None:
        _check_id("run", self.run)
        _check_id("house", self.house)
        check_int("seq", self.seq)
        _check_ts("ts", self.ts)
        _set_floats(self, READING_FIELDS, READING_MIN, READING_MAX)
        if self.sent_at is not None:
            _set_floats(self, ("sent_at",), 0.0, _FLOAT_MAX)

    @property
    def topic(self) -> str:
        return reading_topic(self.house)


@dataclass(frozen=True, slots=True)
class EndOfStream(_Payload):
    """The simulator has published every reading of ``house``: ``readings`` of them, last ``last_seq``."""

    house: str
    readings: int
    last_seq: int
    last_ts: int
    #: the replay this message belongs to (keyword-only; absent in a payload: :data:`DEFAULT_RUN`)
    run: str = field(default=DEFAULT_RUN, kw_only=True)

    _required: ClassVar[tuple[str, ...]] = ("house", "readings", "last_seq", "last_ts")

    def __post_init__(self) -> None:
        _check_id("run", self.run)
        _check_id("house", self.house)
        check_int("readings", self.readings)
        check_int("last_seq", self.last_seq)
        _check_ts("last_ts", self.last_ts)

    @property
    def topic(self) -> str:
        return end_topic(self.house)


@dataclass(frozen=True, slots=True)
class Forecast(_Payload):
    """Forecast of Global Active Power (kW) at ``target_ts``, issued after the reading at ``issued_at``."""

    house: str
    model: str
    model_version: str
    seq: int
    issued_at: int
    target_ts: int
    value: float
    reading_sent_at: float | None = None
    #: the replay this message belongs to (keyword-only; absent in a payload: :data:`DEFAULT_RUN`)
    run: str = field(default=DEFAULT_RUN, kw_only=True)

    _required: ClassVar[tuple[str, ...]] = (
        "house", "model", "model_version", "seq", "issued_at", "target_ts", "value",
    )

    def __post_init__(self) -> None:
        _check_id("run", self.run)
        _check_id("house", self.house)
        _check_model(self.model)
        if not isinstance(self.model_version, str) or not 0 < len(self.model_version) <= 64:
            raise MessageError("model_version must be a string of 1-64 characters")
        check_int("seq", self.seq)
        _check_ts("issued_at", self.issued_at)
        _check_ts("target_ts", self.target_ts)
        if self.target_ts <= self.issued_at:
            raise MessageError("target_ts must be after issued_at")
        _set_floats(self, ("value",), -1e6, 1e6)
        if self.reading_sent_at is not None:
            _set_floats(self, ("reading_sent_at",), 0.0, _FLOAT_MAX)

    @property
    def topic(self) -> str:
        return forecast_topic(self.house, self.model)


@dataclass(frozen=True, slots=True)
class Metrics(_Payload):
    """Scores of one model for one house, as of event time ``as_of``."""

    house: str
    model: str
    as_of: int
    n: int
    mse: float
    rmse: float
    mae: float
    rolling_n: int
    rolling_mse: float
    window_s: int
    unmatched: int
    pending: int
    #: the replay this message belongs to (keyword-only; absent in a payload: :data:`DEFAULT_RUN`)
    run: str = field(default=DEFAULT_RUN, kw_only=True)

    _required: ClassVar[tuple[str, ...]] = (
        "house", "model", "as_of", "n", "mse", "rmse", "mae",
        "rolling_n", "rolling_mse", "window_s", "unmatched", "pending",
    )

    def __post_init__(self) -> None:
        _check_id("run", self.run)
        _check_id("house", self.house)
        _check_model(self.model)
        _check_ts("as_of", self.as_of)
        for name in ("n", "rolling_n", "window_s", "unmatched", "pending"):
            check_int(name, getattr(self, name))
        for name in ("mse", "rmse", "mae", "rolling_mse"):
            object.__setattr__(self, name, check_float(name, getattr(self, name), 0.0))

    @property
    def topic(self) -> str:
        return metrics_topic(self.house, self.model)


STATES = ("online", "offline")
#: A running node publishes its status every few seconds (2 s); a retained ``online`` older
#: than this is what a node said last, maybe in an earlier run, not proof that it is there.
FRESH_STATUS_S = 10.0


@dataclass(frozen=True, slots=True)
class Status(_Payload):
    """Retained liveness of a node; the broker publishes ``offline`` as its last will."""

    node: str
    state: str
    role: str
    ts: float | None = None
    #: the node's counters (received, published, malformed, ...), for monitoring
    counters: dict[str, int] | None = None

    _required: ClassVar[tuple[str, ...]] = ("node", "state", "role")

    def __post_init__(self) -> None:
        _check_id("node", self.node)
        if self.state not in STATES:
            raise MessageError(f"state must be one of {STATES}, got {self.state!r:.40}")
        _check_id("role", self.role)
        if self.ts is not None:
            object.__setattr__(self, "ts", check_float("ts", self.ts, 0.0))
        if self.counters is not None:
            if not isinstance(self.counters, dict) or len(self.counters) > 32:
                raise MessageError("counters must be an object of at most 32 entries")
            for key, value in self.counters.items():
                _check_id("counter name", key)
                check_int(f"counter {key}", value)

    @property
    def topic(self) -> str:
        return status_topic(self.node)


@dataclass(frozen=True, slots=True)
class Progress(_Payload):
    """How far ``node`` has handled the reading stream: the newest reading it handled is ``seq`` of ``house``.

    Readings arrive in the order the simulator published them (minute by minute, the
    houses in a fixed order), so this one reading tells how far every house is done.
    Published (QoS 0, not retained) after each handled batch; a max-speed simulator
    paces itself on it.  ``complete``: the newest minute up to which the node holds every
    reading of the ``houses`` houses it has seen and every model's forecast issued after
    them, with no hole (-1: none yet); after a broker restart the simulator re-sends from
    the minute after it.
    """

    node: str
    house: str
    seq: int
    complete: int | None = None
    houses: int | None = None
    #: the replay this message belongs to (keyword-only; absent in a payload: :data:`DEFAULT_RUN`)
    run: str = field(default=DEFAULT_RUN, kw_only=True)

    _required: ClassVar[tuple[str, ...]] = ("node", "house", "seq")

    def __post_init__(self) -> None:
        _check_id("run", self.run)
        _check_id("node", self.node)
        _check_id("house", self.house)
        check_int("seq", self.seq)
        if self.complete is not None:
            check_int("complete", self.complete, lo=-1)
        if self.houses is not None:
            check_int("houses", self.houses)

    @property
    def topic(self) -> str:
        return progress_topic(self.node)


KINDS: dict[str, type[_Payload]] = {
    "reading": Reading,
    "end": EndOfStream,
    "forecast": Forecast,
    "metrics": Metrics,
    "status": Status,
    "progress": Progress,
}


def decode(topic: str, payload: bytes | str):
    """Parse any wattcast message; checks that the payload agrees with its topic."""
    kind, key, model = parse_topic(topic)
    msg = KINDS[kind].from_json(payload)
    if kind in ("status", "progress"):
        if msg.node != key:
            raise MessageError(f"{kind} of node {msg.node!r} on topic of {key!r}")
    elif msg.house != key:
        raise MessageError(f"message of house {msg.house!r} on topic of house {key!r}")
    if model is not None and msg.model != model:
        raise MessageError(f"message of model {msg.model!r} on topic of model {model!r}")
    return msg
