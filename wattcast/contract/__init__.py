"""The wattcast contract: topics, payloads and the strict codec, declared once.

* :mod:`~wattcast.contract.topics`: the topic tree, subscription filters, the retain rule;
* :mod:`~wattcast.contract.payloads`: every message as a typed msgspec struct (types,
  ranges, descriptions: the one source of the JSON Schemas);
* :mod:`~wattcast.contract.codec`: bytes to messages (validated) and back, and the rules
  a schema cannot state;
* :mod:`~wattcast.contract.schema`: the JSON Schemas generated from the payloads
  (``python -m wattcast.contract.schema --write`` refreshes ``wattcast/schemas/``).

Every reading, end of stream, forecast, metrics and progress message names its
``run``: one replay of the simulator, with an id of its own (optional in ``v1``:
absent, it is :data:`DEFAULT_RUN`).  Per run and house, ``seq`` starts at 0; a second
replay into running nodes is a new run, scored apart.  docs/contract.md explains it
all for people who write their own clients.
"""

from wattcast.contract.codec import (
    check_float,
    check_int,
    check_run,
    decode,
    decode_payload,
    new_run_id,
    parse_json,
)
from wattcast.contract.payloads import (
    DEFAULT_RUN,
    FRESH_STATUS_S,
    HORIZON_S,
    KINDS,
    MAX_PAYLOAD_BYTES,
    MODELS,
    READING_FIELDS,
    READING_MAX,
    READING_MIN,
    STATES,
    TS_MAX,
    TS_MIN,
    EndOfStream,
    Forecast,
    Metrics,
    ModelName,
    Payload,
    Progress,
    Reading,
    State,
    Status,
    model_name,
)
from wattcast.contract.topics import (
    ALL_ENDS,
    ALL_FORECASTS,
    ALL_METRICS,
    ALL_READINGS,
    ALL_STATUS,
    NOT_RETAINED,
    ROOT,
    MessageError,
    end_topic,
    forecast_topic,
    house_filter,
    house_ids,
    may_be_retained,
    metrics_topic,
    parse_topic,
    progress_topic,
    reading_topic,
    status_topic,
)

__all__ = [
    "ALL_ENDS",
    "ALL_FORECASTS",
    "ALL_METRICS",
    "ALL_READINGS",
    "ALL_STATUS",
    "DEFAULT_RUN",
    "FRESH_STATUS_S",
    "HORIZON_S",
    "KINDS",
    "MAX_PAYLOAD_BYTES",
    "MODELS",
    "NOT_RETAINED",
    "READING_FIELDS",
    "READING_MAX",
    "READING_MIN",
    "ROOT",
    "STATES",
    "TS_MAX",
    "TS_MIN",
    "EndOfStream",
    "Forecast",
    "MessageError",
    "Metrics",
    "ModelName",
    "Payload",
    "Progress",
    "Reading",
    "State",
    "Status",
    "check_float",
    "check_int",
    "check_run",
    "decode",
    "decode_payload",
    "end_topic",
    "forecast_topic",
    "house_filter",
    "house_ids",
    "may_be_retained",
    "metrics_topic",
    "model_name",
    "new_run_id",
    "parse_json",
    "parse_topic",
    "progress_topic",
    "reading_topic",
    "status_topic",
]
