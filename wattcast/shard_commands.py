"""``wattcast shards``: declare a sharded deployment's exchanges and queues on RabbitMQ before anything runs.

Nodes declare what they consume when they start; meters publishing earlier would find no queue
bound, and RabbitMQ drops such a message.  This command declares the ring, the shards and the
queue of every group (the collector and each model) once, so that readings wait in their shard
queues for whichever node comes (docker-compose.cluster.yml runs it before the others).
"""

from __future__ import annotations

import argparse
import os

from wattcast.config import ENV_SHARDS, add_broker_args, model_name_arg, positive_int


def declare(channel, shards: int, models: list[str]) -> list[str]:  # noqa: ANN001 - a pika BlockingChannel
    """The ring, ``shards`` shards and the shard queues of the collector and of each model's predictors;
    returns the groups."""
    from wattcast.bus import shards as topology

    topology.declare_ring(channel, shards)
    groups = ["collector", *(f"predictor-{m}" for m in models)]
    for group in groups:
        for k in range(shards):
            topology.declare_shard_queue(channel, group, k, forecasts=group == "collector")
    return groups


def cmd_shards(args: argparse.Namespace) -> int:
    import pika

    from wattcast.bus import shards as topology
    from wattcast.bus.amqp_connection import parameters, quiet_pika, why
    from wattcast.config import broker_from_args

    broker = broker_from_args(args)
    if not broker.amqp:
        raise ValueError("wattcast shards needs a RabbitMQ broker over AMQP (--broker amqp://host:port)")
    quiet_pika()
    try:
        conn = pika.BlockingConnection(parameters(broker, "wattcast-shards"))
    except pika.exceptions.AMQPError as exc:
        raise ConnectionError(f"RabbitMQ at {broker.url} did not accept the connection: {why(exc)}") from None
    try:
        channel = conn.channel()
        try:
            groups = declare(channel, args.shards, args.models)
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise ConnectionError(f"RabbitMQ at {broker.url} refused the declarations: {exc.reply_text}") from None
        except topology.ShardCountError as exc:
            raise ValueError(f"{broker.url}: {exc}") from None
    finally:
        if conn.is_open:
            conn.close()
    print(f"declared {args.shards} shard(s) and the queues of {', '.join(groups)} on {broker.url}")
    return 0


def add_shard_commands(sub) -> None:  # noqa: ANN001 - argparse's private _SubParsersAction
    s = sub.add_parser("shards", help="declare a sharded deployment's exchanges and queues on RabbitMQ (docs/scale-out.md)")
    shards = os.environ.get(ENV_SHARDS)
    s.add_argument(
        "--shards",
        type=positive_int,
        default=positive_int(shards) if shards else None,
        required=not shards,
        help=f"the deployment's number of shards (fixed; env {ENV_SHARDS})",
    )
    s.add_argument(
        "--models", nargs="+", type=model_name_arg, required=True, help="the models whose predictors consume the shards"
    )
    add_broker_args(s, required=True)
    s.set_defaults(func=cmd_shards)
