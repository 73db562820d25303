"""Houses in shards on RabbitMQ: the exchanges, bindings and queues of a sharded deployment.

Meters publish MQTT; RabbitMQ's MQTT plugin routes each message through ``amq.topic``
with the topic as routing key (``/`` becomes ``.``).  From there:

* ``wattcast.houses`` (type ``x-consistent-hash``) gets every reading and hashes its
  routing key, that is its house (``wattcast.v1.<house>.reading``), onto a ring of the
  shards: each shard ``k`` is a fanout exchange ``wattcast.shard.<k>`` bound to the ring
  with the same weight, so a house always lands in the same shard as long as the number
  of shards stays the same (changing it moves houses: it is fixed when the deployment is
  set up, and a declaration with another count than the ring's is refused, see
  :func:`declare_ring`).
* every end of stream goes to every shard (its routing key names another leaf, so it
  would hash elsewhere); RabbitMQ keeps one publisher's order per queue, so a shard has
  all of a house's readings before the end that follows them.
* a forecast goes to the shard of its house: the predictor's bus knows it from the reading
  it answers and puts it in a header, on which the headers exchange ``wattcast.forecasts``
  routes it to the queues of that shard that take forecasts (the collectors');
* a consumer group (``predictor-<model>``, ``collector``) has one quorum queue per shard,
  ``wattcast.<group>.shard.<k>``, replicated on the cluster's nodes and consumed by a single
  active consumer: the group's replicas all consume it, one gets its messages in order, the
  others stand by and take over (with the unacknowledged messages) when it goes.

``declare_*`` take a pika ``BlockingChannel`` and are idempotent.
"""

from __future__ import annotations

from typing import Any

from wattcast.contract import ALL_ENDS, ALL_FORECASTS, ALL_READINGS

#: the exchange the MQTT plugin publishes to and binds MQTT subscriptions on
TOPIC_EXCHANGE = "amq.topic"
#: the consistent-hash ring of the shards
RING = "wattcast.houses"
#: points of each shard on the ring (weight-1 bindings left one of 4 shards empty with 8 houses)
WEIGHT = 100
#: forecasts by the shard of their house (a headers exchange)
FORECASTS = "wattcast.forecasts"
#: the header that names a forecast's shard
SHARD_HEADER = "wattcast-shard"  # an x- header would not be matched (RabbitMQ leaves them out)
#: the houses' filters a sharded subscription takes from its shard queues instead of amq.topic
SHARDED = (ALL_READINGS, ALL_ENDS, ALL_FORECASTS)


def house_of(routing_key: str) -> str | None:
    """The house of a house's message (``wattcast.v1.<house>.<leaf>...``), else None."""
    parts = routing_key.split(".")
    return parts[2] if len(parts) >= 4 and parts[0] == "wattcast" else None


def routing_key(topic: str) -> str:
    """An MQTT topic as an AMQP routing key, as the MQTT plugin maps it."""
    return topic.replace("/", ".")


def topic_of(routing_key: str) -> str:
    return routing_key.replace(".", "/")


def binding_key(mqtt_filter: str) -> str:
    """An MQTT topic filter as a topic exchange's binding key (``+`` is ``*``; ``#`` stays)."""
    return ".".join("*" if part == "+" else part for part in mqtt_filter.split("/"))


def shard_exchange(shard: int) -> str:
    return f"wattcast.shard.{shard}"


def shard_queue(group: str, shard: int) -> str:
    return f"wattcast.{group}.shard.{shard}"


def group_queue(group: str) -> str:
    """The durable queue of a group that is not sharded (its subscriptions survive its restarts)."""
    return f"wattcast.{group}"


def queue_arguments(single_active: bool) -> dict[str, Any]:
    args: dict[str, Any] = {"x-queue-type": "quorum"}
    if single_active:
        args["x-single-active-consumer"] = True
    return args


class ShardCountError(ValueError):
    """The cluster's ring has another number of shards than a node was given (one line)."""


def _exists(channel: Any, exchange: str) -> bool:
    """Whether ``exchange`` exists (a passive declaration on a channel of its own: a miss closes it)."""
    import pika

    probe = channel.connection.channel()
    try:
        probe.exchange_declare(exchange, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return False
        raise
    probe.close()
    return True


def declare_ring(channel: Any, shards: int) -> None:
    """The ring, the ``shards`` shard exchanges and their bindings, unless the ring exists (declared by
    an administrator, ``wattcast shards``, or the first node: a node of a role may not declare them).
    ShardCountError where it exists with another count: binding more shards would move houses."""
    if _exists(channel, RING):
        if not _exists(channel, shard_exchange(shards - 1)) or _exists(channel, shard_exchange(shards)):
            raise ShardCountError(
                f"the cluster's houses are in another number of shards than {shards} "
                f"(exchanges {shard_exchange(0)}...): give the deployment's own --shards"
            )
        return
    for k in range(shards):  # before the ring: whoever sees the ring finds its shards declared
        channel.exchange_declare(shard_exchange(k), "fanout", durable=True)
    channel.exchange_declare(RING, "x-consistent-hash", durable=True)
    channel.exchange_bind(RING, TOPIC_EXCHANGE, routing_key=binding_key(ALL_READINGS))
    for k in range(shards):
        channel.exchange_bind(shard_exchange(k), RING, routing_key=str(WEIGHT))
        channel.exchange_bind(shard_exchange(k), TOPIC_EXCHANGE, routing_key=binding_key(ALL_ENDS))
    channel.exchange_declare(FORECASTS, "headers", durable=True)
    channel.exchange_bind(FORECASTS, TOPIC_EXCHANGE, routing_key=binding_key(ALL_FORECASTS))


def declare_shard_queue(channel: Any, group: str, shard: int, forecasts: bool = False) -> str:
    """The quorum queue of ``group`` for ``shard`` (single active consumer), bound to its shard:
    its houses' readings, every end of stream and, with ``forecasts``, its houses' forecasts."""
    name = shard_queue(group, shard)
    channel.queue_declare(name, durable=True, arguments=queue_arguments(single_active=True))
    channel.queue_bind(name, shard_exchange(shard))
    if forecasts:
        channel.queue_bind(name, FORECASTS, arguments={"x-match": "all", SHARD_HEADER: str(shard)})
    return name


def declare_group_queue(channel: Any, group: str, filters: list[str]) -> str:
    """The durable quorum queue of an unsharded ``group``, bound to ``amq.topic`` with ``filters``."""
    name = group_queue(group)
    channel.queue_declare(name, durable=True, arguments=queue_arguments(single_active=True))
    for f in filters:
        channel.queue_bind(name, TOPIC_EXCHANGE, routing_key=binding_key(f))
    return name
