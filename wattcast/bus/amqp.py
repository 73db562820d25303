"""The AMQP edge: RabbitMQ through pika behind the :class:`~wattcast.bus.base.Bus` interface.

Topics stay MQTT topics: a publish goes to ``amq.topic`` with the topic as routing key,
as RabbitMQ's MQTT plugin does, so meters and viewers on MQTT and nodes on AMQP share
one address space.  A subscription is served by a queue (:mod:`wattcast.bus.shards`):

* a sharded node (``BrokerConfig.shards``) takes the houses' readings and ends from the
  quorum queues of its group (``group``: ``predictor-<model>``, ``collector``), one per
  shard it serves; RabbitMQ gives each queue to one active consumer of the group;
* any other subscription of a node with a ``group`` (a durable one, like an MQTT persistent
  session) goes to the group's quorum queue, which outlives the process;
* without a group, to a queue of the connection's own, deleted with it.

Every publish is confirmed by the broker (publisher confirms): :meth:`flush` returns once
the broker has everything.  With ``manual_ack`` a delivery is acknowledged when the node
calls :meth:`ack`; a node that dies leaves its unacknowledged messages to the next consumer.

pika's connection is not thread-safe: one I/O thread owns it, runs its event loop, and
carries out what the node's thread queues (publishes, acknowledgements).  It reconnects
after a loss: unconfirmed publishes are sent again (in order; receivers deduplicate) and
deliveries of the lost channel are not acknowledged (the broker delivers them again).
AMQP has no retained messages and no last will: a status is only seen live.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from wattcast.bus import shards as topology
from wattcast.bus.amqp_connection import parameters, quiet_pika, why
from wattcast.bus.base import BrokerConfig, Inbox, Message, new_inbox
from wattcast.contract import ALL_FORECASTS

log = logging.getLogger(__name__)

#: a delivery's tag lives in the low bits of Message.mid, the connection it came on above them
_TAG_BITS = 40
#: publishes in flight (sent, not yet confirmed by the broker) at most
MAX_UNCONFIRMED = 1000
#: a node consumes the shards it stands by for this many seconds after its own
STANDBY_DELAY_S = 3.0


@dataclass
class AmqpBus:
    broker: BrokerConfig
    client_id: str
    group: str | None = None
    manual_ack: bool = False
    prefetch: int = 1000
    inbox: Inbox = field(default_factory=new_inbox)

    def __post_init__(self) -> None:
        import pika

        self._pika = pika
        quiet_pika()
        self._filters: list[str] = []
        self._consumed: set[str] = set()  # the filters served on the current connection
        #: the shard of every house a shard queue delivered (a forecast for it goes to that shard)
        self._house_shard: dict[str, int] = {}
        #: ("publish", routing key, body), ("ack", generation, tag) and ("subscribe", filters, done), in the
        #: order the node made them
        self._outbox: deque[tuple[Any, ...]] = deque()
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._ready = threading.Event()  # the first connection is up, or refused for good
        self._stop = False
        self._generation = 0
        self._conn: Any = None
        self._channel: Any = None
        self._thread: threading.Thread | None = None
        self._batching = 0
        self.reconnects = 0
        self.refused: str | None = None
        #: publishes the broker refused (no permission for the topic): counted, logged, dropped
        self.denied = 0
        self._last_error = "no answer"
        self._attempts = -1
        #: publishes sent on the current channel and not yet confirmed, by delivery tag
        self._unconfirmed: dict[int, tuple[Any, ...]] = {}
        self._sent = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- the I/O thread ------------------------------------------------------------------
    def _open(self) -> None:
        self._attempts += 1
        conn = self._pika.BlockingConnection(parameters(self.broker, self.client_id, first=self._attempts))
        try:
            channel = conn.channel()
            # publisher confirms, asynchronous: BlockingChannel.confirm_delivery would wait for each one
            channel._impl.confirm_delivery(ack_nack_callback=self._on_confirm)
            channel.basic_qos(prefetch_count=self.prefetch)
            self._generation += 1
            self._conn, self._channel = conn, channel
            self._sent = 0
            self._consumed = set()
            self._consume(list(self._filters))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise

    def _consume(self, filters: list[str]) -> None:
        """Queues and consumers for ``filters`` on the open channel."""
        ch, b = self._channel, self.broker
        filters = [f for f in filters if f not in self._consumed]
        self._consumed.update(filters)
        acked = functools.partial(self._on_message, 1 if self.manual_ack else 0, None)
        rest = list(filters)
        if b.shards is not None and self.group and any(f in topology.SHARDED for f in rest):
            sharded = [f for f in rest if f in topology.SHARDED]
            rest = [f for f in rest if f not in topology.SHARDED]
            topology.declare_ring(ch, b.shards)
            self._consume_shards(b.serve_shards if b.serve_shards is not None else range(b.shards), sharded)
            if b.standby_shards:  # later: the nodes that serve them register first and are their active consumers
                generation = self._generation
                self._conn.call_later(STANDBY_DELAY_S, lambda: self._standby(generation, sharded))
        if not rest:
            return
        if self.group:
            name = topology.declare_group_queue(ch, self.group, rest)
            ch.basic_consume(name, acked, auto_ack=not self.manual_ack)
            return
        name = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
        for f in rest:
            ch.queue_bind(name, topology.TOPIC_EXCHANGE, routing_key=topology.binding_key(f))
        ch.basic_consume(name, functools.partial(self._on_message, 0, None), auto_ack=True)

    def _consume_shards(self, shards: Any, filters: list[str]) -> None:
        assert self.group is not None  # a sharded subscription is a group's
        for k in shards:
            name = topology.declare_shard_queue(self._channel, self.group, k, forecasts=ALL_FORECASTS in filters)
            on_message = functools.partial(self._on_message, 1 if self.manual_ack else 0, k)
            self._channel.basic_consume(name, on_message, auto_ack=not self.manual_ack)

    def _standby(self, generation: int, filters: list[str]) -> None:
        if generation == self._generation:  # still the connection that asked
            with self._cond:
                self._outbox.appendleft(("standby", filters, None))

    def _on_message(self, qos: int, shard: int | None, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        """A delivery: ``qos`` 1 if the node acknowledges it (:meth:`ack`), 0 if the broker took it as
        delivered; ``shard``: the shard queue it came from (its house's shard, noted for the forecasts)."""
        mid = (self._generation << _TAG_BITS) | method.delivery_tag
        if shard is not None and not method.routing_key.endswith(".end"):  # an end comes to every shard
            house = topology.house_of(method.routing_key)
            if house is not None:
                self._house_shard[house] = shard
        self.inbox.put(Message(topology.topic_of(method.routing_key), body, False, time.time(), mid, qos, shard))

    def _pump(self) -> None:
        """Carry out what the node queued, oldest first.  A publish waits in ``_unconfirmed`` (by its
        delivery tag) until the broker confirms it; at most ``MAX_UNCONFIRMED`` at a time."""
        impl = self._channel._impl
        while True:
            with self._cond:
                if not self._outbox or (self._outbox[0][0] == "publish" and len(self._unconfirmed) >= MAX_UNCONFIRMED):
                    self._cond.notify_all()
                    return
                item = self._outbox.popleft()
            if item[0] == "publish":
                impl.basic_publish(topology.TOPIC_EXCHANGE, item[1], item[2], self._properties(item[1]))
                self._sent += 1
                with self._cond:
                    self._unconfirmed[self._sent] = item
            elif item[0] == "subscribe":
                self._consume(item[1])
                item[2].set()
            elif item[0] == "standby":
                self._consume_shards(self.broker.standby_shards, item[1])
            elif item[1] == self._generation:  # a delivery of a lost channel comes again instead
                impl.basic_ack(item[2])

    def _on_confirm(self, frame: Any) -> None:
        """The broker has (ack) or could not take (nack: sent again) the publishes up to a delivery tag."""
        m = frame.method
        with self._cond:
            tags = [t for t in self._unconfirmed if t <= m.delivery_tag] if m.multiple else [m.delivery_tag]
            items = [self._unconfirmed.pop(t) for t in tags if t in self._unconfirmed]
            if isinstance(m, self._pika.spec.Basic.Nack):
                log.warning("%s: the broker could not take %d publishes; sending them again", self.client_id, len(items))
                self._outbox.extendleft(reversed(items))
            self._cond.notify_all()

    def _requeue_unconfirmed(self, denied: str | None) -> None:
        """After a lost channel: what the broker did not confirm goes out again, first and in order, but
        for publishes to a topic it refused this node (counted, logged, dropped: never retried forever)."""
        with self._cond:
            items = [self._unconfirmed[t] for t in sorted(self._unconfirmed)]
            self._unconfirmed.clear()
            if denied is not None:
                dropped = [i for i in items if i[1] == denied]
                if dropped:
                    self.denied += len(dropped)
                    log.error("%s: the broker refused publishes to %s: dropped %d", self.client_id, denied, len(dropped))
                items = [i for i in items if i[1] != denied]
            self._outbox.extendleft(reversed(items))

    def _properties(self, routing_key: str) -> Any:
        """A house's forecast names the shard of its house (known from the reading it answers)."""
        if ".forecast." not in routing_key:
            return None
        shard = self._house_shard.get(topology.house_of(routing_key) or "")
        if shard is None:
            return None
        return self._pika.BasicProperties(headers={topology.SHARD_HEADER: str(shard)})

    def _loop(self) -> None:
        pika = self._pika
        delay = 0.2
        while not self._stop:
            try:
                self._open()
            except pika.exceptions.ProbableAuthenticationError as exc:
                self.refused = f"bad user name or password ({exc})"
            except pika.exceptions.ProbableAccessDeniedError as exc:
                self.refused = f"access denied ({exc})"
            except topology.ShardCountError as exc:  # final: what it would consume is another deployment's
                self.refused = str(exc)
                log.error("%s: %s", self.client_id, exc)
                self._ready.set()
                return
            except pika.exceptions.ChannelClosedByBroker as exc:  # e.g. a plugin missing, no permission
                if not self._ready.is_set():
                    self.refused = f"{exc.reply_code} {exc.reply_text}"
                else:
                    log.error("%s: %s refused to set up the queues: %s", self.client_id, self.broker.url, exc.reply_text)
            except (pika.exceptions.AMQPError, OSError) as exc:
                if self.refused is None and not self._ready.is_set():
                    self._last_error = why(exc)
            else:
                delay = 0.2
                self._connected.set()
                self._ready.set()
                try:
                    self._run()
                except topology.ShardCountError as exc:  # a subscription made after connecting
                    self.refused = str(exc)
                    log.error("%s: %s", self.client_id, exc)
                    self._stop = True
                except (pika.exceptions.AMQPError, OSError) as exc:
                    if not self._stop:
                        self.reconnects += 1
                        log.warning("%s: lost %s (%s); reconnecting", self.client_id, self.broker.url, exc)
                    denied = re.search(r"access to topic '([^']+)'", str(exc)) if "ACCESS_REFUSED" in str(exc) else None
                    self._requeue_unconfirmed(denied.group(1) if denied else None)
                finally:
                    self._connected.clear()
                    with contextlib.suppress(Exception):
                        self._conn.close()
                continue
            if self.refused is not None and not self._ready.is_set():
                self._ready.set()
                return
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _run(self) -> None:
        while True:
            self._pump()
            if self._stop:
                return
            self._conn.process_data_events(time_limit=1.0)
            if self._channel.is_closed:  # closed by the broker (it says why), e.g. a refused publish
                reason = getattr(self._channel, "_closing_reason", None)
                raise reason if isinstance(reason, Exception) else self._pika.exceptions.ChannelClosed(0, "closed")

    def _wake(self) -> None:
        conn = self._conn
        if conn is not None and self._connected.is_set():
            with contextlib.suppress(Exception):  # closed meanwhile: the next connection pumps
                conn.add_callback_threadsafe(lambda: None)

    # -- Bus -----------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> AmqpBus:
        """Connect and start the I/O thread; ConnectionError with one clear line if that fails."""
        self._thread = threading.Thread(target=self._loop, name=f"amqp-{self.client_id}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self.refused is not None:
            self._stop = True
            why = self.refused or self._last_error
            raise ConnectionError(f"RabbitMQ at {self.broker.url} did not accept the connection: {why}")
        return self

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        with self._cond:
            self._outbox.append(("publish", topology.routing_key(topic), payload))
            # flow control: the node waits while the broker confirms a backlog
            while len(self._outbox) + len(self._unconfirmed) > 4 * self.prefetch and not self._stop:
                self._cond.wait(0.5)
        if not self._batching:
            self._wake()

    def subscribe(self, *filters: str, qos: int = 1, timeout: float | None = None) -> None:
        """Queues and consumers for ``filters`` (again on every new connection); with ``timeout``, wait
        until the broker has them (TimeoutError if not): what is published afterwards reaches this bus."""
        new = [f for f in filters if f not in self._filters]
        if not new:
            return
        self._filters.extend(new)
        done = threading.Event()
        if self._connected.is_set():
            with self._cond:
                self._outbox.append(("subscribe", new, done))
            self._wake()
        elif timeout is not None:
            raise TimeoutError(f"not connected to {self.broker.url}: cannot confirm the subscription")
        if timeout is not None and not done.wait(timeout):
            raise TimeoutError(f"{self.broker.url} did not confirm the subscription in {timeout:.0f} s")

    def unsubscribe(self, *filters: str) -> None:
        """Forget ``filters`` for the next connection (the queues of this one keep delivering)."""
        self._filters = [f for f in self._filters if f not in filters]

    def ack(self, message: Message) -> None:
        if self.manual_ack and message.qos > 0:
            with self._cond:
                self._outbox.append(("ack", message.mid >> _TAG_BITS, message.mid & ((1 << _TAG_BITS) - 1)))
            if not self._batching:
                self._wake()

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """One wake-up of the I/O thread for a batch of publishes and acknowledgements."""
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
            if not self._batching:
                self._wake()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the broker has confirmed every publish (and taken every acknowledgement) so far."""
        self._wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._outbox or self._unconfirmed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.5 if left is None else min(left, 0.5))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (up to ``timeout``), then close the connection."""
        if self._connected.is_set():
            self.flush(timeout)
        self._stop = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
