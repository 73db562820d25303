"""The JSON Schemas of the contract (wattcast/schemas/*.json) against the reference decoder.

* every schema is a valid draft 2020-12 schema naming exactly the fields of its
  message class, with the same required ones;
* real messages of every kind, captured by a raw MQTT subscriber during a short
  ``wattcast run``, validate;
* invalid payloads are rejected by both the schema and ``messages.decode``;
  the few rules JSON Schema cannot state are rejected by the decoder (documented
  in docs/contract.md);
* the examples of the schemas and of docs/contract.md validate and decode.
"""

from __future__ import annotations

import copy
import json
import math
import os
import queue
import re
import subprocess
import sys
import time

import msgspec
import pytest
from helpers import REPO

jsonschema = pytest.importorskip("jsonschema")


from wattcast import contract as messages  # noqa: E402
from wattcast.contract import KINDS, MessageError, decode  # noqa: E402
from wattcast.contract.schema import differing, render  # noqa: E402

SCHEMA_DIR = REPO / "wattcast" / "schemas"
TOPICS = {
    "reading": "wattcast/v1/{house}/reading",
    "end": "wattcast/v1/{house}/end",
    "forecast": "wattcast/v1/{house}/forecast/{model}",
    "metrics": "wattcast/v1/{house}/metrics/{model}",
    "status": "wattcast/v1/status/{node}",
    "progress": "wattcast/v1/progress/{node}",
}


def load_schema(kind: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{kind}.json").read_text())


@pytest.fixture(scope="module")
def validators() -> dict[str, jsonschema.Draft202012Validator]:
    return {kind: jsonschema.Draft202012Validator(load_schema(kind)) for kind in KINDS}


def topic_of(kind: str, obj: dict) -> str:
    return TOPICS[kind].format(house=obj.get("house", "h000"), model=obj.get("model", "lstm"), node=obj.get("node", "n"))


def example(kind: str) -> dict:
    return copy.deepcopy(load_schema(kind)["examples"][0])


# ------------------------------------------------------------------------ the schemas


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_schema_is_valid_and_names_the_fields_of_its_message(kind):
    schema = load_schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is True  # forward compatible: new members are ignored
    cls = KINDS[kind]
    assert set(schema["properties"]) == {f.name for f in msgspec.structs.fields(cls)}
    assert sorted(schema["required"]) == sorted(f.name for f in msgspec.structs.fields(cls) if f.required)
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(f"{k}.json" for k in KINDS)


def test_the_committed_schemas_are_the_generated_ones(tmp_path):
    """The payload declarations are the one source: a schema edited by hand, or a declaration changed
    without ``python -m wattcast.contract.schema --write``, fails here."""
    assert differing() == []
    for kind in KINDS:
        (tmp_path / f"{kind}.json").write_text(render(kind))
    edited = json.loads(render("metrics"))
    edited["properties"]["rmse"].pop("minimum")  # a bound that drifted
    (tmp_path / "metrics.json").write_text(json.dumps(edited, indent=2) + "\n")
    assert differing(tmp_path) == ["metrics"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_schema_examples_validate_and_decode(kind, validators):
    for obj in load_schema(kind)["examples"]:
        validators[kind].validate(obj)
        msg = decode(topic_of(kind, obj), json.dumps(obj))
        assert isinstance(msg, KINDS[kind])
        # Forward compatibility: an unknown member is accepted by both.
        validators[kind].validate({**obj, "added_in_v1_5": [1, 2]})
        decode(topic_of(kind, obj), json.dumps({**obj, "added_in_v1_5": [1, 2]}))


def test_a_model_name_is_data_an_id_not_a_closed_list():
    for kind in ("forecast", "metrics"):
        model = load_schema(kind)["properties"]["model"]
        assert "enum" not in model and model["pattern"] == messages.payloads.ID_PATTERN


# ---------------------------------------------------- invalid payloads: both reject them

INVALID = [
    ("reading", "missing seq", lambda o: o.pop("seq")),
    ("reading", "missing the forecast target", lambda o: o.pop("global_active_power")),
    ("reading", "voltage as a string", lambda o: o.update(voltage="236.5")),
    ("reading", "house with a slash", lambda o: o.update(house="h/0")),
    ("reading", "house as a list", lambda o: o.update(house=["h000"])),
    ("reading", "house as a number", lambda o: o.update(house=7)),
    ("reading", "house of 65 characters", lambda o: o.update(house="h" * 65)),
    ("reading", "empty house", lambda o: o.update(house="")),
    ("reading", "house starting with a dot", lambda o: o.update(house=".h")),
    ("reading", "seq as a string", lambda o: o.update(seq="1")),
    ("reading", "negative seq", lambda o: o.update(seq=-1)),
    ("reading", "seq as a boolean", lambda o: o.update(seq=True)),
    ("reading", "seq with a fraction", lambda o: o.update(seq=1.5)),
    ("reading", "ts before 1990", lambda o: o.update(ts=0)),
    ("reading", "ts after 2100", lambda o: o.update(ts=4102444801)),
    ("reading", "measurement as a string", lambda o: o.update(voltage="236.5")),
    ("reading", "measurement as a boolean", lambda o: o.update(global_active_power=False)),
    ("reading", "measurement above 1e6", lambda o: o.update(global_active_power=1e7)),
    ("reading", "negative sent_at", lambda o: o.update(sent_at=-1.0)),
    ("end", "missing last_ts", lambda o: o.pop("last_ts")),
    ("end", "readings as a float", lambda o: o.update(readings=4099.5)),
    ("forecast", "model name with a slash", lambda o: o.update(model="arima/2")),
    ("forecast", "empty model_version", lambda o: o.update(model_version="")),
    ("forecast", "model_version of 65 characters", lambda o: o.update(model_version="v" * 65)),
    ("forecast", "value as a string", lambda o: o.update(value="1.2")),
    ("forecast", "value above 1e6", lambda o: o.update(value=1e6 + 1)),
    ("forecast", "negative reading_sent_at", lambda o: o.update(reading_sent_at=-0.5)),
    ("forecast", "missing value", lambda o: o.pop("value")),
    ("forecast", "target_ts before 1990", lambda o: o.update(target_ts=1)),
    ("metrics", "negative mse", lambda o: o.update(mse=-0.1)),
    ("metrics", "n as a float", lambda o: o.update(n=3.5)),
    ("metrics", "missing pending", lambda o: o.pop("pending")),
    ("metrics", "model name with a space", lambda o: o.update(model="my model")),
    ("status", "unknown state", lambda o: o.update(state="busy")),
    ("status", "missing role", lambda o: o.pop("role")),
    ("status", "counters as a list", lambda o: o.update(counters=[1, 2])),
    ("status", "negative counter", lambda o: o.update(counters={"received": -1})),
    ("status", "counter as a float", lambda o: o.update(counters={"received": 1.5})),
    ("status", "counter name with a space", lambda o: o.update(counters={"bad name": 1})),
    ("status", "33 counters", lambda o: o.update(counters={f"c{i}": i for i in range(33)})),
    ("progress", "missing seq", lambda o: o.pop("seq")),
    ("progress", "negative seq", lambda o: o.update(seq=-1)),
    ("progress", "house with a slash", lambda o: o.update(house="h/0")),
]


@pytest.mark.parametrize("kind,why,mutate", INVALID, ids=[f"{k}: {w}" for k, w, _ in INVALID])
def test_invalid_payload_is_rejected_by_schema_and_decoder(kind, why, mutate, validators):
    obj = example(kind)
    topic = topic_of(kind, obj)
    mutate(obj)
    assert not validators[kind].is_valid(obj), f"schema accepts {why}"
    with pytest.raises(MessageError):
        decode(topic, json.dumps(obj))


def test_decoded_numbers_have_their_fields_types():
    obj = example("reading") | {"voltage": 236, "global_active_power": 0, "sent_at": 1}
    reading = decode(topic_of("reading", obj), json.dumps(obj))
    assert type(reading.voltage) is float and type(reading.global_active_power) is float
    assert type(reading.sent_at) is float and reading.voltage == 236.0
    obj = example("forecast") | {"value": 2}
    assert type(decode(topic_of("forecast", obj), json.dumps(obj)).value) is float


@pytest.mark.parametrize(
    "kind,member,literal",
    [
        ("reading", "sent_at", "1e999"),  # JSON has no infinity, but this literal parses as one
        ("reading", "voltage", "-1e999"),
        ("forecast", "reading_sent_at", "1e999"),
        ("forecast", "value", "1e999"),
        ("reading", "voltage", "9" * 400),  # too large for a float
        ("metrics", "mse", "9" * 400),
    ],
)
def test_numbers_beyond_floats_are_rejected_with_a_reason(kind, member, literal):
    obj = example(kind)
    obj[member] = 12345.5
    payload = json.dumps(obj).replace("12345.5", literal)
    with pytest.raises(MessageError, match=member):
        decode(topic_of(kind, obj), payload)


def test_a_payload_nested_too_deep_is_a_counted_rejection_not_a_crash():
    # 4,000 bytes, under the size limit; the parser gives up with RecursionError, which escaped before
    with pytest.raises(MessageError, match="Expected `object`"):
        decode("wattcast/v1/h000/reading", "[" * 2000 + "]" * 2000)
    # nested inside a member nobody knows: "invalid JSON" when the parser runs out of recursion, or the
    # missing fields once it has skipped the member (a process whose recursion limit was raised, e.g. by
    # an earlier import of TensorFlow in the same test session); a rejection either way
    with pytest.raises(MessageError, match="invalid JSON|missing required field"):
        decode("wattcast/v1/h000/reading", '{"x":' + "[" * 1990 + "]" * 1990 + "}")


def test_non_objects_are_rejected_by_every_schema_and_the_decoder(validators):
    for kind, validator in validators.items():
        for payload in ([], "x", 1, None):
            assert not validator.is_valid(payload)
            with pytest.raises(MessageError):
                decode(TOPICS[kind].format(house="h", model="lstm", node="n"), json.dumps(payload))


# Rules JSON Schema cannot state; the reference decoder enforces them (docs/contract.md says so).
BEYOND_SCHEMA = [
    ("reading", "an integer written as 7.0", lambda o: o.update(seq=7.0)),
    ("forecast", "target_ts not after issued_at", lambda o: o.update(target_ts=o["issued_at"])),
    ("reading", "a payload over 4096 bytes", lambda o: o.update(padding="x" * 4096)),
    ("forecast", "a model that differs from the topic's", lambda o: o.update(model="linear")),
    ("reading", "a house that differs from the topic's", lambda o: o.update(house="h999")),
    ("progress", "a node that differs from the topic's", lambda o: o.update(node="predictor-lstm")),
]


@pytest.mark.parametrize("kind,why,mutate", BEYOND_SCHEMA, ids=[w for _, w, _ in BEYOND_SCHEMA])
def test_rules_beyond_json_schema_are_enforced_by_the_decoder(kind, why, mutate, validators):
    obj = example(kind)
    topic = topic_of(kind, obj)
    mutate(obj)
    assert validators[kind].is_valid(obj)
    with pytest.raises(MessageError):
        decode(topic, json.dumps(obj))


def test_the_documented_examples_validate_and_decode(validators):
    text = (REPO / "docs" / "contract.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    assert blocks, "docs/contract.md shows no JSON example"
    seen = set()
    for block in blocks:
        obj = json.loads(block)
        kinds = [k for k, v in validators.items() if v.is_valid(obj)]
        assert len(kinds) == 1, f"example valid as {kinds or 'nothing'}: {block}"
        decode(topic_of(kinds[0], obj), block)
        seen.add(kinds[0])
    assert seen == set(KINDS), f"no example of {set(KINDS) - seen}"


# --------------------------------------------------------- real messages from a real run


@pytest.mark.slow
def test_messages_captured_from_a_run_follow_the_schemas(broker, tmp_path, validators):
    import paho.mqtt.client as mqtt

    from wattcast.node import status as node_status

    captured: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"schema-spy-{os.getpid()}", protocol=mqtt.MQTTv311)
    subscribed = queue.Queue()
    client.on_message = lambda c, u, m: captured.put((m.topic, bytes(m.payload)))
    client.on_subscribe = lambda c, u, mid, rc, p: subscribed.put(mid)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe("wattcast/v1/#", qos=1)
        subscribed.get(timeout=5)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "wattcast",
                "run",
                "--broker",
                broker.url,
                "--limit",
                "200",
                "--json",
                "--quiet",
                "--store",
                str(tmp_path / "w.db"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=180,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        # the run's last messages are the empty retained payloads clearing its 6 nodes' statuses
        got: list = []
        deadline = time.monotonic() + 60
        while sum(1 for _t, p in got if not p) < 6 and time.monotonic() < deadline:
            try:
                got.append(captured.get(timeout=0.5))
            except queue.Empty:
                pass
        for item in got[::-1]:
            captured.queue.appendleft(item)
    finally:
        client.disconnect()
        client.loop_stop()

    by_kind: dict[str, list] = {k: [] for k in KINDS}
    cleared = set()
    while not captured.empty():
        topic, payload = captured.get()
        kind = messages.parse_topic(topic)[0]
        if not payload:  # an empty retained payload removes a retained status (docs/contract.md)
            assert kind == "status", topic
            cleared.add(topic)
            continue
        obj = json.loads(payload)
        errors = sorted(validators[kind].iter_errors(obj), key=str)
        assert not errors, f"{topic} {payload[:200]!r}: {errors[0].message}"
        decode(topic, payload)
        by_kind[kind].append(obj)
    assert len(by_kind["reading"]) == 200
    assert len(by_kind["end"]) == 1
    assert len(by_kind["forecast"]) >= 4 * 199
    assert by_kind["metrics"] and by_kind["status"]
    # the collector's progress paced the replay: it got to the last reading
    assert by_kind["progress"] and max(p["seq"] for p in by_kind["progress"]) == 199
    assert {s["state"] for s in by_kind["status"]} == {"online", "offline"}
    # the run clears the retained statuses of its nodes at the end
    assert cleared == {messages.status_topic(s["node"]) for s in by_kind["status"]}, cleared
    assert {m["model"] for m in by_kind["metrics"]} == set(messages.MODELS)
    assert all(math.isfinite(m["mse"]) for m in by_kind["metrics"])
    # The last will a node leaves with the broker (state offline, no counters).
    will = node_status("predictor-lstm", "predictor", "offline")
    validators["status"].validate(json.loads(will.to_json()))
