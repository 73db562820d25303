"""A private RabbitMQ cluster (wattcast/rabbitmq.py) of our own on loopback, and wattcast's MQTT bus on it:
meters and viewers keep speaking MQTT to RabbitMQ's MQTT plugin (issue 15)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import time

import pytest

from wattcast.bus import BrokerConfig, MqttBus
from wattcast.credentials import ACL_FILE
from wattcast.rabbitmq import RabbitCluster, RabbitError, rabbit_available

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROLE_PASSWORDS = {u: f"{u}-pw" for u in ("simulator", "predictor-lstm", "predictor-gbm", "collector", "viewer")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not rabbit_available():
        pytest.skip("RabbitMQ is not installed (apt-get install rabbitmq-server)")
    users = {"meter": "meter-pw", "watcher": "watcher-pw", "pipeline": "pipeline-pw"}
    c = RabbitCluster(tmp_path_factory.mktemp("rabbit"), size=3, users=users)
    c.start()
    c.add_users_by_role(ROLE_PASSWORDS, ACL_FILE.read_text())  # the deployment's users, limited to their roles
    yield c
    c.close()


def bus(cluster, k: int, user: str, password: str, client_id: str, **kw) -> MqttBus:
    node = cluster.nodes[k]
    return MqttBus(BrokerConfig("127.0.0.1", node.mqtt_port, user, password), client_id, **kw).connect(timeout=60)


def test_three_nodes_form_one_cluster_of_our_own(cluster):
    status = cluster.ctl(cluster.nodes[0], "cluster_status", "--formatter", "json")
    for node in cluster.nodes:
        assert node.name in status
        assert node.amqp_port < 32768 and node.mqtt_port < 32768 and node.dist_port < 32768
        assert node.amqp_port != 5672
    users = cluster.ctl(cluster.nodes[1], "list_users")
    assert "guest" not in users and "wattcast-bootstrap" not in users and "meter" in users


def test_mqtt_published_on_one_node_reaches_a_subscriber_on_another_in_order(cluster):
    viewer = bus(cluster, 2, "watcher", "watcher-pw", "test-viewer", session=False)
    meter = bus(cluster, 0, "meter", "meter-pw", "test-meter", session=False)
    try:
        viewer.subscribe("wattcast/v1/+/reading", qos=1, timeout=30)
        for seq in range(50):
            meter.publish("wattcast/v1/h000/reading", b'{"seq":%d}' % seq, qos=1)
        assert meter.flush(60)
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 50:
            try:
                got.append(viewer.inbox.get(timeout=max(0.1, deadline - time.monotonic())).payload)
            except queue.Empty:
                break
        assert got == [b'{"seq":%d}' % seq for seq in range(50)]
    finally:
        meter.close()
        viewer.close()


def test_no_anonymous_client_and_no_wrong_password(cluster):
    for user, password in ((None, None), ("meter", "wrong"), ("guest", "guest")):
        with pytest.raises(ConnectionError):
            MqttBus(BrokerConfig("127.0.0.1", cluster.nodes[0].mqtt_port, user, password), "intruder").connect(timeout=30)


def wattcast_run(tmp_path, *args: str) -> dict:
    argv = ["--json", "--quiet", "--models", "persistence", "linear", "gbm", "--limit", "300", *args]
    r = subprocess.run(
        [sys.executable, "-m", "wattcast", "run", *argv, "--store", str(tmp_path / f"{len(args)}.db")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_the_pipeline_runs_unchanged_over_the_cluster_with_the_scores_of_mosquitto(cluster, tmp_path):
    """Meters, nodes and viewers speak MQTT to RabbitMQ's MQTT plugin as they do to mosquitto (one login
    for the whole pipeline here: the role ACL is not yet mapped to RabbitMQ's topic permissions)."""
    login = ["--username", "pipeline", "--password", "pipeline-pw"]
    over_rabbit = wattcast_run(tmp_path, "--broker", cluster.nodes[0].mqtt_url, *login)
    on_mosquitto = wattcast_run(tmp_path)
    assert on_mosquitto["broker"]["kind"] == "mosquitto"
    for model in ("persistence", "linear", "gbm"):
        r, m = over_rabbit["models"][model], on_mosquitto["models"][model]
        assert r["n"] == m["n"] == 294, model
        assert r["mse"] == pytest.approx(m["mse"], rel=1e-12), model
    assert over_rabbit["missing"] == [] and over_rabbit["conflicts"] == 0


def test_a_node_killed_leaves_the_others_routing(cluster):
    victim = cluster.nodes[1]
    cluster.kill(victim)
    assert victim not in cluster.running()
    viewer = bus(cluster, 2, "watcher", "watcher-pw", "test-viewer-2", session=False)
    meter = bus(cluster, 0, "meter", "meter-pw", "test-meter-2", session=False)
    try:
        viewer.subscribe("wattcast/v1/+/end", qos=1, timeout=30)
        meter.publish("wattcast/v1/h001/end", b"{}", qos=1)
        assert meter.flush(60)
        assert viewer.inbox.get(timeout=60).topic == "wattcast/v1/h001/end"
    finally:
        meter.close()
        viewer.close()
    cluster.start_node(victim)  # it comes back into its cluster
    assert victim in cluster.running()
    assert victim.name in cluster.ctl(cluster.nodes[0], "cluster_status", "--formatter", "json")


def test_a_cluster_that_cannot_start_says_why_in_one_line(tmp_path, monkeypatch):
    import wattcast.rabbitmq as rabbitmq

    monkeypatch.setattr(rabbitmq, "RABBIT_BIN", tmp_path / "nowhere")
    with pytest.raises(RabbitError, match="apt-get install rabbitmq-server"):
        RabbitCluster(tmp_path / "c").start()


def test_each_deployment_user_is_held_to_its_role_as_mosquitto_does(cluster):
    """mosquitto/acl as RabbitMQ topic permissions: a predictor cannot forge another model's forecast, a
    viewer reads no raw reading.  Where mosquitto drops such a publish or delivers nothing to such a
    subscription, RabbitMQ closes the connection."""

    def login(user: str, cid: str) -> MqttBus:
        return bus(cluster, 0, user, ROLE_PASSWORDS[user], cid, session=False)

    collector, viewer = login("collector", "role-collector"), login("viewer", "role-viewer")
    try:
        collector.subscribe("wattcast/v1/+/forecast/+", qos=1, timeout=30)
        viewer.subscribe("wattcast/v1/+/forecast/+", "wattcast/v1/+/metrics/+", qos=1, timeout=30)
        snoop = login("viewer", "role-snoop")
        with pytest.raises(TimeoutError):  # no SUBACK: the connection is closed
            snoop.subscribe("wattcast/v1/+/reading", qos=1, timeout=20)
        snoop.close()
        forger = login("predictor-lstm", "role-forger")
        forger.publish("wattcast/v1/h000/forecast/gbm", b"forged", qos=1)
        assert not forger.flush(5)  # never acknowledged
        forger.close()
        simulator = login("simulator", "role-simulator")
        simulator.publish("wattcast/v1/h000/reading", b"raw", qos=1)
        assert simulator.flush(30)
        simulator.close()
        honest = login("predictor-gbm", "role-gbm")
        honest.publish("wattcast/v1/h000/forecast/gbm", b"sentinel", qos=1)
        assert honest.flush(30)
        honest.close()
        for who in (collector, viewer):
            got = [who.inbox.get(timeout=60).payload]
            while got[-1] != b"sentinel":
                got.append(who.inbox.get(timeout=60).payload)
            assert got == [b"sentinel"], got  # no forged forecast, and for the viewer no raw reading
    finally:
        collector.close()
        viewer.close()
