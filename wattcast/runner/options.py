"""``wattcast run``'s options and its one error type."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from wattcast.config import (
    ENV_MODELS_DIR,
    add_data_args,
    columns_from_args,
    env_default,
    model_name_arg,
    parse_speed,
    port_number,
    positive_float,
    positive_int,
)
from wattcast.contract import (
    MODELS,
)

if TYPE_CHECKING:
    from wattcast.meter_csv import ColumnMap


@dataclass
class RunOptions:
    """Everything a run is told, typed, with the defaults of ``wattcast run``'s command line.

    Built once at the entry point (:meth:`from_args`, or directly, as ``wattcast bench`` does:
    a new option gets a default here and needs no change there).
    """

    data: str | None = None
    fraction: float | None = None
    seed: int = 1234  # wattcast.data.DEFAULT_SEED (not imported: pandas would load for --help)
    columns: ColumnMap | None = None  # your own meter's CSV (--time-col, --value-col...)
    broker: str | None = None
    broker_kind: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    models: list[str] = field(default_factory=lambda: list(MODELS))
    external_model: list[str] = field(default_factory=list)
    #: name -> spec of the models that are not built in (filled by the run: your own file.py:factory...)
    specs: dict[str, str] = field(default_factory=dict)
    models_dir: str | None = None
    speed: float | None = None  # None: as fast as flow control allows
    houses: int = 1
    limit: int | None = None
    window: int | None = None
    prometheus_port: int | None = None
    dashboard: bool = False
    dashboard_port: int = 0
    store: str | None = None
    report: str | None = None
    timeout: float = 1800.0
    json: bool = False
    quiet: bool = False
    #: "mosquitto" (one broker, one process per model and the collector) or "rabbitmq" (a cluster, shards)
    engine: str = "mosquitto"
    shards: int = 4
    replicas: int = 1
    cluster_nodes: int = 3
    cluster_mqtt: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        given = {f.name: getattr(args, f.name) for f in fields(cls) if f.name not in ("columns", "specs")}
        return cls(**given, columns=columns_from_args(args))


class RunError(RuntimeError):
    """The run could not complete (one line, shown without traceback)."""


def sqlite_file(value: str) -> str:
    """``--store`` of a run: a file; a run's store, logs and predictor state live together in its folder."""
    if value.startswith(("postgresql://", "postgres://")):
        raise argparse.ArgumentTypeError(
            "wattcast run keeps its store in an SQLite file; a PostgreSQL store is for the collectors of a "
            "deployment (python -m collector --store URL), and wattcast report --db URL reads it"
        )
    return value


def add_run_args(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    p.add_argument(
        "--broker",
        default=None,
        help="use this broker (mqtt://host:port, mqtts:// for TLS); default: start a private one on a free port",
    )
    p.add_argument(
        "--broker-kind",
        choices=("mosquitto", "amqtt"),
        default=None,
        help="private broker to start (default: mosquitto if installed, else the embedded amqtt)",
    )
    p.add_argument("--username", default=None, help="MQTT user name for --broker")
    p.add_argument("--password", default=None, help="MQTT password for --broker")
    p.add_argument("--ca-file", default=None, help="TLS (--broker mqtts://): the CA that signed the broker's certificate")
    p.add_argument("--cert-file", default=None, help="TLS: a client certificate, for a broker that requires one")
    p.add_argument("--key-file", default=None, help="TLS: the key of --cert-file")
    p.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        metavar="MODEL",
        help="models to run: the built-in ones (default: all), a plugin's name, or your own file.py:factory "
        "or module:factory (importable by the nodes)",
    )
    p.add_argument(
        "--external-model",
        action="append",
        default=[],
        type=model_name_arg,
        metavar="NAME",
        help="a model whose predictor runs outside wattcast (any language, speaking the MQTT contract): "
        "the run scores it and waits for it; its login is written to <run>/broker/predictor-NAME.env",
    )
    p.add_argument("--models-dir", default=env_default(ENV_MODELS_DIR), help="artifact folder")
    p.add_argument("--speed", type=parse_speed, default=None, help="1 = real time, N = N x faster, max (default)")
    p.add_argument("--houses", type=positive_int, default=1, help="meters replayed at once (default 1)")
    p.add_argument("--limit", type=positive_int, default=None, help="readings per house (default: the whole split)")
    p.add_argument(
        "--prometheus-port",
        type=port_number,
        default=None,
        help="the collector serves its scores for Prometheus at http://127.0.0.1:PORT/metrics while the run lasts",
    )
    p.add_argument(
        "--dashboard",
        action="store_true",
        help="serve a live web page of the run on 127.0.0.1 (its URL is printed; wattcast dashboard for any deployment)",
    )
    p.add_argument("--dashboard-port", type=port_number, default=0, help="port of --dashboard's page (default: a free one)")
    p.add_argument(
        "--window",
        type=positive_int,
        default=None,
        help="at max speed, readings in flight ahead of the slowest model, all houses together "
        "(at least one minute of each; default: the simulator's 10)",
    )
    p.add_argument(
        "--store", type=sqlite_file, default=None, help="collector's SQLite file (default runs/<time>/wattcast.db)"
    )
    p.add_argument("--report", default=None, metavar="DIR", help="write the HTML/Markdown report here at the end")
    scale = p.add_argument_group("past one machine (docs/scale-out.md)")
    scale.add_argument(
        "--engine",
        choices=("mosquitto", "rabbitmq"),
        default="mosquitto",
        help="mosquitto: one broker, a process per model (default); rabbitmq: a RabbitMQ cluster of the run's own, "
        "houses in --shards, --replicas of the collector and of each model over AMQP",
    )
    scale.add_argument("--shards", type=positive_int, default=4, help="rabbitmq: shards of the houses (default 4)")
    scale.add_argument(
        "--replicas", type=positive_int, default=1, help="rabbitmq: replicas of the collector and of each model (default 1)"
    )
    scale.add_argument("--cluster-nodes", type=positive_int, default=3, help="rabbitmq: nodes of the cluster (default 3)")
    scale.add_argument(
        "--cluster-mqtt",
        default=None,
        metavar="URL",
        help="rabbitmq with --broker amqp://...: the cluster's MQTT listener, for the meter and the runner "
        "(default mqtt://<the first host>:1883)",
    )
    p.add_argument("--timeout", type=positive_float, default=1800.0, help="give up after this many seconds (default 1800)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
