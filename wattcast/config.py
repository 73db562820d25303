"""Configuration shared by the entry points: flags with environment defaults.

Only entry points call these (while building their argument parser); modules
below them receive plain values.  Every variable is documented in the README.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from wattcast.bus import BrokerConfig

if TYPE_CHECKING:
    from wattcast.meter_csv import ColumnMap

ENV_BROKER = "WATTCAST_BROKER"  # mqtt://host:port
ENV_USERNAME = "WATTCAST_MQTT_USERNAME"
ENV_PASSWORD = "WATTCAST_MQTT_PASSWORD"
ENV_CA_FILE = "WATTCAST_MQTT_CA_FILE"
ENV_CERT_FILE = "WATTCAST_MQTT_CERT_FILE"
ENV_KEY_FILE = "WATTCAST_MQTT_KEY_FILE"
ENV_HOUSES = "WATTCAST_HOUSES"
ENV_SPEED = "WATTCAST_SPEED"
ENV_MODEL = "WATTCAST_MODEL"
ENV_MODELS = "WATTCAST_MODELS"
ENV_MODELS_DIR = "WATTCAST_MODELS_DIR"
ENV_DATA = "WATTCAST_DATA"
ENV_STORE = "WATTCAST_STORE"
ENV_SHARDS = "WATTCAST_SHARDS"
ENV_CHECKPOINTS = "WATTCAST_CHECKPOINTS"
ENV_SERVE_SHARDS = "WATTCAST_SERVE_SHARDS"
ENV_LOG_LEVEL = "WATTCAST_LOG_LEVEL"
ENV_WAIT_FOR = "WATTCAST_WAIT_FOR"
ENV_AWAIT_NODES = "WATTCAST_AWAIT_NODES"
ENV_RECOVER_FROM = "WATTCAST_RECOVER_FROM"
ENV_RUN = "WATTCAST_RUN"
ENV_STATE_DIR = "WATTCAST_STATE_DIR"
ENV_PROMETHEUS_PORT = "WATTCAST_PROMETHEUS_PORT"
ENV_PROMETHEUS_HOST = "WATTCAST_PROMETHEUS_HOST"
ENV_HA_DISCOVERY = "WATTCAST_HA_DISCOVERY"
#: OpenBLAS' thread pool (NumPy): a node multiplies tiny matrices, so one thread.  A pool
#: per node only costs start-up CPU (measured 0.1 s of the 0.28 s that importing NumPy
#: takes on 2 cores) and competes with the other nodes for the cores.
ENV_BLAS_THREADS = "OPENBLAS_NUM_THREADS"


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: ``<name>: error: ...``, exit 2, no traceback.

    ``<name>`` is ``wattcast`` for every subcommand and the node's name for
    ``python -m simulator|predictor|collector``.  Environment defaults go through the
    same type checks as flags (argparse converts a string default with ``type``), so a
    bad ``WATTCAST_HOUSES=x`` is a usage error too, named with its flag.
    """

    def error(self, message: str):  # noqa: D401 - argparse's signature
        name = self.prog.split()[-1] if self.prog.startswith("python") else self.prog.split()[0]
        self.exit(2, f"{name}: error: {message} (see {self.prog} --help)\n")


def _whole_number(value: str, least: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {n}")
    return n


def positive_int(value: str) -> int:
    return _whole_number(value, 1)


def non_negative_int(value: str) -> int:
    return _whole_number(value, 0)


def model_name_arg(value: str) -> str:
    """A model's name (an id): built-in, a plugin's or a user's own."""
    from wattcast.contract import model_name

    try:
        return model_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def port_number(value: str) -> int:
    """A TCP port, 0 for a free one."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a port number, got {value!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {n}")
    return n


def _number(value: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return x


def positive_float(value: str) -> float:
    x = _number(value)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return x


def non_negative_float(value: str) -> float:
    x = _number(value)
    if x < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return x


def fraction(value: str) -> float:
    x = _number(value)
    if not 0.0 < x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return x


def broker_url(value: str) -> str:
    try:
        BrokerConfig.from_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def parse_speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a number or 'max', got {value!r}") from None
    if not 0 < speed < float("inf"):
        raise argparse.ArgumentTypeError(f"speed must be a positive number or 'max', got {value!r}")
    return speed


def run_id(value: str) -> str:
    from wattcast.contract import MessageError, check_run

    try:
        return check_run(value)
    except MessageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def log_level(value: str) -> str:
    if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise argparse.ArgumentTypeError(f"expected DEBUG, INFO, WARNING or ERROR, got {value!r}")
    return value.upper()


def add_broker_args(parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None, required: bool = False) -> None:
    env = os.environ if env is None else env
    default = env.get(ENV_BROKER) or (None if required else "mqtt://127.0.0.1:1883")
    parser.add_argument(
        "--broker",
        default=default,
        required=required and default is None,
        type=broker_url,
        help=f"MQTT broker URL mqtt://host:port, mqtts://host:port for TLS (env {ENV_BROKER}; default %(default)s)",
    )
    parser.add_argument("--username", default=env.get(ENV_USERNAME), help=f"MQTT user name (env {ENV_USERNAME})")
    parser.add_argument("--password", default=env.get(ENV_PASSWORD), help=f"MQTT password (env {ENV_PASSWORD})")
    parser.add_argument(
        "--ca-file",
        default=env.get(ENV_CA_FILE),
        help=f"TLS: the CA certificate that signed the broker's (env {ENV_CA_FILE}; default: the system's CAs)",
    )
    parser.add_argument(
        "--cert-file",
        default=env.get(ENV_CERT_FILE),
        help=f"TLS: this client's certificate, for a broker that requires one (env {ENV_CERT_FILE})",
    )
    parser.add_argument(
        "--key-file", default=env.get(ENV_KEY_FILE), help=f"TLS: the key of --cert-file (env {ENV_KEY_FILE})"
    )


def broker_from_args(args: argparse.Namespace) -> BrokerConfig:
    """The broker of a node's arguments; ValueError (one line) for TLS files without an mqtts:// URL."""
    return BrokerConfig.from_url(
        args.broker,
        args.username,
        args.password,
        args.ca_file,
        args.cert_file,
        args.key_file,
        shards=getattr(args, "shards", None),
        serve_shards=getattr(args, "serve_shards", None),
        standby_shards=getattr(args, "standby_shards", None),
    )


def shard_list(value: str) -> tuple[int, ...]:
    """``0,2,3``: shard numbers."""
    try:
        shards = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"shards are numbers separated by commas, got {value!r}") from None
    if not shards:
        raise argparse.ArgumentTypeError("name at least one shard")
    return shards


def add_shard_args(parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None) -> None:
    """A sharded node's: how many shards the deployment has, and which of them it serves."""
    env = os.environ if env is None else env
    shards = env.get(ENV_SHARDS)
    serve = env.get(ENV_SERVE_SHARDS)
    group = parser.add_argument_group("shards (RabbitMQ over AMQP; docs/scale-out.md)")
    group.add_argument(
        "--shards",
        type=positive_int,
        default=positive_int(shards) if shards else None,
        help=f"the deployment's number of shards: houses are hashed onto them (env {ENV_SHARDS}; default: not sharded)",
    )
    group.add_argument(
        "--serve-shards",
        type=shard_list,
        default=shard_list(serve) if serve else None,
        help=f"the shards this node consumes, e.g. 0,1 (env {ENV_SERVE_SHARDS}; default: all); each has one "
        "active consumer per group, the others stand by",
    )
    group.add_argument(
        "--standby-shards",
        type=shard_list,
        default=None,
        help="shards to stand by for: consumed a few seconds after --serve-shards, so that the nodes serving "
        "them are their active consumers and this one takes over when such a node goes",
    )


def add_data_args(parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    parser.add_argument(
        "--data",
        default=env.get(ENV_DATA),
        help="meter data: the UCI .txt, its .zip, a .txt.gz, or the course's cleaned CSV "
        f"(env {ENV_DATA}; default: the shipped 20,492-row sample)",
    )
    parser.add_argument(
        "--fraction",
        type=fraction,
        default=None,
        help="share of the cleaned rows to keep as one contiguous block "
        "(default 0.01 of a data file; 1.0 of the shipped sample, which is that block)",
    )
    parser.add_argument("--seed", type=int, default=1234, help="seed of the block's start (default %(default)s)")
    own = parser.add_argument_group("your own meter's CSV (--data my.csv; README: Your own meter's data)")
    own.add_argument("--time-col", help="the column of the reading times (ISO 8601, unix seconds or ms)")
    own.add_argument("--value-col", help="the column of global active power, the forecast target")
    own.add_argument("--unit", choices=("kW", "W"), help="unit of the power columns (default kW)")
    own.add_argument(
        "--field",
        action="append",
        metavar="FIELD=COLUMN",
        help="a column of another measurement, e.g. voltage=V_rms (repeatable; fields as in the reading contract)",
    )
    own.add_argument(
        "--time-format", help="strftime format of the times when they are not ISO 8601, e.g. %%d/%%m/%%Y %%H:%%M"
    )
    own.add_argument(
        "--fill-gaps",
        type=non_negative_int,
        metavar="MINUTES",
        help="interpolate gaps of at most this many minutes (default 0: a minute without a row is not sent)",
    )


OWN_CSV_FLAGS = ("time_col", "value_col", "unit", "field", "time_format", "fill_gaps")


def columns_from_args(args: argparse.Namespace) -> ColumnMap | None:
    """The column map of ``--time-col`` and friends, or None (a UCI file); ColumnError: one line."""
    from wattcast.meter_csv import ColumnError, ColumnMap

    given = [f for f in OWN_CSV_FLAGS if getattr(args, f, None) not in (None, [])]
    if not given:
        return None
    if not (args.time_col and args.value_col):
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise ColumnError(f"{flags} describe your own CSV: give both --time-col and --value-col")
    fields = tuple(ColumnMap.parse_field(text) for text in args.field or ())
    return ColumnMap(args.time_col, args.value_col, args.unit or "kW", fields, args.time_format, args.fill_gaps or 0)


def add_log_args(parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    parser.add_argument(
        "--log-level",
        default=env.get(ENV_LOG_LEVEL, "INFO"),
        type=log_level,
        help=f"DEBUG, INFO, WARNING or ERROR (env {ENV_LOG_LEVEL}; default %(default)s)",
    )


def add_node_args(parser: argparse.ArgumentParser, node: str | None, env: Mapping[str, str] | None = None) -> None:
    """What every node takes: its id, the log level and the broker."""
    default = f"default {node}" if node else "default per role"
    parser.add_argument("--node", default=node, help=f"node id, also the MQTT client id (wattcast-<node>); {default}")
    add_log_args(parser, env)
    add_broker_args(parser, env)


def setup_logging(level: str) -> None:
    import logging

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")


def env_default(name: str, default: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get(name, default)
