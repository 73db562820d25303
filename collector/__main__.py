"""``python -m collector``: score every model's forecasts against the actual readings."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from wattcast.config import (
    ENV_HA_DISCOVERY,
    ENV_MODELS,
    ENV_PROMETHEUS_HOST,
    ENV_PROMETHEUS_PORT,
    ENV_STORE,
    Parser,
    add_node_args,
    add_shard_args,
    broker_from_args,
    env_default,
    model_name_arg,
    non_negative_float,
    port_number,
    positive_float,
    positive_int,
    setup_logging,
)
from wattcast.contract import ALL_ENDS, ALL_FORECASTS, ALL_READINGS, ALL_STATUS, MODELS
from wattcast.homeassistant import DEFAULT_PREFIX
from wattcast.node import EXIT_INCOMPLETE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(prog="python -m collector", description="Match forecasts to readings and score them.")
    p.add_argument(
        "--store",
        default=env_default(ENV_STORE, "wattcast.db"),
        help=f"SQLite file or postgresql:// URL (env {ENV_STORE}, which keeps a password out of ps; default %(default)s)",
    )
    models = env_default(ENV_MODELS)
    p.add_argument(
        "--models",
        nargs="+",
        type=model_name_arg,
        default=models.split(",") if models else list(MODELS),
        help=f"names of the models to score: built-in, plugins or your own (env {ENV_MODELS}, comma-separated; "
        "default: the built-in ones)",
    )
    p.add_argument(
        "--window", type=positive_int, default=60, help="rolling MSE window in minutes of event time (default 60)"
    )
    p.add_argument("--metrics-every", type=positive_float, default=1.0, help="seconds between metrics publications")
    p.add_argument(
        "--drain",
        type=non_negative_float,
        default=30.0,
        help="seconds to wait at end of stream for missing final forecasts (default 30)",
    )
    p.add_argument(
        "--exit-on-end",
        action="store_true",
        help="exit once the replays that sent anything since the start are scored: 0 if complete, "
        f"{EXIT_INCOMPLETE} if a reading or forecast is missing or conflicting",
    )
    p.add_argument(
        "--prometheus-port",
        type=port_number,
        default=env_default(ENV_PROMETHEUS_PORT),
        help=f"serve the scores and node counters for Prometheus at http://HOST:PORT/metrics (0: a free port; "
        f"env {ENV_PROMETHEUS_PORT}; default: not served)",
    )
    p.add_argument(
        "--prometheus-host",
        default=env_default(ENV_PROMETHEUS_HOST, "127.0.0.1"),
        help=f"address of /metrics (env {ENV_PROMETHEUS_HOST}; default %(default)s; 0.0.0.0 in a container)",
    )
    p.add_argument(
        "--ha-discovery",
        nargs="?",
        const=DEFAULT_PREFIX,
        default=env_default(ENV_HA_DISCOVERY) or None,
        metavar="PREFIX",
        help="announce every house's actual and forecast power as Home Assistant sensors (MQTT discovery, retained) "
        f"under PREFIX (default {DEFAULT_PREFIX}; env {ENV_HA_DISCOVERY}); remove them with wattcast ha-discovery --remove",
    )
    add_node_args(p, None)  # collector, or collector-<host> for a replica of a sharded deployment
    add_shard_args(p)
    args = p.parse_args(argv)
    if args.node is None:  # replicas of a sharded deployment are told apart by their host (a container's own)
        args.node = "collector" + (f"-{_host()}" if args.shards else "")
    return args


def _host() -> str:
    """This replica's host: a container's own (HOSTNAME), or the machine's."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    from collector.node import CollectorNode
    from wattcast.node import StopFlag, connect, serve
    from wattcast.store import Store

    exporter = None  # /metrics first: a port in use fails before anything else starts
    if args.prometheus_port is not None:
        from collector.prometheus import Exporter

        exporter = Exporter()
        try:
            port = exporter.serve(int(args.prometheus_port), args.prometheus_host)
        except OSError as exc:
            where = f"{args.prometheus_host}:{args.prometheus_port}"
            print(f"collector: error: cannot serve /metrics on {where}: {exc}", file=sys.stderr)
            return 1
        logging.getLogger("collector").info(
            "collector: Prometheus metrics at http://%s:%d/metrics", args.prometheus_host, port
        )
    stop = StopFlag()
    try:
        store = Store(args.store)
        broker = broker_from_args(args)
        bus = connect(broker, args.node, "collector", manual_ack=True)
    except Exception as exc:  # OSError, ConnectionError, sqlite3.Error and friends: one line, no traceback
        if exporter is not None:
            exporter.close()
        known = isinstance(exc, ConnectionError | ValueError | OSError)
        print(f"collector: error: {exc if known else f'{type(exc).__name__}: {exc}'}", file=sys.stderr)
        return 1
    node = CollectorNode(
        bus,
        store,
        tuple(args.models),
        args.window * 60,
        args.metrics_every,
        args.drain,
        args.node,
        exporter,
        args.ha_discovery,
        sharded=broker.shards is not None,
    )
    bus.subscribe(ALL_READINGS, ALL_FORECASTS, ALL_ENDS, ALL_STATUS)

    def tick() -> bool:
        return node.tick() and args.exit_on_end

    try:
        serve(bus, args.node, "collector", node.stats, node.handle, stop, max_batch=1000, tick=tick)
    finally:
        bus.close()
        store.close()
        if exporter is not None:
            exporter.close()
    if args.exit_on_end and node.finished and node.failed:
        # scored, but not all there (a loss) or not all agreeing (a conflict): never a silent 0
        print(
            f"collector: error: the scored run is incomplete or conflicting: {'; '.join(node.failed[:8])}"
            + (" ..." if len(node.failed) > 8 else ""),
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return 0


if __name__ == "__main__":
    sys.exit(main())
