"""An outside predictor: plain paho-mqtt and json, no wattcast import, scored in a wattcast run.

It speaks only the MQTT contract (docs/contract.md): it announces itself with a retained
status, reads every reading, and publishes a forecast of GAP 5 minutes ahead after each
(here: the newest reading, from a house's second reading on, like the built-in models).

    wattcast run --external-model outside            # prints where the login of predictor-outside is
    set -a; . runs/<stamp>/broker/predictor-outside.env; set +a
    python docs/examples/outside_predictor.py outside

Environment: WATTCAST_BROKER (mqtt://host:port), WATTCAST_MQTT_USERNAME, WATTCAST_MQTT_PASSWORD.
"""

from __future__ import annotations

import json
import os
import sys
import time
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

MODEL = sys.argv[1] if len(sys.argv) > 1 else "outside"
USER = os.environ.get("WATTCAST_MQTT_USERNAME", f"predictor-{MODEL}")
STATUS = f"wattcast/v1/status/{USER}"
url = urlsplit(os.environ.get("WATTCAST_BROKER", "mqtt://127.0.0.1:1883"))
seen: dict[tuple[str, str], int] = {}  # readings seen per (run, house)


def status(state: str) -> str:
    return json.dumps({"node": USER, "state": state, "role": "predictor", "ts": time.time(), "model": MODEL})


def on_connect(client, userdata, flags, reason_code, properties):
    client.subscribe([("wattcast/v1/+/reading", 1)])
    client.publish(STATUS, status("online"), qos=1, retain=True)


def on_message(client, userdata, msg):
    try:
        r = json.loads(msg.payload)
        key = (r.get("run", "default"), r["house"])
        seen[key] = seen.get(key, 0) + 1
        if seen[key] < 2:
            return
        forecast = {
            "run": key[0],
            "house": r["house"],
            "model": MODEL,
            "model_version": f"{MODEL}-1",
            "seq": r["seq"],
            "issued_at": r["ts"],
            "target_ts": r["ts"] + 300,
            "value": r["global_active_power"],
        }
        client.publish(f"wattcast/v1/{r['house']}/forecast/{MODEL}", json.dumps(forecast), qos=1)
    except (ValueError, KeyError, TypeError) as exc:  # one bad message never stops the node
        print(f"{USER}: skipped a message on {msg.topic}: {exc}", file=sys.stderr)


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=USER)
client.username_pw_set(USER, os.environ.get("WATTCAST_MQTT_PASSWORD"))
client.will_set(STATUS, json.dumps({"node": USER, "state": "offline", "role": "predictor"}), qos=1, retain=True)
client.on_connect, client.on_message = on_connect, on_message
client.connect(url.hostname or "127.0.0.1", url.port or 1883)
try:
    client.loop_forever()
except KeyboardInterrupt:
    client.publish(STATUS, status("offline"), qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
