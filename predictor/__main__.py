"""``python -m predictor --model lstm``: a predictor node."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from wattcast.config import (
    ENV_CHECKPOINTS,
    ENV_MODEL,
    ENV_MODELS_DIR,
    ENV_STATE_DIR,
    Parser,
    add_node_args,
    add_shard_args,
    broker_from_args,
    env_default,
    positive_int,
    setup_logging,
)
from wattcast.contract import ALL_ENDS, MODELS, house_filter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(prog="python -m predictor", description="Forecast GAP 5 minutes ahead after every reading.")
    p.add_argument(
        "--model",
        default=env_default(ENV_MODEL),
        required=env_default(ENV_MODEL) is None,
        help=f"the model to run: {', '.join(MODELS)}, a plugin's name, or your own file.py:factory or "
        f"module:factory (env {ENV_MODEL})",
    )
    p.add_argument("--houses", nargs="*", default=None, help="houses to serve (default: all)")
    p.add_argument("--models-dir", default=env_default(ENV_MODELS_DIR), help=f"artifact folder (env {ENV_MODELS_DIR})")
    p.add_argument("--mu", type=float, default=0.9, help="forgetting factor of the linear model")

    p.add_argument("--max-batch", type=positive_int, default=512, help="most readings predicted in one call")
    p.add_argument(
        "--state-dir",
        default=env_default(ENV_STATE_DIR),
        help="keep every house's state in <dir>/<node>.json, so that a restarted predictor goes on "
        f"exactly where it stopped (env {ENV_STATE_DIR}; default: in memory only)",
    )
    p.add_argument(
        "--checkpoints",
        default=env_default(ENV_CHECKPOINTS),
        help="keep every house's state in this store, a postgresql:// URL or an SQLite file, which every "
        "replica of the model reads: a standby takes a shard over where the active replica stopped "
        f"(env {ENV_CHECKPOINTS}, which keeps a password out of ps)",
    )
    add_node_args(p, None)  # the node id defaults to predictor-<model>
    add_shard_args(p)
    args = p.parse_args(argv)
    if args.shards is not None and args.houses:
        p.error("--houses and --shards exclude each other: a sharded predictor serves the houses of its shards")
    return args


def _host() -> str:
    """This replica's host: a container's own (HOSTNAME), or the machine's."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    from predictor.node import PredictorNode
    from wattcast.forecasters import ArtifactError, load_model
    from wattcast.node import StopFlag, connect, serve

    stop = StopFlag()
    try:
        model = load_model(args.model, args.models_dir, mu=args.mu)
        # replicas of a sharded deployment are told apart by their host (a container's is its own)
        node = args.node or f"predictor-{model.name}" + (f"-{_host()}" if args.shards else "")
        shared = None
        if args.checkpoints:
            from wattcast.store.checkpoints import SharedCheckpoints

            shared = SharedCheckpoints(args.checkpoints, model.name, model.version)
        broker = broker_from_args(args)
        bus = connect(broker, node, "predictor", manual_ack=True, model=model.name)
    except (ArtifactError, ConnectionError, ValueError, OSError) as exc:
        print(f"predictor: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the checkpoint store's driver errors: one line, no traceback
        print(f"predictor: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    state_path = Path(args.state_dir) / f"{node}.json" if args.state_dir else None
    predictor = PredictorNode(bus, model, node, state_path, shared=shared)
    try:
        predictor.checkpoint()  # a state directory that cannot be written fails now, not at the first batch
    except OSError as exc:
        bus.close()
        print(f"predictor: error: cannot write its state to {state_path}: {exc}", file=sys.stderr)
        return 1
    bus.subscribe(
        *house_filter(args.houses, "reading"), *([ALL_ENDS] if not args.houses else house_filter(args.houses, "end"))
    )
    logging.getLogger("predictor").info("%s serving %s (%s) on %s", node, model.name, model.version, broker.url)
    try:
        serve(
            bus,
            node,
            "predictor",
            predictor.stats,
            predictor.handle,
            stop,
            max_batch=args.max_batch,
            tick=predictor.tick,
            checkpoint=predictor.checkpoint if state_path is not None or shared is not None else None,
            model=model.name,
        )
    finally:
        bus.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
