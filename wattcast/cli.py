"""The wattcast command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from wattcast import __version__
from wattcast.config import (
    ENV_DATA,
    ENV_MODELS_DIR,
    Parser,
    add_broker_args,
    add_data_args,
    columns_from_args,
    env_default,
    model_name_arg,
    positive_float,
    positive_int,
    run_id,
)
from wattcast.contract import MODELS
from wattcast.data_commands import add_data_commands
from wattcast.shard_commands import add_shard_commands
from wattcast.viewer_commands import add_viewer_commands


class UsageError(Exception):
    """A command line that cannot be carried out (one-line message, exit 2)."""


def _models_dir(value: str | None) -> Path | None:
    return Path(value) if value else None


def _store_location(value: str) -> str | Path:
    """A store given on the command line: a ``postgresql://`` URL as it is, else an SQLite file."""
    from wattcast.store.database import is_postgres

    return value if is_postgres(value) else Path(value)


# ----------------------------------------------------------------------- subcommands


def cmd_train(args: argparse.Namespace) -> int:
    from wattcast.data import absent_fields, load_split

    names = ["lstm", "lstm-augmented", "gbm", "rls"] if args.model == "all" else [args.model]
    columns = columns_from_args(args)
    split = load_split(args.data, args.fraction, args.seed, columns)
    out = Path(args.out) if args.out else _default_models_dir()
    absent = absent_fields(split.train)
    for name in names:
        if name.startswith("gbm"):
            meta = _train_gbm(name, args, split, columns, out)
        elif name == "rls":
            if absent:
                raise UsageError(f"rls learns from all seven measurements; the data lacks {', '.join(absent)}")
            from wattcast.rls_training import train_rls

            meta = train_rls(split, out, log=lambda line: print(line, file=sys.stderr))
        else:
            try:
                from wattcast.training import SPECS, TrainOptions, train
            except ImportError as exc:
                raise UsageError(
                    f"training needs TensorFlow ({exc.name} is missing): pip install 'wattcast[train]'"
                ) from None
            lacking = [f for f in SPECS[name].features if f in absent]
            if lacking:
                raise UsageError(f"{name} learns from {', '.join(lacking)}, which the data does not have (--field)")
            units = tuple(int(u) for u in args.units.split(",")) if args.units else None
            meta = train(name, split, out, TrainOptions(seed=args.train_seed, epochs=args.epochs, units=units))
        v = meta["validation"]
        print(f"{name}: n={v['n']} mse={v['mse']:.4f} rmse={v['rmse']:.4f} mae={v['mae']:.4f} -> {out / name}")
    return 0


def _train_gbm(name: str, args: argparse.Namespace, split, columns, out: Path) -> dict:
    from wattcast.data import absent_fields, read_meter_file, sample_path
    from wattcast.gbm_training import history_frame, train_gbm

    if absent_fields(split.train):
        raise UsageError(
            f"{name} learns from all seven measurements; the data lacks {', '.join(absent_fields(split.train))}"
        )
    history = None
    if name == "gbm-history":  # the readings before the validation start: the whole file again
        history = history_frame(read_meter_file(args.data or sample_path(), columns), split, args.history_rows)
    return train_gbm(name, split, out, history, log=lambda line: print(line, file=sys.stderr))


def _default_models_dir() -> Path:
    from wattcast.forecasters import default_models_dir

    return default_models_dir()


def cmd_evaluate(args: argparse.Namespace) -> int:
    from wattcast.data import load_split
    from wattcast.evaluation import evaluate
    from wattcast.forecasters import load_model

    split = load_split(args.data, args.fraction, args.seed, columns_from_args(args))
    from wattcast.data import absent_fields, data_notes, lacking_note

    for note in data_notes(split.info):
        print(f"wattcast: data: {note}", file=sys.stderr)
    results = {}
    absent = absent_fields(split.val)
    for name in args.models:
        model = load_model(name, _models_dir(args.models_dir), mu=args.mu)
        lacking = [f for f in model.needs if f in absent]
        if lacking:
            print(f"wattcast: {lacking_note(model.name, lacking)}", file=sys.stderr)
            continue
        results[model.name] = evaluate(model, split.val).to_dict()
    if not results:
        raise UsageError("no model can run on this data (above: what each needs)")
    if args.json:
        print(json.dumps({"split": split.info, "models": results}, indent=2))
        return 0
    info = split.info
    print(
        f"validation split: {info['val_rows']} readings {info['val_window'][0]} .. {info['val_window'][1]} "
        f"(source: {info['source']}, fraction {info['fraction']}, seed {info['seed']})"
    )
    print(f"{'model':<16}{'n':>7}{'MSE':>10}{'RMSE':>10}{'MAE':>10}")
    for name, r in results.items():
        print(f"{name:<16}{r['n']:>7}{r['mse']:>10.4f}{r['rmse']:>10.4f}{r['mae']:>10.4f}")
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from wattcast.backtest import backtest_command

    return backtest_command(args)


def cmd_run(args: argparse.Namespace) -> int:
    from wattcast.runner import run_command

    return run_command(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from wattcast.bench import bench_command

    return bench_command(args)


def cmd_report(args: argparse.Namespace) -> int:
    from wattcast.report import build_report

    paths = build_report(_store_location(args.db), Path(args.out), models_dir=_models_dir(args.models_dir), run=args.run)
    for p in paths:
        print(p)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from wattcast.report import list_runs

    for line in list_runs(_store_location(args.db)):
        print(line)
    return 0


def cmd_broker_passwd(args: argparse.Namespace) -> int:
    from wattcast.credentials import passwd_command

    return passwd_command(args)


def cmd_broker_certs(args: argparse.Namespace) -> int:
    from wattcast.certs import certs_command

    return certs_command(args)


def cmd_ha_discovery(args: argparse.Namespace) -> int:
    import re

    from wattcast.bus import MqttBus
    from wattcast.config import broker_from_args
    from wattcast.contract.payloads import ID_PATTERN
    from wattcast.homeassistant import discovery_messages, removal_messages

    houses = [f"h{k:03d}" for k in range(args.houses)] if args.houses else []
    houses += args.house or []
    if not houses:
        raise UsageError("name the houses: --houses N (h000 ...) or --house ID")
    for house in houses:
        if not re.search(ID_PATTERN, house):
            raise UsageError(f"not a house id (1-64 characters of [A-Za-z0-9_.-]): {house!r}")
    make = removal_messages if args.remove else discovery_messages
    messages = [m for house in houses for m in make(args.prefix, house, args.models)]
    bus = MqttBus(broker_from_args(args), client_id=f"wattcast-ha-{os.getpid()}", session=False).connect()
    try:
        for topic, payload in messages:
            bus.publish(topic, payload, qos=1, retain=True)
        if not bus.flush(timeout=30):
            raise ConnectionError(f"the broker at {bus.broker.url} did not acknowledge the discovery messages")
    finally:
        bus.close()
    what = "removed" if args.remove else "announced"
    print(f"{what} {len(messages)} Home Assistant sensors of {', '.join(houses)} under {args.prefix}/", file=sys.stderr)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    import signal

    from wattcast.bus import MqttBus
    from wattcast.capture import record
    from wattcast.config import broker_from_args

    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent}: no such folder for --out")
    filters = args.topic or ["wattcast/v1/#"]
    stopped: list[int] = []  # Ctrl-C or SIGTERM end the recording normally
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: stopped.append(signum))
    bus = MqttBus(broker_from_args(args), client_id=f"wattcast-record-{os.getpid()}", session=False).connect()
    try:
        bus.subscribe(*filters, timeout=10)
        print(f"recording {' '.join(filters)} to {out}", file=sys.stderr, flush=True)
        n = record(bus, out, lambda: bool(stopped), args.duration, args.count)
    finally:
        bus.close()
    print(f"recorded {n} messages to {out}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="wattcast", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"wattcast {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    add_data_commands(sub)

    t = sub.add_parser("train", help="train a model and write its artifact (the LSTMs need TensorFlow)")
    t.add_argument(
        "--model",
        required=True,
        choices=["lstm", "lstm-augmented", "gbm", "gbm-history", "rls", "all"],
        help="the model to train; all: lstm, lstm-augmented, gbm and rls (gbm-history needs the full data set)",
    )
    add_data_args(t)
    t.add_argument("--out", default=None, help="artifact folder (default: the repository's models/)")
    t.add_argument("--epochs", type=positive_int, default=None, help="maximum epochs (default: the course's 100)")
    t.add_argument("--units", default=None, help="LSTM units, comma-separated (default: the course's)")
    t.add_argument("--train-seed", type=int, default=1234, help="seed of weights and shuffling (default %(default)s)")
    t.add_argument(
        "--history-rows",
        type=positive_int,
        default=200_000,
        help="gbm-history: train on this many readings before the validation start (default %(default)s)",
    )
    t.set_defaults(func=cmd_train)

    bt = sub.add_parser("backtest", help="score the models on many windows of the full data set, against persistence")
    from wattcast.backtest import add_backtest_args

    add_backtest_args(bt, env_default(ENV_DATA))
    bt.set_defaults(func=cmd_backtest)

    e = sub.add_parser("evaluate", help="score every model on the validation split")
    add_data_args(e)
    e.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        metavar="MODEL",
        help=f"models to score: {', '.join(MODELS)} (default: all), a plugin's name, or your own "
        "file.py:factory or module:factory",
    )
    e.add_argument("--models-dir", default=env_default(ENV_MODELS_DIR), help="artifact folder")
    e.add_argument("--mu", type=float, default=0.9, help="forgetting factor of the linear model")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("run", help="replay the data through a live MQTT pipeline and score it")
    from wattcast.runner import add_run_args

    add_run_args(r)
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("bench", help="measure throughput, latency and memory of the pipeline")
    from wattcast.bench import add_bench_args

    add_bench_args(b)
    b.set_defaults(func=cmd_bench)

    rp = sub.add_parser("report", help="build the HTML/Markdown report from a collector store")
    rp.add_argument("--db", required=True, help="the collector's store: its SQLite file or a postgresql:// URL")
    rp.add_argument("--out", required=True, help="output folder")
    rp.add_argument("--models-dir", default=env_default(ENV_MODELS_DIR), help="artifact folder (loss curves)")
    rp.add_argument(
        "--run",
        type=run_id,
        default=None,
        help="the run (replay) to report; default: the newest (`wattcast runs --db` lists them)",
    )
    rp.set_defaults(func=cmd_report)

    rs = sub.add_parser("runs", help="list the runs (replays) a collector store holds")
    rs.add_argument("--db", required=True, help="the collector's store: its SQLite file or a postgresql:// URL")
    rs.set_defaults(func=cmd_runs)

    add_viewer_commands(sub)
    add_shard_commands(sub)

    rec = sub.add_parser("record", help="capture a live MQTT stream to a file (JSON lines) for a later replay")
    add_broker_args(rec)
    rec.add_argument(
        "--topic", action="append", default=None, metavar="FILTER", help="topic filter (repeat; default wattcast/v1/#)"
    )
    rec.add_argument("--out", required=True, help="the capture file (.jsonl, or .jsonl.gz compressed)")
    rec.add_argument("--duration", type=positive_float, default=None, help="stop after this many seconds")
    rec.add_argument("--count", type=positive_int, default=None, help="stop after this many messages")
    rec.set_defaults(func=cmd_record)

    ha = sub.add_parser(
        "ha-discovery", help="announce (or --remove) the Home Assistant sensors of a deployment's houses and models"
    )
    add_broker_args(ha)
    ha.add_argument("--prefix", default="homeassistant", help="Home Assistant's discovery prefix (default %(default)s)")
    ha.add_argument("--houses", type=positive_int, default=None, help="houses h000 .. of a replay of N houses")
    ha.add_argument("--house", action="append", default=None, metavar="ID", help="a house by id (repeat)")
    ha.add_argument(
        "--models", nargs="+", type=model_name_arg, default=list(MODELS), metavar="MODEL", help="default: the built-in ones"
    )
    ha.add_argument("--remove", action="store_true", help="remove the sensors (empty retained configs)")
    ha.set_defaults(func=cmd_ha_discovery)

    bk = sub.add_parser("broker", help="credentials and certificates of the compose deployment's broker")
    bsub = bk.add_subparsers(dest="broker_command", metavar="ACTION", required=True)
    bp = bsub.add_parser("passwd", help="create the MQTT passwords (.env for docker compose; random unless given)")
    from wattcast.credentials import add_passwd_args

    add_passwd_args(bp)
    bp.set_defaults(func=cmd_broker_passwd)
    bc = bsub.add_parser("certs", help="make a private CA and the broker's and users' TLS certificates")
    from wattcast.certs import add_certs_args

    add_certs_args(bc)
    bc.set_defaults(func=cmd_broker_certs)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    from wattcast.data import DataError
    from wattcast.forecasters import ArtifactError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("wattcast: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `wattcast evaluate | head -3`: the reader has gone, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (UsageError, DataError, ArtifactError, ConnectionError, ValueError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"wattcast: error: {msg}", file=sys.stderr)
        bad_input = isinstance(exc, DataError | ArtifactError)
        usage = isinstance(exc, UsageError) or (isinstance(exc, ValueError) and not bad_input)
        return 2 if usage else 1


if __name__ == "__main__":
    sys.exit(main())
