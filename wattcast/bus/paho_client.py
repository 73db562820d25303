"""paho's Client with short paths for the packets of the data flow (MQTT 3.1.1 only).

At full replay speed a node's CPU goes mostly to paho's per-packet Python: it reads a
packet's command, each byte of its remaining length and its body in separate calls,
builds an ``MQTTMessage`` (with a ``threading.Condition``), looks the topic up in its
per-filter callback tree, and builds MQTT 5 ``ReasonCode`` and ``Properties`` objects for
every PUBACK even on 3.1.1.  This subclass handles the two packets of the data flow,
PUBLISH (QoS 0 or 1) and PUBACK, in a few lines each when the whole packet is already in
the :class:`~wattcast.bus.socket.BufferedSocket`'s buffer, and hands paho's own code
everything else (CONNACK, SUBACK, PINGRESP, a packet split across reads, QoS 2, a topic
that is not UTF-8, MQTT 5, a client with per-filter callbacks or ``on_publish``).

A received PUBLISH goes straight to ``deliver(topic, payload, retain, mid, qos)`` instead
of ``on_message``.  paho-mqtt is pinned to 2.x in pyproject.toml; the bus tests run these
paths against mosquitto (QoS 0 and 1, retained, manual acks, reconnection, floods).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from wattcast.bus.socket import BufferedSocket, buffered

PUBLISH = 0x30
PUBACK = 0x40

#: ``deliver(topic, payload, retain, mid, qos)``
Deliver = Callable[[str, bytes, bool, int, int], None]


def _frame(buf: bytes, pos: int) -> tuple[int, int, int] | None:
    """(command, body start, body end) of the packet at ``buf[pos]``, or None if ``buf`` does not hold all of it."""
    end = len(buf)
    if end - pos < 2:
        return None
    length = 0
    shift = 0
    at = pos + 1
    while True:  # remaining length: 1 to 4 bytes of 7 bits
        if at >= end or shift > 21:
            return None  # incomplete (or malformed: paho's own read says so)
        byte = buf[at]
        length |= (byte & 127) << shift
        at += 1
        if byte < 128:
            break
        shift += 7
    if at + length > end:
        return None
    return buf[pos], at, at + length


def _publish_packet(command: int, topic: bytes, mid: bytes, payload: bytes) -> bytearray:
    """A PUBLISH packet (MQTT 3.1.1, 3.3): fixed header, topic, packet id (QoS > 0), payload."""
    remaining = 2 + len(topic) + len(mid) + len(payload)
    packet = bytearray((command,))
    while True:  # remaining length: 7 bits a byte, high bit set on all but the last
        byte, remaining = remaining & 127, remaining >> 7
        packet.append(byte | 128 if remaining else byte)
        if not remaining:
            break
    packet += len(topic).to_bytes(2, "big")
    packet += topic
    packet += mid
    packet += payload
    return packet


#: paho-mqtt releases whose internals the short paths were written and tested against
SHORT_PATH_PAHO = ("2.2.",)


@functools.cache
def client_class() -> Any:
    """The paho Client subclass (built on first use: paho is imported only by nodes that speak MQTT).

    With a paho release other than :data:`SHORT_PATH_PAHO` only the buffered socket is
    used: the short paths touch paho's private state, which another release may change.
    """
    import paho.mqtt
    import paho.mqtt.client as mqtt

    class Buffered(mqtt.Client):
        def _create_socket(self):  # paho 2.x: opens the connection's socket (and wraps it in TLS)
            return buffered(super()._create_socket())

    if not paho.mqtt.__version__.startswith(SHORT_PATH_PAHO):
        return Buffered
    base: Any = Buffered
    success = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    time_func = mqtt.time_func
    again = mqtt.MQTTErrorCode.MQTT_ERR_AGAIN
    conn_lost = mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
    mqtt5 = mqtt.MQTTv5
    wait_for_puback = mqtt.mqtt_ms_wait_for_puback
    queued = mqtt.mqtt_ms_queued
    queue_full = mqtt.MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
    Message = mqtt.MQTTMessage
    MessageInfo = mqtt.MQTTMessageInfo

    class Client(base):
        #: set by the bus: where a received PUBLISH goes (None: paho's on_message)
        deliver: Deliver | None = None

        def _packet_read(self):
            sock = self._sock
            if type(sock) is not BufferedSocket or self._in_packet["command"] != 0 or self._protocol == mqtt5:
                return super()._packet_read()
            if sock._pos >= len(sock._buf):  # nothing buffered: read what the kernel has
                try:
                    if not sock.fill():
                        return conn_lost
                except BlockingIOError:
                    return again
                except OSError as err:
                    self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                    return conn_lost
            buf, pos = sock._buf, sock._pos
            frame = _frame(buf, pos)
            if frame is None:  # a packet split across reads: paho keeps the part it has and waits
                return super()._packet_read()
            command, start, end = frame
            kind = command & 0xF0
            if kind == PUBLISH and self.deliver is not None and not self._on_message_filtered._root._children:
                rc = self._fast_publish(command, buf[start:end])
            elif kind == PUBACK and end - start == 2 and self.on_publish is None:
                rc = self._fast_puback(buf[start:end])
            else:
                return super()._packet_read()
            if rc is None:  # not a case for the short path after all
                return super()._packet_read()
            sock._pos = end
            now = time_func()
            with self._msgtime_mutex:
                self._last_bytes_received = now
            return rc

        def publish(self, topic, payload=None, qos=0, retain=False, properties=None):
            # A QoS 0 or 1 publish of bytes on 3.1.1 (every data message): paho's own steps, without
            # its payload conversions, MQTT 5 branches and debug formatting.
            if (
                qos not in (0, 1)
                or type(payload) is not bytes
                or properties is not None
                or self._protocol == mqtt5
                or self._max_queued_messages
                or self._sock is None
            ):
                return super().publish(topic, payload, qos, retain, properties)
            name = topic.encode("utf-8")
            if not name or len(name) > 65535 or b"+" in name or b"#" in name or len(payload) > 268435455:
                return super().publish(topic, payload, qos, retain, properties)  # paho raises its ValueError
            mid = self._mid_generate()
            if qos == 0:
                info = MessageInfo(mid)
                info.rc = self._packet_queue(PUBLISH, _publish_packet(0x30 | bool(retain), name, b"", payload), mid, 0, info)
                return info
            message = Message(mid, name)
            message.timestamp = time_func()
            message.payload = payload
            message.qos = 1
            message.retain = retain
            info = message.info
            with self._out_message_mutex:
                if mid in self._out_messages:
                    info.rc = queue_full
                    return info
                self._out_messages[mid] = message
                info.rc = success
                if self._max_inflight_messages and self._inflight_messages >= self._max_inflight_messages:
                    message.state = queued
                    return info
                self._inflight_messages += 1
                message.state = wait_for_puback
                packet = _publish_packet(0x32 | bool(retain), name, mid.to_bytes(2, "big"), payload)
                self._packet_queue(PUBLISH, packet, mid, 1, info)
            return info

        def _packet_write(self):
            # Consecutive PUBLISHes and PUBACKs go out in one send (a QoS 0 publish is done once written).
            out = self._out_packet
            no_callback = self.on_publish is None
            while len(out) > 1:
                group: list[Any] = []
                while out and len(group) < 1000:
                    packet = out[0]
                    kind = packet["command"] & 0xF0
                    if packet["pos"] or not (kind == PUBACK or (kind == PUBLISH and (packet["qos"] or no_callback))):
                        break
                    group.append(out.popleft())
                if len(group) < 2:
                    out.extendleft(reversed(group))
                    break
                try:
                    written = self._sock_send(b"".join([p["packet"] for p in group]))
                except (AttributeError, ValueError):
                    out.extendleft(reversed(group))
                    return success
                except BlockingIOError:
                    out.extendleft(reversed(group))
                    return again
                except OSError as err:
                    out.extendleft(reversed(group))
                    self._easy_log(mqtt.MQTT_LOG_ERR, "failed to send on socket: %s", err)
                    return conn_lost
                with self._msgtime_mutex:
                    self._last_msg_out = time_func()
                done = 0
                for packet in group:
                    if written < packet["to_process"]:
                        packet["pos"] += written
                        packet["to_process"] -= written
                        break
                    written -= packet["to_process"]
                    packet["to_process"] = 0
                    done += 1
                    if not packet["qos"] and packet["info"] is not None:  # a QoS 0 publish is done once written
                        packet["info"]._set_as_published()
                if done < len(group):
                    out.extendleft(reversed(group[done:]))
                    return success  # the socket is full: paho waits until it is writable
            return super()._packet_write()

        def _fast_publish(self, command: int, body: bytes):
            qos = (command >> 1) & 3
            if qos > 1 or len(body) < 2:
                return None
            n = (body[0] << 8) | body[1]
            if qos:
                if len(body) < n + 4:
                    return None
                mid = (body[n + 2] << 8) | body[n + 3]
                payload = body[n + 4 :]
            else:
                if len(body) < n + 2:
                    return None
                mid = 0
                payload = body[n + 2 :]
            try:
                topic = body[2 : n + 2].decode("utf-8")
            except UnicodeDecodeError:
                return None
            deliver = self.deliver
            assert deliver is not None
            deliver(topic, payload, bool(command & 1), mid, qos)
            if qos and not self._manual_ack:
                return self._send_puback(mid)
            return success

        def _fast_puback(self, body: bytes):
            mid = (body[0] << 8) | body[1]
            with self._out_message_mutex:
                message = self._out_messages.get(mid)
                if message is None:
                    return success
                if message.qos != 1 or message.state != wait_for_puback:
                    return None
                del self._out_messages[mid]
                message.info._set_as_published()
                self._inflight_messages -= 1
                if self._max_inflight_messages > 0:
                    return self._update_inflight()
            return success

    return Client
