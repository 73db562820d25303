"""``python -m simulator``: replay the validation split as live meter streams."""

from __future__ import annotations

import argparse
import sys

from simulator.replay import DEFAULT_WINDOW
from wattcast.config import (
    ENV_AWAIT_NODES,
    ENV_HOUSES,
    ENV_MODELS,
    ENV_RECOVER_FROM,
    ENV_RUN,
    ENV_SPEED,
    ENV_WAIT_FOR,
    Parser,
    add_data_args,
    add_node_args,
    broker_from_args,
    columns_from_args,
    env_default,
    model_name_arg,
    parse_speed,
    positive_float,
    positive_int,
    run_id,
    setup_logging,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(prog="python -m simulator", description="Publish the validation split as per-minute readings.")
    add_data_args(p)
    p.add_argument(
        "--speed",
        type=parse_speed,
        default=env_default(ENV_SPEED, "max"),
        help=f"1 = real time, N = N times faster, max = as fast as flow control allows (env {ENV_SPEED})",
    )
    p.add_argument(
        "--houses",
        type=positive_int,
        default=env_default(ENV_HOUSES, "1"),
        help=f"number of meters replayed at once (env {ENV_HOUSES}; default %(default)s)",
    )
    p.add_argument("--limit", type=positive_int, default=None, help="readings per house (default: the whole split)")
    p.add_argument(
        "--qos",
        type=int,
        choices=(0, 1),
        default=1,
        help="MQTT QoS of the readings: 1 = at least once (default), 0 = at most once",
    )
    awaited = env_default(ENV_MODELS)
    p.add_argument(
        "--await-models",
        nargs="*",
        type=model_name_arg,
        metavar="MODEL",
        default=awaited.split(",") if awaited else [],
        help="at max speed, keep at most --window readings ahead of these models' forecasts "
        f"(env {ENV_MODELS}, comma-separated; default: none)",
    )
    paced_by = env_default(ENV_AWAIT_NODES)
    p.add_argument(
        "--await-nodes",
        nargs="*",
        metavar="NODE",
        default=paced_by.split(",") if paced_by else [],
        help="at max speed, also keep at most --window readings ahead of these nodes' progress "
        f"(the collector publishes it; env {ENV_AWAIT_NODES}, comma-separated; default: none)",
    )
    waits = env_default(ENV_WAIT_FOR)
    p.add_argument(
        "--wait-for",
        nargs="*",
        metavar="NODE",
        default=waits.split(",") if waits else [],
        help="wait until these nodes (e.g. collector predictor-lstm) report online before replaying "
        f"(env {ENV_WAIT_FOR}, comma-separated)",
    )
    p.add_argument(
        "--recover-from",
        metavar="NODE",
        default=env_default(ENV_RECOVER_FROM),
        help="after losing the broker, send again what this node (the collector) does not hold "
        "completely, once it and the --wait-for nodes are back; and end only when it holds "
        f"everything (env {ENV_RECOVER_FROM}; default: off)",
    )
    p.add_argument(
        "--run",
        type=run_id,
        default=env_default(ENV_RUN),
        help="the id of this replay, on every message it causes; nodes that are still running "
        f"score a new run apart (env {ENV_RUN}; default: a new one, UTC start time + random)",
    )
    p.add_argument("--wait-timeout", type=positive_float, default=300.0, help="seconds to wait for them (default 300)")
    p.add_argument(
        "--window",
        type=positive_int,
        default=DEFAULT_WINDOW,
        help="at --speed max: readings in flight (all houses, at least a minute of each) ahead of the "
        "slowest model; smaller = lower forecast latency, larger = faster replay "
        f"(default {DEFAULT_WINDOW})",
    )
    p.add_argument(
        "--split-file",
        metavar="FILE",
        default=None,
        help="replay this validation split as wattcast run prepared it (.npz) instead of reading --data",
    )
    p.add_argument(
        "--capture",
        metavar="FILE",
        default=None,
        help="replay this capture (wattcast record) instead of the data set: every message again, "
        "with its original timing divided by --speed (max: as fast as the broker acknowledges)",
    )
    p.add_argument("--loop", type=positive_int, default=1, help="with --capture: replay it N times (default 1)")
    p.add_argument(
        "--shift-to-now",
        action="store_true",
        help="with --capture: move event times by whole minutes so that the first reading is now",
    )
    add_node_args(p, "simulator")
    return p.parse_args(argv)


def replay_a_capture(args: argparse.Namespace) -> int:
    """``--capture``: publish a recorded stream again (simulator/capture.py)."""
    from simulator.capture import replay_capture
    from simulator.readiness import wait_for_nodes
    from wattcast.capture import CaptureError, read_capture
    from wattcast.node import StopFlag, connect

    stop = StopFlag()
    try:
        messages = list(read_capture(args.capture))
        bus = connect(broker_from_args(args), args.node, "simulator", session=False)
    except (CaptureError, ConnectionError, ValueError, OSError) as exc:
        print(f"simulator: error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.wait_for:  # as a replay of the data set does: nothing is published before they listen
            print(f"simulator: waiting for {', '.join(args.wait_for)}", file=sys.stderr, flush=True)
            wait_for_nodes(bus, args.wait_for, args.wait_timeout)
        n = replay_capture(bus, messages, args.speed, args.loop, args.shift_to_now, stop.is_set)
    except TimeoutError as exc:
        print(f"simulator: error: {exc}", file=sys.stderr)
        return 1
    finally:
        bus.close()
    print(f"simulator: replayed {n} messages of {args.capture} ({args.loop} loop(s))", file=sys.stderr)
    return 0 if not stop.is_set() else 130


def load_streams(args: argparse.Namespace) -> list:
    """The houses to replay: from ``--split-file`` (NumPy only), or from the data file (read with pandas)."""
    from simulator.streams import house_streams, streams_of

    if args.split_file:
        from wattcast.split_file import read_split

        return streams_of(*read_split(args.split_file), args.houses, args.limit)
    from wattcast.data import data_notes, load_split

    split = load_split(args.data, args.fraction, args.seed, columns_from_args(args))  # DataError: a ValueError
    for note in data_notes(split.info):
        print(f"simulator: data: {note}", file=sys.stderr)
    return house_streams(split.val, args.houses, args.limit)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    if args.capture:
        return replay_a_capture(args)
    from simulator.readiness import wait_for_nodes
    from simulator.replay import Simulator
    from wattcast.contract import status_topic
    from wattcast.node import NodeStats, StopFlag, connect, process_age_s, settle_heap, status

    stop = StopFlag()
    try:
        if args.houses < 1:
            raise ValueError("--houses must be at least 1")
        streams = load_streams(args)
        # A clean session: a persistent one could hand a new replay forecasts queued during an old one.
        bus = connect(broker_from_args(args), args.node, "simulator", session=False)
    except (ConnectionError, ValueError, OSError) as exc:
        print(f"simulator: error: {exc}", file=sys.stderr)
        return 1
    try:
        stats = NodeStats(args.node)
        age = process_age_s()
        if age is not None:
            stats.counters["startup_ms"] = int(age * 1000)
        stats.counters["planned"] = sum(len(s) for s in streams)  # for viewers' progress and ETA
        settle_heap()
        bus.publish(status_topic(args.node), status(args.node, "simulator", "online", stats).to_json(), retain=True)
        if args.wait_for:
            print(f"simulator: waiting for {', '.join(args.wait_for)}", file=sys.stderr, flush=True)
            wait_for_nodes(bus, args.wait_for, args.wait_timeout)
        at_max = args.speed is None
        sim = Simulator(
            bus,
            streams,
            args.speed,
            qos=args.qos,
            window=args.window,
            await_models=tuple(args.await_models) if at_max else (),
            await_nodes=tuple(args.await_nodes) if at_max else (),
            recover_from=args.recover_from,
            recover_nodes=tuple(args.wait_for),
            recover_wait_s=args.wait_timeout,
            run=args.run,
        )
        print(f"simulator: run {sim.run_id}", file=sys.stderr, flush=True)
        sim.run(stop.is_set)
        stats.counters["published"] = sim.published
        stats.counters["resent"] = sim.resent
        stats.counters["malformed"] = sim.malformed
        bus.publish(status_topic(args.node), status(args.node, "simulator", "offline", stats).to_json(), retain=True)
        bus.flush(timeout=30)
    except TimeoutError as exc:
        print(f"simulator: error: {exc}", file=sys.stderr)
        return 1
    finally:
        bus.close()
    return 0 if not stop.is_set() else 130


if __name__ == "__main__":
    sys.exit(main())
