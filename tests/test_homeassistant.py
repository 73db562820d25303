"""Home Assistant MQTT discovery: the configs' keys, what they point at, and a real broker keeping them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
from helpers import REPO

from collector.node import CollectorNode
from wattcast.broker import PrivateBroker
from wattcast.bus import BrokerConfig, MemoryHub, Message, MqttBus, topic_matches
from wattcast.contract import ALL_STATUS, MODELS, Forecast, Reading, decode, parse_topic
from wattcast.homeassistant import discovery_messages, removal_messages
from wattcast.store import Store

T0 = 1_196_680_920

#: The keys Home Assistant documents for an MQTT sensor (https://www.home-assistant.io/integrations/sensor.mqtt/)
#: that wattcast uses, and those of a device and an origin.
SENSOR_KEYS = {
    "name",
    "unique_id",
    "default_entity_id",
    "state_topic",
    "value_template",
    "device_class",
    "unit_of_measurement",
    "state_class",
    "suggested_display_precision",
    "availability_topic",
    "availability_template",
    "payload_available",
    "payload_not_available",
    "device",
    "origin",
}
DEVICE_KEYS = {"identifiers", "name", "manufacturer", "model", "sw_version", "hw_version", "connections"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
#: Home Assistant's units for device_class power
POWER_UNITS = {"mW", "W", "kW", "MW", "GW", "TW", "BTU/h"}


def test_every_config_uses_documented_keys_and_points_at_the_contracts_topics():
    seen_ids = set()
    for house in ("h000", "h001"):
        messages = discovery_messages("homeassistant", house, MODELS)
        assert len(messages) == 1 + len(MODELS)
        for topic, payload in messages:
            assert re.fullmatch(r"homeassistant/sensor/wattcast_h00\d/[a-z0-9_]+/config", topic), topic
            config = json.loads(payload)
            assert set(config) <= SENSOR_KEYS, set(config) - SENSOR_KEYS
            assert set(config["device"]) <= DEVICE_KEYS and set(config["origin"]) <= ORIGIN_KEYS
            assert config["device_class"] == "power" and config["unit_of_measurement"] in POWER_UNITS
            assert config["state_class"] == "measurement"
            assert config["unique_id"] not in seen_ids
            seen_ids.add(config["unique_id"])
            assert config["default_entity_id"] == f"sensor.{config['unique_id']}"
            assert config["device"]["identifiers"] == [f"wattcast_{house}"]
            # the state topic is the contract's, and the template reads one of its payload's members
            kind, key, model = parse_topic(config["state_topic"])
            assert key == house and kind in ("reading", "forecast")
            member = re.fullmatch(r"\{\{ value_json\.(\w+) \}\}", config["value_template"]).group(1)
            fields = Reading.__struct_fields__ if kind == "reading" else Forecast.__struct_fields__
            assert member in fields and (member == "global_active_power" or member == "value")
            # available while the node publishing that topic says so in its status
            assert topic_matches(ALL_STATUS, config["availability_topic"])
            node = config["availability_topic"].rsplit("/", 1)[1]
            assert node == ("simulator" if kind == "reading" else f"predictor-{model}")
            assert config["availability_template"] == "{{ value_json.state }}"
            assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
    assert [p for _, p in removal_messages("homeassistant", "h000", MODELS)] == [b""] * (1 + len(MODELS))


def test_the_collector_announces_a_house_once_on_its_first_reading(tmp_path):
    hub = MemoryHub()
    bus = hub.connect()
    store = Store(tmp_path / "s.db")
    try:
        node = CollectorNode(bus, store, ("persistence", "linear"), ha_prefix="homeassistant")
        for seq in range(3):
            for house in ("h000", "h001"):
                r = Reading(house, seq, T0 + 60 * seq, 1.0, 0.1, 240.0, 4.0, 0.0, 1.0, 17.0)
                node.handle([Message(r.topic, r.to_json())])
        got = [m for m in bus.published if m.topic.startswith("homeassistant/")]
        expected = [
            t for h in ("h000", "h001") for t, _ in discovery_messages("homeassistant", h, ("persistence", "linear"))
        ]
        assert sorted(m.topic for m in got) == sorted(expected)  # each once
        assert all(m.retain for m in got)
        late = hub.connect()  # Home Assistant starting later gets them (retained)
        late.subscribe("homeassistant/#")
        assert late.inbox.qsize() == len(expected)
    finally:
        store.close()


@pytest.mark.integration
def test_announced_sensors_stay_on_the_broker_until_removed(tmp_path):
    broker = PrivateBroker(workdir=tmp_path / "broker")
    if broker.kind != "mosquitto":
        pytest.skip("needs the mosquitto binary (apt-get install mosquitto)")
    broker.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}

    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "wattcast", "ha-discovery", "--broker", broker.url, "--houses", "2", *args]
        return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)

    def retained_configs() -> dict[str, dict]:
        """What a new subscriber (Home Assistant starting) gets: the retained configs, then a sentinel."""
        watcher = MqttBus(BrokerConfig.from_url(broker.url), f"ha-{time.monotonic_ns()}", session=False).connect()
        sender = MqttBus(BrokerConfig.from_url(broker.url), f"ha-s-{time.monotonic_ns()}", session=False).connect()
        try:
            watcher.subscribe("homeassistant/#")
            got: dict[str, dict] = {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                sender.publish("homeassistant/sentinel", b"s")  # not retained: comes after every retained one
                try:
                    m = watcher.inbox.get(timeout=0.5)
                    while m.topic != "homeassistant/sentinel":
                        got[m.topic] = json.loads(m.payload)
                        m = watcher.inbox.get(timeout=5)
                    return got
                except Exception:
                    continue
            raise AssertionError("the sentinel never came")
        finally:
            watcher.close()
            sender.close()

    try:
        out = cli()
        assert out.returncode == 0, out.stderr
        configs = retained_configs()
        assert len(configs) == 2 * (1 + len(MODELS))
        assert {c["device"]["name"] for c in configs.values()} == {"wattcast meter h000", "wattcast meter h001"}
        out = cli("--remove")
        assert out.returncode == 0, out.stderr
        assert retained_configs() == {}
        bad = cli("--house", "not a house", "--remove")
        assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    finally:
        broker.close()


def test_decoders_ignore_discovery_topics():
    # Discovery configs live outside wattcast/v1: no node takes them for a message of its own.
    with pytest.raises(Exception):  # noqa: B017 - MessageError, whatever the wording
        decode("homeassistant/sensor/wattcast_h000/gap/config", b"{}")
