"""``wattcast run``'s private broker: nobody without the run's logins can change its scores.

A run at a replay speed slow enough to be attacked (200 readings, ~20 s): once its
nodes are online, a client with no login and a client with the run's viewer login
(``<run>/broker/viewer.env``) send the forgeries that rewrote or ended a run when the
private broker took anonymous clients.  The scores must equal the offline ones.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from msgspec.structs import replace

from wattcast.broker import available_kind
from wattcast.bus import BrokerConfig, MqttBus
from wattcast.contract import EndOfStream, Forecast, Status, end_topic, forecast_topic, reading_topic, status_topic
from wattcast.credentials import password_env_var, read_env_file
from wattcast.data import load_split, to_readings
from wattcast.evaluation import stream_forecasts
from wattcast.forecasters import load_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIMIT = 200
MODELS = ("persistence", "linear")


def _wait_for(what, predicate, proc: subprocess.Popen, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()[1][-2000:]}"
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout:.0f} s")


def _connack(host: str, port: int, username: str | None, password: str | None) -> str:
    """The broker's answer to a CONNECT with this login (paho's reason code as text)."""
    import paho.mqtt.client as mqtt

    answers: queue.Queue = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"intruder-{os.getpid()}", protocol=mqtt.MQTTv311)
    if username is not None:
        c.username_pw_set(username, password)
    c.on_connect = lambda client, u, flags, rc, props: answers.put(str(rc))
    c.connect(host, port)
    c.loop_start()
    try:
        return answers.get(timeout=30)
    finally:
        c.loop_stop()
        c.disconnect()


def test_forgeries_without_a_login_or_as_the_viewer_change_no_score(tmp_path):
    if available_kind("mosquitto") is None:
        pytest.skip("needs the mosquitto binary (apt-get install mosquitto)")
    store = tmp_path / "r" / "w.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wattcast",
            "run",
            "--limit",
            str(LIMIT),
            "--speed",
            "600",
            "--models",
            *MODELS,
            "--json",
            "--store",
            str(store),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    viewer = None
    try:
        viewer_env = store.parent / "broker" / "viewer.env"
        _wait_for("viewer.env", viewer_env.exists, proc)
        assert viewer_env.stat().st_mode & 0o077 == 0, oct(viewer_env.stat().st_mode)
        login = _wait_for(
            "a complete viewer.env", lambda: (v := read_env_file(viewer_env)) and password_env_var("viewer") in v and v, proc
        )
        host, port = login["MQTT_HOST"], int(login["MQTT_PORT"])
        # nodes online: the simulator's retained status says so (the viewer may read statuses)
        viewer = MqttBus(
            BrokerConfig(host, port, "viewer", login[password_env_var("viewer")]), f"viewer-{os.getpid()}", session=False
        ).connect(timeout=30)
        viewer.subscribe(status_topic("simulator"))
        _wait_for("the simulator online", lambda: any(b'"online"' in m.payload for m in _drain(viewer)), proc)

        # -- no login at all: refused
        assert _connack(host, port, None, None) == "Not authorized"
        assert _connack(host, port, "collector", "guessed") == "Not authorized"

        # -- the viewer's forgeries: every one of them is dropped by the ACL
        real = to_readings(load_split().val.iloc[:LIMIT])
        early, late = real[3], real[LIMIT - 1]
        forged = [
            (reading_topic("h000"), replace(early, global_active_power=50.0).to_json()),
            (reading_topic("h000"), replace(late, seq=2**53 - 1).to_json()),
            (reading_topic("h000"), late.to_json()),  # a real reading, sent ahead of the stream
            (end_topic("h000"), EndOfStream("h000", 21, 20, real[20].ts).to_json()),
            (
                forecast_topic("h000", "persistence"),
                Forecast("h000", "persistence", "v1", 150, real[150].ts, real[150].ts + 300, 99.0).to_json(),
            ),
            (
                forecast_topic("h999", "linear"),
                Forecast("h999", "linear", "v1", 0, real[0].ts, real[0].ts + 300, 1.0).to_json(),
            ),
        ]
        for topic, payload in forged:
            viewer.publish(topic, payload, qos=1)
        viewer.publish(
            status_topic("collector"), Status("collector", "online", "collector", time.time()).to_json(), qos=1, retain=True
        )
        viewer.flush(timeout=30)

        out, err = proc.communicate(timeout=600)
    finally:
        if viewer is not None:
            viewer.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    result = json.loads(out)
    val = load_split().val.iloc[:LIMIT]
    for model in MODELS:
        preds, targets = stream_forecasts(load_model(model), val)
        got = result["models"][model]
        assert got["n"] == len(targets) == LIMIT - 6, (model, got)
        assert got["mse"] == pytest.approx(float(np.mean((preds - targets) ** 2)), rel=1e-9), (model, got)
    assert [h["house"] for h in result.get("per_house", [{"house": "h000"}])] == ["h000"]
    import sqlite3

    with sqlite3.connect(store) as db:
        assert db.execute("SELECT DISTINCT house FROM forecasts").fetchall() == [("h000",)]
        assert db.execute("SELECT MAX(global_active_power) FROM readings").fetchone()[0] < 50.0


def _drain(bus: MqttBus) -> list:
    got = []
    while True:
        try:
            got.append(bus.inbox.get_nowait())
        except queue.Empty:
            return got


def test_node_logins_are_not_on_the_command_line(tmp_path):
    """``ps`` shows every user the argv of every process: no password may be there."""
    if available_kind("mosquitto") is None:
        pytest.skip("needs the mosquitto binary (apt-get install mosquitto)")
    store = tmp_path / "r" / "w.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wattcast",
            "run",
            "--limit",
            "100",
            "--speed",
            "600",
            "--models",
            "persistence",
            "--json",
            "--quiet",
            "--store",
            str(store),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        viewer_env = store.parent / "broker" / "viewer.env"
        _wait_for("viewer.env", viewer_env.exists, proc)
        login = _wait_for(
            "a complete viewer.env", lambda: (v := read_env_file(viewer_env)) and password_env_var("viewer") in v and v, proc
        )
        password, url = login[password_env_var("viewer")], f"mqtt://127.0.0.1:{login['MQTT_PORT']}"

        def node_argvs() -> list[str]:
            found = []
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    argv = cmdline.read_bytes().split(b"\0")
                except OSError:
                    continue
                text = b" ".join(argv).decode(errors="replace")
                if url in text and any(f"-m {m}" in text for m in ("collector", "predictor", "simulator")):
                    found.append(text)
            return found if len(found) == 3 else []

        argvs = _wait_for("the three nodes", node_argvs, proc)
        for text in argvs:
            assert "--password" not in text and password not in text, text
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
