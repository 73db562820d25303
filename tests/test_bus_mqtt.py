"""MqttBus against a real broker (mosquitto with the repo's mosquitto/conf.d settings).

Every test starts its own broker on a free loopback port (see conftest.py).
"""

from __future__ import annotations

import queue
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from wattcast.broker import PrivateBroker, free_port
from wattcast.bus import BrokerConfig, MqttBus
from wattcast.contract import Reading, Status, decode, reading_topic, status_topic

pytestmark = pytest.mark.integration

PROBE = b"__probe__"


# ----------------------------------------------------------------------------- helpers


def needs_mosquitto(broker: PrivateBroker) -> None:
    if broker.kind != "mosquitto":
        pytest.skip(f"needs mosquitto (persistence, repo settings); running {broker.kind}")


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def wait_subscribed(sub: MqttBus, pub: MqttBus, topic: str, timeout: float = 5.0) -> None:
    """MqttBus.subscribe does not wait for the SUBACK: publish QoS 0 probes until one arrives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.publish(topic, PROBE, qos=0)
        try:
            if sub.inbox.get(timeout=0.1).payload == PROBE:
                return
        except queue.Empty:
            pass
    raise AssertionError(f"subscription of {sub.client_id} to {topic} not active after {timeout} s")


def collect_seqs(bus: MqttBus, expected: int, timeout: float) -> list[int]:
    """Integer payloads from ``bus.inbox`` (probes ignored) until ``expected`` distinct ones or timeout."""
    got: list[int] = []
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < expected:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            m = bus.inbox.get(timeout=min(left, 0.2))
        except queue.Empty:
            continue
        if m.payload != PROBE:
            got.append(int(m.payload))
            seen.add(got[-1])
    return got


def nagle_off(bus: MqttBus) -> bool:
    import socket

    return bus.client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def publish_seqs(bus: MqttBus, topic: str, seqs) -> None:
    for i in seqs:
        bus.publish(topic, b"%d" % i, qos=1)


# ------------------------------------------------------------------------- round trip


def test_round_trip_reading_and_retained_status(mqtt_bus):
    sub = mqtt_bus()
    pub = mqtt_bus()
    sub.subscribe(reading_topic("+"))
    wait_subscribed(sub, pub, reading_topic("probe"))

    reading = Reading("h1", 7, 1166289840, 4.216, 0.418, 234.84, 18.4, 0.0, 1.0, 17.0, sent_at=time.time())
    pub.publish(reading.topic, reading.to_json())
    assert pub.flush(5)
    while (m := sub.inbox.get(timeout=5)).payload == PROBE:
        pass
    assert m.topic == "wattcast/v1/h1/reading"
    assert decode(m.topic, m.payload) == reading
    assert m.retain is False and m.received_at > 0
    # Nagle off: with it on, a small publish waited ~40 ms for the broker's delayed ACK
    assert nagle_off(pub) and nagle_off(sub)

    # A retained status reaches a subscriber that arrives later, flagged retained.
    status = Status("sim-1", "online", "simulator")
    pub.publish(status.topic, status.to_json(), retain=True)
    assert pub.flush(5)
    late = mqtt_bus()
    late.subscribe(status_topic("+"))
    m = late.inbox.get(timeout=5)
    assert (m.topic, m.retain) == (status_topic("sim-1"), True)
    assert decode(m.topic, m.payload) == status


def test_amqtt_fallback_round_trip(broker_factory, mqtt_bus):
    b = broker_factory(prefer="amqtt")
    assert b.kind == "amqtt" and b.url.startswith("mqtt://127.0.0.1:")
    sub = mqtt_bus(on=b, session=False)
    pub = mqtt_bus(on=b, session=False)
    sub.subscribe("test/amqtt/#")
    wait_subscribed(sub, pub, "test/amqtt/probe")
    publish_seqs(pub, "test/amqtt/seq", range(50))
    assert pub.flush(5)
    assert set(collect_seqs(sub, 50, timeout=5)) == set(range(50))


# ------------------------------------------------------------- sessions and restarts


def test_persistent_session_gets_messages_published_while_away(mqtt_bus):
    sub = mqtt_bus("collector-1")
    pub = mqtt_bus()
    sub.subscribe("test/away/#")
    wait_subscribed(sub, pub, "test/away/probe")
    sub.close()

    publish_seqs(pub, "test/away/seq", range(300))
    assert pub.flush(5)

    back = mqtt_bus("collector-1")  # same client id, session=True: no subscribe needed
    assert set(collect_seqs(back, 300, timeout=5)) == set(range(300))


def test_clean_session_does_not_get_messages_published_while_away(mqtt_bus):
    sub = mqtt_bus("viewer-1", session=False)
    pub = mqtt_bus()
    sub.subscribe("test/clean/#")
    wait_subscribed(sub, pub, "test/clean/probe")
    sub.close()
    publish_seqs(pub, "test/clean/seq", range(10))
    assert pub.flush(5)
    back = mqtt_bus("viewer-1", session=False)
    assert collect_seqs(back, 1, timeout=0.5) == []


def test_buses_reconnect_and_resubscribe_across_broker_restart(broker, mqtt_bus):
    needs_mosquitto(broker)
    sub = mqtt_bus()
    pub = mqtt_bus()
    sub.subscribe("test/restart/#")
    wait_subscribed(sub, pub, "test/restart/probe")

    publish_seqs(pub, "test/restart/seq", range(200))
    assert pub.flush(5)
    broker.restart()
    # Publish as soon as the publisher is back: the subscriber may still be away, then
    # the broker's persisted session queues for it.  (Publishing *while* the broker is
    # down is test_publish_while_broker_down below.)
    wait_until(pub.client.is_connected, 10, "publisher reconnect")
    publish_seqs(pub, "test/restart/seq", range(200, 400))
    assert pub.flush(10)

    assert set(collect_seqs(sub, 400, timeout=10)) == set(range(400))
    assert sub.reconnects >= 1 and pub.reconnects >= 1
    assert nagle_off(sub) and nagle_off(pub)  # on the new connection too


def test_queued_messages_survive_broker_restart(broker, mqtt_bus):
    """Messages queued for an offline persistent session are in mosquitto's database after a restart."""
    needs_mosquitto(broker)
    sub = mqtt_bus("predictor-lstm")
    pub = mqtt_bus()
    sub.subscribe("test/persist/#")
    wait_subscribed(sub, pub, "test/persist/probe")
    sub.close()

    publish_seqs(pub, "test/persist/seq", range(500))
    assert pub.flush(5)
    broker.restart()
    wait_until(pub.client.is_connected, 10, "publisher reconnect")
    publish_seqs(pub, "test/persist/seq", range(500, 600))
    assert pub.flush(10)

    back = mqtt_bus("predictor-lstm")
    assert set(collect_seqs(back, 600, timeout=10)) == set(range(600))


def test_publish_while_broker_down(broker, mqtt_bus):
    needs_mosquitto(broker)
    sub = mqtt_bus()
    pub = mqtt_bus(max_inflight=10)  # publish() waits for acks beyond 4 * 10 pending
    sub.subscribe("test/down/#")
    wait_subscribed(sub, pub, "test/down/probe")

    broker.stop()
    wait_until(lambda: not pub.client.is_connected(), 5, "publisher to notice the broker is down")
    starter = threading.Timer(0.5, broker.start)  # comes back while publish() blocks
    starter.start()
    try:
        publish_seqs(pub, "test/down/seq", range(100))
        assert pub.flush(10)
    finally:
        starter.join()
    assert set(collect_seqs(sub, 100, timeout=10)) == set(range(100))


# ------------------------------------------------------------------------------ no loss

N_FLOOD = 20_000


def _flood(broker: PrivateBroker, topic: str, settle: float) -> tuple[set[int], int, dict[str, float]]:
    """Publish N_FLOOD QoS 1 messages as fast as MqttBus allows to a raw paho subscriber that
    stalls in on_message until the publisher is done (the slowest node possible): the broker
    has to queue nearly all of them for it.  Returns (distinct seqs, deliveries, times)."""
    received: set[int] = set()
    count = [0]
    subscribed = threading.Event()
    release = threading.Event()

    def on_message(client, userdata, msg):
        release.wait(30)
        count[0] += 1
        received.add(int(msg.payload))

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="slow-sub", clean_session=False, protocol=mqtt.MQTTv311)
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(broker.host, broker.port, keepalive=60)
    client.loop_start()
    pub = MqttBus(BrokerConfig.from_url(broker.url), "flood-pub")
    try:
        client.subscribe(topic, qos=1)
        assert subscribed.wait(5), "no SUBACK"
        pub.connect(timeout=5)
        t0 = time.monotonic()
        publish_seqs(pub, topic, range(N_FLOOD))
        assert pub.flush(30)
        t_pub = time.monotonic() - t0
        release.set()
        # Wait for all, or until `settle` seconds pass without progress.
        deadline, last, last_change = t0 + 60, -1, time.monotonic()
        while len(received) < N_FLOOD and time.monotonic() < deadline:
            if count[0] != last:
                last, last_change = count[0], time.monotonic()
            elif time.monotonic() - last_change > settle:
                break
            time.sleep(0.05)
        times = {"publish_s": t_pub, "total_s": time.monotonic() - t0}
    finally:
        release.set()
        pub.close()
        client.disconnect()
        client.loop_stop()
    print(
        f"{broker.kind} common={broker.common}: {len(received)} of {N_FLOOD} distinct, "
        f"{count[0]} deliveries, published in {times['publish_s']:.1f} s, total {times['total_s']:.1f} s"
    )
    return received, count[0], times


def test_no_loss_at_max_speed_to_slow_subscriber(broker):
    needs_mosquitto(broker)
    received, _, times = _flood(broker, "test/flood/seq", settle=10)
    missing = N_FLOOD - len(received)
    assert received == set(range(N_FLOOD)), f"{missing} messages lost"
    assert times["total_s"] < 60


def test_mosquitto_defaults_drop_messages_for_slow_subscriber(broker_factory):
    """Control: with mosquitto's defaults the same flood loses messages: the stalled subscriber gets
    20 in flight + 1000 queued (max_queued_messages 1000), the rest is dropped silently."""
    b = broker_factory(common=False, prefer="mosquitto")
    received, _, _ = _flood(b, "test/flood/seq", settle=1.5)
    assert len(received) < N_FLOOD // 2


# --------------------------------------------------------------------------- failures


def test_connect_to_closed_port_raises_connection_error():
    url = f"mqtt://127.0.0.1:{free_port()}"
    bus = MqttBus(BrokerConfig.from_url(url), "nobody")
    t0 = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        bus.connect(timeout=2)
    assert time.monotonic() - t0 < 2
    msg = str(err.value)
    assert url in msg and "\n" not in msg


def test_connect_to_unknown_host_raises_connection_error():
    bus = MqttBus(BrokerConfig.from_url("mqtt://no-such-broker.invalid:1883"), "nobody")
    with pytest.raises(ConnectionError) as err:
        bus.connect(timeout=2)
    assert "no-such-broker.invalid" in str(err.value) and "\n" not in str(err.value)


def test_connect_refused_by_broker_raises_connection_error(broker_factory):
    b = broker_factory(extra_conf="allow_anonymous false")  # no password_file: every login is refused
    bus = MqttBus(BrokerConfig.from_url(b.url), "anon")
    try:
        with pytest.raises(ConnectionError) as err:
            bus.connect(timeout=2)
    finally:
        bus.close()
    msg = str(err.value)
    assert b.url in msg and "\n" not in msg
    if b.kind == "mosquitto":
        assert "authorized" in msg.lower()


def test_rejected_publishes_do_not_disconnect(broker_factory, mqtt_bus, tmp_path):
    """A PUBLISH over message_size_limit, or denied by the ACL, is acknowledged and dropped; the
    publisher stays connected (with max_queued_messages 0 mosquitto 2.0 would disconnect it)."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite test/ok/#\n")  # rules for anonymous clients
    b = broker_factory(extra_conf=f"acl_file {acl}", prefer="mosquitto")
    sub = mqtt_bus(on=b)
    pub = mqtt_bus(on=b)
    sub.subscribe("test/#")
    wait_subscribed(sub, pub, "test/ok/probe")
    with pytest.raises(ValueError):  # our own bus refuses it before the broker sees it ...
        pub.publish("test/ok/big", b"x" * 100_000)
    # ... a foreign client's goes through paho directly: > message_size_limit 64 KiB, < max_packet_size
    pub.client.publish("test/ok/big", b"x" * 100_000, qos=1)
    pub.publish("test/denied", b"0")
    pub.publish("test/ok/small", b"1")
    assert pub.flush(5)  # all acknowledged: nothing is re-sent
    m = sub.inbox.get(timeout=5)
    while m.payload == PROBE:
        m = sub.inbox.get(timeout=5)
    assert (m.topic, m.payload) == ("test/ok/small", b"1")
    time.sleep(0.2)
    assert pub.reconnects == 0
    left = []
    while not sub.inbox.empty():
        left.append(sub.inbox.get_nowait())
    assert [m.topic for m in left if m.payload != PROBE] == []


def test_private_broker_reports_a_failed_start(broker_factory):
    with pytest.raises(RuntimeError, match="no_such_option"):
        broker_factory(extra_conf="no_such_option 1", prefer="mosquitto")


def test_batched_publishes_and_acks_all_arrive(broker, mqtt_bus):
    sub = mqtt_bus(manual_ack=True)
    pub = mqtt_bus()
    sub.subscribe("test/batch/#")
    wait_subscribed(sub, pub, "test/batch/probe")
    wake = pub.client._sockpairW
    with pub.batched():
        for i in range(200):
            pub.publish(f"test/batch/{i}", str(i).encode())
    assert pub.client._sockpairW is wake  # paho's wake-up socket is back
    assert pub.flush(10)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 200 and time.monotonic() < deadline:
        try:
            m = sub.inbox.get(timeout=0.5)
        except queue.Empty:
            continue
        with sub.batched():  # the broker sends at most max_inflight unacknowledged messages
            sub.ack(m)
        if m.payload != PROBE:
            got.append(m)
    assert sorted(int(m.payload) for m in got) == list(range(200))


def test_flow_control_inside_a_batch_does_not_stall(broker, mqtt_bus):
    """More publishes in one batch than the flow-control bound: the bus wakes paho itself."""
    sub = mqtt_bus()
    pub = mqtt_bus(max_inflight=5)  # publish() waits beyond 4 * 5 pending acknowledgements
    sub.subscribe("test/stall/#")
    wait_subscribed(sub, pub, "test/stall/probe")
    started = time.monotonic()
    with pub.batched():
        for i in range(300):
            pub.publish(f"test/stall/{i}", b"x")
    assert pub.flush(10)
    # measured: about 0.1 s; without the bus waking paho's network thread, about 2 s (its select() sleeps)
    assert time.monotonic() - started < 1.0


def final_payloads_of_nodes_closed_under_a_flood(
    mqtt_bus, *, nodes: int, session: bool, flooders: int, pause: float
) -> dict[str, bytes]:
    """Connect ``nodes`` nodes with a last will one after the other; each subscribes to a flood of
    QoS 0 messages, publishes a retained "final" on its will's topic and closes while the flood goes
    on (as at a replay's end).  Returns the newest retained payload per will topic."""
    import threading

    watcher = mqtt_bus()
    watcher.subscribe("test/will/#")
    stop = threading.Event()

    def flooding(flood: MqttBus) -> None:
        while not stop.is_set():
            flood.client.publish("test/flood", b"x" * 2000, qos=0)
            if pause:
                time.sleep(pause)

    threads = [threading.Thread(target=flooding, args=(mqtt_bus(session=False),)) for _ in range(flooders)]
    for thread in threads:
        thread.start()
    try:
        for i in range(nodes):
            topic = f"test/will/{i}"
            node = mqtt_bus(will=(topic, b"will"), session=session)
            node.subscribe("test/flood", qos=0)
            time.sleep(0.05)
            node.publish(topic, b"final", retain=True)
            assert node.flush(60)  # generous: the flood and a busy machine slow its PUBACK down
            node.close()
            leftover = node.client.socket()
            if leftover is not None:  # what the end of the process does to a socket still open
                leftover.close()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    time.sleep(0.5)
    got: dict[str, bytes] = {}
    while not watcher.inbox.empty():
        m = watcher.inbox.get_nowait()
        got[m.topic] = m.payload  # the newest per topic
    return got


def test_close_is_a_clean_disconnect_so_the_last_will_is_not_published(broker, mqtt_bus):
    """A node's final retained status must stay: close() must not look like a crash to the broker.

    close() waits for paho to write DISCONNECT before it stops the network loop
    (stopping first left 2 of 8 sockets to the process's exit, and the broker published the will).
    """
    got = final_payloads_of_nodes_closed_under_a_flood(mqtt_bus, nodes=20, session=True, flooders=1, pause=0.0002)
    assert len(got) == 20 and set(got.values()) == {b"final"}, got


def test_a_clean_session_closing_under_a_flood_does_not_leave_its_will(broker, mqtt_bus):
    """The simulator's case: it receives forecasts up to its end.

    paho closes its socket right after DISCONNECT; with unread data in it the kernel
    resets the connection, and the broker took that for a crash ("Broken pipe") and
    published the will over the final status: 4 times in 30 (this test) before close()
    first unsubscribed and waited for the UNSUBACK.
    """
    got = final_payloads_of_nodes_closed_under_a_flood(mqtt_bus, nodes=20, session=False, flooders=2, pause=0.0)
    assert len(got) == 20 and set(got.values()) == {b"final"}, got


def test_a_subscription_can_wait_for_the_brokers_confirmation(broker, mqtt_bus):
    offline = MqttBus(BrokerConfig.from_url(broker.url), client_id="never-connected", session=False)
    with pytest.raises(TimeoutError, match="not connected"):
        offline.subscribe("a/#", timeout=1)
    sub = mqtt_bus(session=False)
    sub.subscribe("wattcast/v1/status/#", timeout=10)  # returns once the broker has the subscription
    pub = mqtt_bus(session=False)
    pub.publish(status_topic("x"), Status("x", "online", "collector").to_json())  # not retained: only live
    assert sub.inbox.get(timeout=10).topic == status_topic("x")
