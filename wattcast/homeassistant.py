"""Home Assistant MQTT discovery: every house's actual GAP and each model's forecast as power sensors.

With ``--ha-discovery [PREFIX]`` the collector publishes, retained, on the first reading
of each house, one discovery config per sensor to
``<prefix>/sensor/wattcast_<house>/<object>/config`` (``<object>``: ``gap`` for the
actual reading, ``forecast_<model>`` for a model's +5 min forecast).  Home Assistant
then shows one device per house with those sensors, fed straight from wattcast's own
topics (``state_topic`` + ``value_template``), available while the node that publishes
them says ``online`` in its status.  ``wattcast ha-discovery --remove`` publishes empty
retained payloads to the same topics, which removes the sensors.

Keys as documented for MQTT sensors and discovery
(https://www.home-assistant.io/integrations/sensor.mqtt/,
https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery).
"""

from __future__ import annotations

import json

from wattcast import __version__
from wattcast.contract import forecast_topic, reading_topic, status_topic

DEFAULT_PREFIX = "homeassistant"
#: the node whose status tells whether the actual readings flow
READINGS_NODE = "simulator"


def config_topic(prefix: str, house: str, obj: str) -> str:
    return f"{prefix}/sensor/wattcast_{house}/{obj}/config"


def _object(model: str | None) -> str:
    return "gap" if model is None else f"forecast_{model.replace('-', '_')}"


def sensor_config(house: str, model: str | None) -> dict:
    """The discovery config of a house's actual GAP (``model`` None) or of a model's forecast."""
    obj = _object(model)
    if model is None:
        name, state, value, node = "Global active power", reading_topic(house), "global_active_power", READINGS_NODE
    else:
        name, state, value, node = f"Forecast +5 min ({model})", forecast_topic(house, model), "value", f"predictor-{model}"
    return {
        "name": name,
        "unique_id": f"wattcast_{house}_{obj}",
        # entity id sensor.wattcast_<house>_<object> (object_id is deprecated since Home Assistant 2025.10)
        "default_entity_id": f"sensor.wattcast_{house}_{obj}",
        "state_topic": state,
        "value_template": "{{ value_json." + value + " }}",
        "device_class": "power",
        "unit_of_measurement": "kW",
        "state_class": "measurement",
        "suggested_display_precision": 3,
        "availability_topic": status_topic(node),
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [f"wattcast_{house}"],
            "name": f"wattcast meter {house}",
            "manufacturer": "wattcast",
            "model": "replayed household meter",
        },
        "origin": {"name": "wattcast", "sw_version": __version__},
    }


def discovery_messages(prefix: str, house: str, models: tuple[str, ...] | list[str]) -> list[tuple[str, bytes]]:
    """(topic, retained payload) of every sensor of ``house``."""
    return [
        (config_topic(prefix, house, _object(model)), json.dumps(sensor_config(house, model)).encode())
        for model in (None, *models)
    ]


def removal_messages(prefix: str, house: str, models: tuple[str, ...] | list[str]) -> list[tuple[str, bytes]]:
    """(topic, empty payload): published retained, they remove the sensors."""
    return [(topic, b"") for topic, _ in discovery_messages(prefix, house, models)]
