"""The topic tree of wattcast (``v1`` is the payload schema version)::

wattcast/v1/<house>/reading             Reading        simulator -> all
wattcast/v1/<house>/end                 EndOfStream    simulator -> all
wattcast/v1/<house>/forecast/<model>    Forecast       predictor -> collector, viewers
wattcast/v1/<house>/metrics/<model>     Metrics        collector -> viewers
wattcast/v1/status/<node>               Status         every node (retained, last will)
wattcast/v1/progress/<node>             Progress       collector -> simulator (flow control)
"""

from __future__ import annotations

ROOT = "wattcast/v1"


class MessageError(ValueError):
    """A payload or topic that does not follow the wattcast contract (one-line reason)."""


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
