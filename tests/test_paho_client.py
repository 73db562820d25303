"""The short paths of wattcast's paho Client (wattcast/bus/paho_client.py) against paho's own code.

The broker is the other end of a socket pair: what the client writes is compared byte for
byte with what paho's own Client writes for the same calls, and what it reads is every
PUBLISH and PUBACK a broker could send, split at every byte or sent whole.
"""

from __future__ import annotations

import socket

import paho.mqtt.client as mqtt
import pytest

from wattcast.bus.paho_client import client_class
from wattcast.bus.socket import BufferedSocket


class Peer:
    """A client wired to one end of a socket pair, as if connected; the test plays the broker."""

    def __init__(self, cls=None, manual_ack: bool = False, send_limit: int | None = None, inflight: int = 20) -> None:
        self.broker, near = socket.socketpair()
        near.setblocking(False)
        self.broker.settimeout(5)
        self.sends: list[int] = []
        self.send_limit = send_limit
        self.client = (cls or client_class())(mqtt.CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv311)
        self.client.manual_ack_set(manual_ack)
        self.client.max_inflight_messages_set(inflight)
        peer = self

        class End:  # the client's end: counts sends; with a limit, writes only part (a full socket buffer)
            def recv(self, size: int) -> bytes:
                return near.recv(size)

            def send(self, data, flags: int = 0) -> int:
                data = bytes(data)[: peer.send_limit] if peer.send_limit else data
                peer.sends.append(len(data))
                return near.send(data)

            def fileno(self) -> int:
                return near.fileno()

            def close(self) -> None:
                near.close()

        sock = BufferedSocket(End())  # type: ignore[arg-type]
        self.client._sock = sock
        self.client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
        self.delivered: list[tuple] = []
        self.messages: list[tuple] = []
        self.client.deliver = lambda *m: self.delivered.append(m)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, bool(m.retain), m.mid, m.qos))

    def written(self) -> bytes:
        out = b""
        self.broker.setblocking(False)
        try:
            while chunk := self.broker.recv(65536):
                out += chunk
        except BlockingIOError:
            pass
        return out

    def close(self) -> None:
        self.broker.close()
        self.client._sock.close()


def publish_packet(topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> bytes:
    """A PUBLISH as a broker sends it (MQTT 3.1.1, 3.3), written out independently of the code under test."""
    body = len(topic.encode()).to_bytes(2, "big") + topic.encode() + (mid.to_bytes(2, "big") if qos else b"") + payload
    n, length = len(body), bytearray()
    while True:
        n, byte = divmod(n, 128)
        length.append(byte | (128 if n else 0))
        if not n:
            break
    return bytes([0x30 | qos << 1 | int(retain)]) + bytes(length) + body


STREAM = [
    ("wattcast/v1/readings/h000", b'{"seq": 1}', 1, False, 1),
    ("wattcast/v1/status/collector", b'{"state": "online"}', 1, True, 2),
    ("wattcast/v1/progress/collector", b"{}", 0, False, 0),
    ("wattcast/v1/readings/h001", b"x" * 200, 1, False, 65535),  # two-byte remaining length
    ("wattcast/v1/readings/h002", b"y" * 20000, 1, False, 7),  # three-byte remaining length
    ("wattcast/v1/status/gone", b"", 1, True, 8),  # the empty payload that clears a retained status
    ("wattcast/v1/forecasts/h000/lstm", b'{"value": 1.5}', 0, False, 0),
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64, 1000, None])
def test_received_publishes_are_delivered_whole_and_in_order_however_the_bytes_arrive(chunk):
    peer = Peer(manual_ack=True)
    data = b"".join(publish_packet(*m) for m in STREAM)
    step = chunk or len(data)
    for at in range(0, len(data), step):
        peer.broker.sendall(data[at : at + step])
        while peer.client.loop_read() == mqtt.MQTT_ERR_SUCCESS and peer.client._sock.pending():
            pass
    peer.client.loop_read()
    got = peer.delivered + [(t, p, r, mid, q) for t, p, r, mid, q in peer.messages]
    assert sorted(got, key=lambda m: [s[0] for s in STREAM].index(m[0])) == [(t, p, r, mid, q) for t, p, q, r, mid in STREAM]
    assert len(got) == len(STREAM)
    if chunk is None:  # all of it in the buffer: every packet took the short path
        assert len(peer.delivered) == len(STREAM) and not peer.messages
    assert peer.written() == b""  # manual acks: nothing acknowledged by itself
    peer.close()


def test_without_manual_acks_a_qos1_publish_is_acknowledged_with_its_packet_id():
    peer = Peer(manual_ack=False)
    peer.broker.sendall(b"".join(publish_packet(*m) for m in STREAM))
    for _ in STREAM:
        peer.client.loop_read()
    acks = peer.written()
    assert acks == b"".join(b"\x40\x02" + mid.to_bytes(2, "big") for _, _, qos, _, mid in STREAM if qos == 1)
    peer.close()


def test_a_topic_that_is_not_utf8_goes_to_paho_which_reports_it_on_access():
    peer = Peer(manual_ack=True)
    bad = b"\x00\x04ab\xff\xfe" + b"\x00\x09" + b"payload"
    peer.broker.sendall(bytes([0x32, len(bad)]) + bad)
    peer.client.on_message = lambda c, u, m: peer.messages.append((m.mid, m.payload))
    peer.client.loop_read()
    assert peer.delivered == []  # paho's own path: an MQTTMessage whose topic raises when read
    assert peer.messages == [(9, b"payload")]
    peer.close()


@pytest.mark.parametrize("qos", [0, 1])
def test_published_packets_are_byte_for_byte_paho_s_own(qos):
    ours, theirs = Peer(), Peer(cls=mqtt.Client)
    calls = [
        ("wattcast/v1/forecasts/h000/linear", b'{"value": 0.5}', False),
        ("wattcast/v1/status/predictor-linear", b'{"state": "online"}', True),
        ("wattcast/v1/readings/h001", b"z" * 300, False),
        ("wattcast/v1/readings/h002", b"w" * 40000, False),
        ("wattcast/v1/status/x", b"", True),
    ]
    for peer in (ours, theirs):
        for topic, payload, retain in calls:
            info = peer.client.publish(topic, payload, qos=qos, retain=retain)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS
    expected = theirs.written()
    assert expected and ours.written() == expected
    if qos == 0:  # written: done, as paho says
        assert all(info.is_published() for info in [ours.client.publish("a/b", b"c", qos=0)])
    ours.close()
    theirs.close()


def test_invalid_publishes_are_refused_as_paho_refuses_them():
    peer = Peer()
    for topic in ("a/+/b", "a/#", ""):
        with pytest.raises(ValueError):
            peer.client.publish(topic, b"x", qos=1)
    peer.close()


def test_pubacks_complete_the_publishes_and_release_queued_ones_in_order():
    peer = Peer(inflight=2)
    infos = [peer.client.publish(f"t/{i}", f"{i}".encode(), qos=1) for i in range(5)]
    assert [i.rc for i in infos] == [mqtt.MQTT_ERR_SUCCESS] * 5
    sent = peer.written()
    assert sent == b"".join(publish_packet(f"t/{i}", f"{i}".encode(), 1, False, infos[i].mid) for i in range(2))
    for round_ in range(3):  # each PUBACK lets one queued publish out, oldest first
        first = round_
        peer.broker.sendall(b"\x40\x02" + infos[first].mid.to_bytes(2, "big"))
        peer.client.loop_read()
        assert infos[first].is_published()
        nxt = first + 2
        assert peer.written() == publish_packet(f"t/{nxt}", f"{nxt}".encode(), 1, False, infos[nxt].mid)
    peer.broker.sendall(b"".join(b"\x40\x02" + infos[i].mid.to_bytes(2, "big") for i in (3, 4)))
    peer.client.loop_read()
    peer.client.loop_read()
    assert all(i.is_published() for i in infos)
    assert peer.client._inflight_messages == 0 and not peer.client._out_messages
    peer.broker.sendall(b"\x40\x02\x99\x99")  # an unknown packet id: ignored, as paho does
    assert peer.client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    peer.close()


@pytest.mark.parametrize("limit", [None, 1, 7, 33])
def test_queued_packets_go_out_in_one_send_and_a_partial_send_loses_nothing(limit):
    peer = Peer(send_limit=limit, manual_ack=True)
    ref = Peer(cls=mqtt.Client, manual_ack=True)
    for p in (peer, ref):
        p.client._in_callback_mutex.acquire()  # as inside a callback: queue, do not write yet
        for i in range(6):
            p.client.publish(f"t/{i}", b"v" * (i * 10), qos=i % 2, retain=i == 3)
        p.client.ack(77, 1)
        p.client._in_callback_mutex.release()
    infos = list(peer.client._out_packet)
    for _ in range(10_000):
        if not peer.client._out_packet:
            break
        peer.client.loop_write()
    ref.client.loop_write()
    assert peer.written() == ref.written()
    if limit is None:
        assert peer.sends == [sum(len(p["packet"]) for p in infos)]  # one send for all seven packets
    assert all(p["info"].is_published() for p in infos if p["qos"] == 0 and p["info"] is not None)
    peer.close()
    ref.close()


def test_another_paho_release_gets_paho_s_own_paths_with_the_buffered_socket(monkeypatch):
    import paho.mqtt

    client_class.cache_clear()
    try:
        monkeypatch.setattr(paho.mqtt, "__version__", "2.9.0")
        plain = client_class()
        assert not hasattr(plain, "_fast_publish") and "_create_socket" in vars(plain)
    finally:
        monkeypatch.undo()
        client_class.cache_clear()
    assert hasattr(client_class(), "_fast_publish")
