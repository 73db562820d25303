"""The MQTT edge: paho-mqtt 2.x behind the :class:`~wattcast.bus.base.Bus` interface.  Paho's callbacks
only put messages in the inbox; domain code (parsing, inference, scoring) runs on the node's own thread."""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from wattcast.bus.base import BrokerConfig, Inbox, Message, new_inbox
from wattcast.bus.paho_client import client_class

log = logging.getLogger(__name__)

#: the broker drops bigger payloads (mosquitto/conf.d/wattcast.conf: message_size_limit)
MAX_PACKET_PAYLOAD = 65536


def _no_delay(sock) -> None:
    """Switch Nagle's algorithm off (paho leaves it on).

    With it on, a small packet written while an earlier one is unacknowledged waits
    for the broker's delayed TCP ACK: about 40 ms on Linux.  Measured: every status
    publish stalled the reading -> forecast path for ~40 ms (lstm p99 45 ms).
    """
    import socket

    with contextlib.suppress(AttributeError, OSError):  # e.g. a websocket or a closed socket
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _use_tls(client: Any, broker: BrokerConfig) -> None:
    """TLS with the broker's CA (default: the system's) and the client's own certificate, if any."""
    for what, path in (
        ("CA file", broker.ca_file),
        ("client certificate", broker.cert_file),
        ("client key", broker.key_file),
    ):
        if path and not Path(path).is_file():
            raise ValueError(f"TLS {what} not found: {path}")
    try:
        client.tls_set(ca_certs=broker.ca_file, certfile=broker.cert_file, keyfile=broker.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"TLS files for {broker.url} cannot be used: {exc}") from None


@dataclass
class MqttBus:
    """paho-mqtt client behind the :class:`Bus` interface.

    ``session`` keeps a persistent session (clean_session=False) under a fixed ``client_id`` so that
    a node which reconnects, or a broker that restarts with persistence on, gets what was queued meanwhile.

    With ``manual_ack`` a received QoS 1 message is acknowledged only when the node
    calls :meth:`ack` after handling it: a node killed mid-batch gets the messages
    it had not finished again when it comes back under the same client id.
    """

    broker: BrokerConfig
    client_id: str
    session: bool = True
    will: tuple[str, bytes] | None = None
    max_inflight: int = 100
    manual_ack: bool = False
    inbox: Inbox = field(default_factory=new_inbox)

    def __post_init__(self) -> None:
        import paho.mqtt.client as mqtt

        if self.broker.amqp:
            raise ValueError(f"{self.broker.url} speaks AMQP; this client speaks MQTT: give the broker's mqtt:// URL")

        self._mqtt = mqtt
        self._filters: dict[str, int] = {}
        self._pending: deque = deque()
        self._connected = threading.Event()
        self._down = threading.Event()  # set by every disconnection
        self._lock = threading.Lock()
        self.reconnects = 0
        #: the broker's reason when it refused the connection (bad credentials, ...)
        self.refused: str | None = None
        self._closing = False
        #: disconnections so far, and how many of them publish() has caught up with
        self._disconnects = 0
        self._synced_disconnects = 0
        #: paho's wake-up socket while batched() holds it back, and the packets queued meanwhile
        self._held_wake = None
        self._held_packets = 0
        c: mqtt.Client = client_class()(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=not self.session,
            protocol=mqtt.MQTTv311,
        )
        if self.broker.username:
            c.username_pw_set(self.broker.username, self.broker.password)
        if self.will:
            c.will_set(self.will[0], self.will[1], qos=1, retain=True)
        if self.broker.tls:
            _use_tls(c, self.broker)
        c.max_inflight_messages_set(self.max_inflight)
        if self.manual_ack:
            c.manual_ack_set(True)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(min_delay=0.2, max_delay=2)  # type: ignore[arg-type]  # paho takes seconds as float
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.deliver = self._deliver  # type: ignore[attr-defined]  # paho_client.client_class()
        c.on_subscribe = c.on_unsubscribe = self._on_suback
        #: SUBSCRIBE / UNSUBSCRIBE packet ids (one counter in paho) whose acknowledgement someone awaits
        self._awaited: dict[int, threading.Event] = {}
        self.client = c

    @property
    def connected(self) -> bool:
        """Connected to the broker now (paho reconnects by itself after a loss)."""
        return self._connected.is_set()

    # -- paho callbacks: network thread, no domain code -------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused connection: %s", self.broker.url, reason_code)
            self.refused = str(reason_code)
            return
        _no_delay(client.socket())
        with self._lock:
            filters = list(self._filters.items())
        if filters:
            client.subscribe(filters)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._down.set()
        self._disconnects += 1
        if self._connected.is_set() and not self._closing:
            self.reconnects += 1
            log.warning("disconnected from %s (%s); reconnecting", self.broker.url, reason_code)
        self._connected.clear()

    def _on_suback(self, client, userdata, mid, reason_codes, properties) -> None:
        """A SUBACK or UNSUBACK: wake whoever awaits it (subscribe(timeout=), _stop_deliveries)."""
        with self._lock:  # the waiter registers the mid under the lock
            done = self._awaited.pop(mid, None)
        if done is not None:
            done.set()

    def _on_message(self, client, userdata, msg) -> None:  # what paho_client's short paths leave to paho
        self._deliver(msg.topic, msg.payload, bool(msg.retain), msg.mid, msg.qos)

    def _deliver(self, topic: str, payload: bytes, retain: bool, mid: int, qos: int) -> None:
        self.inbox.put(Message(topic, payload, retain, time.time(), mid, qos))

    # -- Bus ---------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> MqttBus:
        """Connect and start the network loop; raises ConnectionError with one clear line."""
        try:
            self.client.connect(self.broker.host, self.broker.port, keepalive=self.broker.keepalive)
        except ssl.SSLCertVerificationError as exc:
            raise ConnectionError(
                f"TLS: the MQTT broker at {self.broker.url} has a certificate this node does not trust: "
                f"{exc.verify_message} (--ca-file names the CA that signed it)"
            ) from None
        except ssl.SSLError as exc:
            raise ConnectionError(f"TLS handshake with the MQTT broker at {self.broker.url} failed: {exc}") from None
        except OSError as exc:
            raise ConnectionError(f"cannot reach MQTT broker at {self.broker.url}: {exc}") from None
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        while not self._connected.wait(0.05):
            if self.refused or time.monotonic() > deadline:  # a refusal is final: do not wait out the timeout
                self.client.loop_stop()
                why = self.refused or "no answer"
                if not self.refused and self._disconnects:
                    hint = (
                        "a TLS listener? use mqtts://host:port"
                        if not self.broker.tls
                        else "does it require a client certificate? --cert-file"
                        if not self.broker.cert_file
                        else "does it accept this client certificate?"
                    )
                    why = f"it closed the connection without an answer ({hint})"
                raise ConnectionError(f"MQTT broker at {self.broker.url} did not accept the connection: {why}")
        return self

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if len(payload) > MAX_PACKET_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes on {topic!r} exceeds {MAX_PACKET_PAYLOAD}")
        if qos > 0 and self._disconnects != self._synced_disconnects:
            self._resync()
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        self._held_packets += 1
        if qos > 0:
            if info.rc == self._mqtt.MQTT_ERR_NO_CONN:
                # Published while disconnected: paho keeps the message and sends it after
                # reconnecting, but this rc would make is_published() raise for good.
                info.rc = self._mqtt.MQTT_ERR_SUCCESS
            self._pending.append(info)
            # Flow control: never let more than a bounded number of QoS>0 messages wait
            # for their acknowledgement; the caller blocks here instead.  Messages
            # published while disconnected stay queued in paho and are sent on reconnect.
            while len(self._pending) > 4 * self.max_inflight:
                self._wait(self._pending[0], None)
                self._pending.popleft()

    def _resync(self, timeout: float = 60.0) -> None:
        """After a disconnection, publish nothing new until the broker has what paho re-sends.

        paho re-sends the unacknowledged messages only once the broker accepts the new
        connection, but writes a newer message right away: the broker would get them out
        of order (MQTT 3.1.1 4.6 forbids it), and a predictor drops a reading older than
        one it has seen.  So wait to be connected, then for every earlier publish to be
        acknowledged.  After ``timeout`` publish anyway (paho keeps the message).
        """
        deadline = time.monotonic() + timeout
        while not self._closing and time.monotonic() < deadline:
            seen = self._disconnects
            if self._connected.wait(0.5) and self.flush(timeout=max(0.0, deadline - time.monotonic())):
                if self._connected.is_set() and self._disconnects == seen:
                    self._synced_disconnects = seen
                    return
        log.warning("%s: still not reconnected after %.0f s; publishing anyway", self.client_id, timeout)
        self._synced_disconnects = self._disconnects

    def _wait(self, info, deadline: float | None) -> bool:
        """Wait for one publish's acknowledgement; tolerant of disconnections (paho re-sends)."""
        if info.is_published():
            return True
        if self._held_wake is not None:  # inside batched(): let the network thread write what is queued
            with contextlib.suppress(OSError):
                self._held_wake.send(b"0")
        while not info.is_published():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            info.wait_for_publish(timeout=0.5)
        return True

    def subscribe(self, *filters: str, qos: int = 1, timeout: float | None = None) -> None:
        """Subscribe (again after every reconnection); with ``timeout``, wait for the broker's SUBACK
        (TimeoutError if it does not come): what is published afterwards reaches this bus."""
        with self._lock:
            for f in filters:
                self._filters[f] = qos
        if not self._connected.is_set():
            if timeout is not None:
                raise TimeoutError(f"not connected to {self.broker.url}: cannot confirm the subscription")
            return
        done = threading.Event()
        with self._lock:  # so the SUBACK cannot be handled before its mid is registered
            rc, mid = self.client.subscribe([(f, qos) for f in filters])
            if timeout is not None and rc == self._mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._awaited[mid] = done
        if timeout is not None and not done.wait(timeout):
            raise TimeoutError(f"the broker at {self.broker.url} did not confirm the subscription in {timeout:.0f} s")

    def unsubscribe(self, *filters: str) -> None:
        """Stop a subscription (and do not renew it after a reconnection); what the broker had
        already sent may still arrive."""
        with self._lock:
            for f in filters:
                self._filters.pop(f, None)
            if self._connected.is_set():
                self.client.unsubscribe(list(filters))

    def ack(self, message: Message) -> None:
        if self.manual_ack and message.qos > 0:
            self.client.ack(message.mid, message.qos)
            self._held_packets += 1

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Queue the packets of a batch without waking paho's network thread for each one.

        paho (2.x) writes a byte to an internal socket pair for every queued packet so
        that its network thread leaves select(); for a batch of forecasts and acks one
        wake-up at the end does the same work.  Where paho has no such socket pair
        (another version), this is a no-op.
        """
        client = self.client
        wake = getattr(client, "_sockpairW", None)
        if wake is None:
            yield
            return
        client._sockpairW = None
        self._held_wake = wake
        self._held_packets = 0
        try:
            yield
        finally:
            self._held_wake = None
            if client._sockpairW is None:  # paho replaces the pair on reconnect: keep a new one
                client._sockpairW = wake
            if self._held_packets:  # nothing queued, nothing to wake up for
                with contextlib.suppress(OSError):
                    client._sockpairW.send(b"0")

    def _stop_deliveries(self, timeout: float) -> None:
        """Unsubscribe and wait for the broker's UNSUBACK before disconnecting (clean sessions only).

        paho closes its socket right after writing DISCONNECT.  A socket closed with
        received but unread data makes the kernel send a reset instead of a FIN; the
        broker then drops the DISCONNECT and publishes the node's last will over its
        final status (a node that receives until its end, like the simulator).  The
        UNSUBACK comes after everything the broker had sent before it (mosquitto may
        still send a message it had queued).  A persistent session keeps its
        subscriptions instead: unsubscribing would lose what is published while away.
        """
        with self._lock:
            filters = list(self._filters)
            self._filters.clear()  # a reconnection while closing must not subscribe again
        if not filters or not self._connected.is_set():
            return
        done = threading.Event()
        with self._lock:  # so the UNSUBACK cannot be handled before its mid is registered
            rc, mid = self.client.unsubscribe(filters)
            if rc != self._mqtt.MQTT_ERR_SUCCESS or mid is None:
                return
            self._awaited[mid] = done
        if not done.wait(timeout):
            log.debug("%s: no UNSUBACK within %.1f s; disconnecting anyway", self.client_id, timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every QoS>0 publish so far is acknowledged by the broker."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._pending:
            if not self._wait(self._pending[0], deadline):
                return False
            self._pending.popleft()
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly: the broker must get the DISCONNECT, or it publishes the last will.

        paho closes its socket right after writing DISCONNECT.  With received but unread
        data in it (messages the broker sent meanwhile: a flood on a busy machine) the
        kernel sends a reset instead of a FIN, the broker may drop the DISCONNECT as a
        "Broken pipe" and publish the node's last will over its final status (6 runs in 6
        on a loaded 2-core machine, with the UNSUBACK wait of _stop_deliveries alone).
        So close() takes the connection over from paho's network thread: it stops the
        thread, writes what paho still had queued and the DISCONNECT itself, then reads
        (and discards) until the broker closes its end, and only then closes the socket.
        """
        import socket

        self._closing = True
        if not self.session:
            self._stop_deliveries(min(timeout, 2.0))  # less to drain
        client = self.client
        # stop the network thread now, not after its select() times out (up to 1 s)
        client._thread_terminate = True
        wake = getattr(client, "_sockpairW", None)
        if wake is not None:
            with contextlib.suppress(OSError):
                wake.send(b"0")
        client.loop_stop()
        sock = cast("socket.socket | None", client.socket())  # a TCP (or TLS) socket here
        if sock is None or not self._connected.is_set():
            return
        deadline = time.monotonic() + timeout
        try:
            sock.settimeout(max(0.1, timeout))
            while client.want_write() and time.monotonic() < deadline:  # acks, publishes paho had queued
                if client.loop_write() != self._mqtt.MQTT_ERR_SUCCESS:
                    break
            sock.sendall(b"\xe0\x00")  # DISCONNECT (MQTT 3.1.1, 3.14)
            with contextlib.suppress(OSError, ValueError):
                if not hasattr(sock, "unwrap"):  # a TLS socket cannot half-close below its TLS layer
                    sock.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                if not sock.recv(65536):  # the broker has closed its end: nothing unread remains
                    break
        except (OSError, ValueError) as exc:
            log.debug("%s: while closing: %s", self.client_id, exc)
        finally:
            self._connected.clear()
            self._down.set()
            with contextlib.suppress(Exception):
                client._sock_close()
