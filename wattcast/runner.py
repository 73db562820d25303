"""``wattcast run``: the whole pipeline on this machine, end to end.

A broker (the one given with ``--broker``, else a private mosquitto on a free
loopback port, else an embedded Python broker), then the collector and one
predictor per model as separate processes; once all report online, the
simulator.  When the collector has scored the end of the stream, everything is
stopped and the scores are printed (``--json`` for machines).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from wattcast.bus import BrokerConfig, MqttBus
from wattcast.config import (
    ENV_BROKER,
    ENV_MODELS_DIR,
    ENV_PASSWORD,
    ENV_USERNAME,
    add_data_args,
    parse_speed,
    positive_float,
    positive_int,
)
from wattcast.contract import (
    ALL_METRICS,
    ALL_STATUS,
    MODELS,
    MessageError,
    Metrics,
    Progress,
    Status,
    decode,
    new_run_id,
    progress_topic,
)
from wattcast.node import EXIT_INCOMPLETE


class RunError(RuntimeError):
    """The run could not complete (one line, shown without traceback)."""


def add_run_args(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    p.add_argument(
        "--broker", default=None, help="use this broker (mqtt://host:port); default: start a private one on a free port"
    )
    p.add_argument(
        "--broker-kind",
        choices=("mosquitto", "amqtt"),
        default=None,
        help="private broker to start (default: mosquitto if installed, else the embedded amqtt)",
    )
    p.add_argument("--username", default=None, help="MQTT user name for --broker")
    p.add_argument("--password", default=None, help="MQTT password for --broker")
    p.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=list(MODELS),
        metavar="MODEL",
        help="models to run (default: all four)",
    )
    p.add_argument("--models-dir", default=os.environ.get(ENV_MODELS_DIR), help="artifact folder")
    p.add_argument("--speed", type=parse_speed, default=None, help="1 = real time, N = N x faster, max (default)")
    p.add_argument("--houses", type=positive_int, default=1, help="meters replayed at once (default 1)")
    p.add_argument("--limit", type=positive_int, default=None, help="readings per house (default: the whole split)")
    p.add_argument(
        "--window",
        type=positive_int,
        default=None,
        help="at max speed, readings in flight ahead of the slowest model, all houses together "
        "(at least one minute of each; default: the simulator's 10)",
    )
    p.add_argument("--store", default=None, help="collector's SQLite file (default runs/<time>/wattcast.db)")
    p.add_argument("--report", default=None, metavar="DIR", help="write the HTML/Markdown report here at the end")
    p.add_argument("--timeout", type=positive_float, default=1800.0, help="give up after this many seconds (default 1800)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])


@dataclass
class Watcher:
    """The runner's own view of the bus: node statuses, and metrics for the live view."""

    bus: MqttBus
    since: float
    statuses: dict[str, Status] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)  # nodes seen online in this run (they may have finished since)
    view: Any = None  # a wattcast.live.LiveView, fed with every Metrics
    houses: int = 1
    total: int = 0  # readings of the whole replay (for the view's progress line)

    def poll(self) -> None:
        while not self.bus.inbox.empty():
            message = self.bus.inbox.get_nowait()
            try:
                msg = decode(message.topic, message.payload)
            except MessageError:
                continue
            if isinstance(msg, Status):
                if (msg.ts or 0) >= self.since:
                    before = self.statuses.get(msg.node)
                    if msg.counters is None and before is not None and before.counters:
                        # a last will carries no counters: keep the node's final ones
                        msg = Status(msg.node, msg.state, msg.role, msg.ts, before.counters)
                    self.statuses[msg.node] = msg
                    if msg.state == "online":
                        self.started.add(msg.node)
            elif isinstance(msg, Metrics) and self.view is not None:
                self.view.update(msg)
            elif isinstance(msg, Progress) and self.view is not None and self.total:
                # the collector has stored minute seq up to this house (houses go h000, h001, ... each minute)
                k = int(msg.house[1:]) if msg.house[1:].isdigit() else self.houses - 1
                self.view.table.set_progress(min(self.total, msg.seq * self.houses + k + 1), self.total)

    def wait_offline(self, nodes: list[str], timeout: float) -> None:
        """Give stopped nodes a moment for their final status (with their final counters) to arrive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if all((s := self.statuses.get(n)) is not None and s.state == "offline" for n in nodes):
                return
            time.sleep(0.05)

    def counter(self, node: str, name: str) -> int:
        s = self.statuses.get(node)
        return int((s.counters or {}).get(name, 0)) if s else 0


def _spawn(name: str, module: str, args: list[str], log_dir: Path, env: dict[str, str]) -> Child:
    log_path = log_dir / f"{name}.log"
    fh = log_path.open("w")
    # -P: the current folder is not put on sys.path, so a folder named like a package there cannot shadow it
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", module, *args],
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    fh.close()
    return Child(name, proc, log_path)


class Interrupt:
    """Ctrl-C (SIGINT) and SIGTERM while the nodes run: a flag that the run's loops check.

    Python's own KeyboardInterrupt is raised wherever the main thread happens to be, and
    one raised inside a finalizer or a garbage-collector callback is printed and dropped
    ("Exception ignored in ..."): the run then went on as if nothing had been pressed.
    A flag cannot be lost; :meth:`sleep` raises KeyboardInterrupt at a known point.
    """

    def __init__(self) -> None:
        self.pressed = threading.Event()
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, lambda signum, frame: self.pressed.set())

    def sleep(self, seconds: float) -> None:
        if self.pressed.wait(seconds):
            raise KeyboardInterrupt

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


def _stop(children: list[Child], timeout: float = 10.0) -> None:
    for c in children:
        if c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for c in children:
        try:
            c.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait()


def scores_from_store(
    db_path: Path, models: list[str] | None = None, houses: int = 1, run: str | None = None
) -> dict[str, Any]:
    """Per-model scores of ``run`` (default: the newest) pooled over houses, per-house scores, the
    store's counters, and what is missing.  StoreError if the store holds no such run."""
    from wattcast.contract import house_ids
    from wattcast.store import Store

    store = Store(db_path)
    try:
        run = store.run(run)
        pooled = {}
        for model, n, mse, mae in store.pooled(run):
            pooled[model] = {"n": n, "mse": mse, "rmse": math.sqrt(mse), "mae": mae}
        summary = store.summary(run)
        for s in summary:
            p = pooled.setdefault(s["model"], {"n": 0, "mse": math.nan, "rmse": math.nan, "mae": math.nan})
            p["unmatched"] = p.get("unmatched", 0) + s["unmatched"]
            p["pending"] = p.get("pending", 0) + s["pending"]
        return {
            "run": run,
            "models": pooled,
            "houses": summary,
            "readings": store.count("readings", run),
            "forecasts": store.count("forecasts", run),
            "rejections": store.count("rejections", run),
            "ends": store.published(run),
            "collector": store.run_stats(run) or store.meta().get("collector_stats", {}),
            "missing": store.missing(run, models or [], house_ids(houses)),
        }
    finally:
        store.close()


def run(args: argparse.Namespace, progress=None, view=None) -> dict[str, Any]:
    """Run the pipeline; returns the result dict (what ``--json`` prints)."""

    say = progress or (lambda line: None)
    if view is not None and progress is not None:
        say = view.log  # keeps the table intact on a terminal
    t0 = time.monotonic()
    # Everything that can be checked is checked before anything starts: the data (read and
    # validated: a bad value fails here naming file and row), and what the machine can do.
    from wattcast.capacity import Plan, check
    from wattcast.data import data_notes, load_split

    split = load_split(args.data, args.fraction, args.seed)
    for note in data_notes(split.info):
        say(f"data: {note}")
    minutes = len(split.val) if args.limit is None else min(args.limit, len(split.val))
    check(Plan(args.houses, minutes, len(args.models), args.speed), args.timeout)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    store_path = Path(args.store) if args.store else Path("runs") / stamp / "wattcast.db"
    if store_path.exists():
        raise RunError(f"{store_path} exists; pass another --store (a store holds one run)")
    # the predictors' state belongs to this store's run: an old one would make them skip every reading
    state_dir = store_path.parent / f"{store_path.stem}-state"
    if state_dir.exists():
        raise RunError(f"{state_dir} exists (predictor state of an earlier run); remove it or pass another --store")
    created = not store_path.parent.exists()  # removed again if the run fails before its nodes start
    store_path.parent.mkdir(parents=True, exist_ok=True)
    log_dir = store_path.parent / "logs"
    log_dir.mkdir(exist_ok=True)
    try:
        return _run(args, say, view, t0, store_path, state_dir, log_dir, args.houses * minutes)
    except _StartError as exc:
        if created:
            import shutil

            shutil.rmtree(store_path.parent, ignore_errors=True)
        raise RunError(str(exc)) from None


class _StartError(RunError):
    """The run failed before any node started: nothing of it is worth keeping."""


def _run(args, say, view, t0, store_path: Path, state_dir: Path, log_dir: Path, total: int) -> dict[str, Any]:
    broker = None
    run_id = new_run_id()  # on every message of this replay: the store, the report and a shared broker tell runs apart
    # Node ids (and MQTT client ids wattcast-<id>) are the same in every run and on any broker:
    # collector, predictor-<model>, simulator (docs/deployment.md); with --broker, the statuses
    # they leave retained are cleared at the end.
    suffix = ""
    if args.broker:
        config = BrokerConfig.from_url(args.broker, args.username, args.password)
        broker_kind = "external"
    else:
        try:
            # its config, log and database stay with the run's store and node logs
            broker, passwords = _private_broker(args.broker_kind, store_path.parent / "broker")
        except RuntimeError as exc:  # no broker installed, or it would not start: its log says why
            raise _StartError(" | ".join(str(exc).strip().splitlines()[-3:])) from None
        config = BrokerConfig(broker.host, broker.port, *(("runner", passwords["runner"]) if passwords else ()))
        broker_kind = broker.kind
    say(f"broker: {broker_kind} at {config.url}" + (f" (log {broker.log_path})" if broker else ""))
    if broker is not None and not passwords:
        say(
            "broker: warning: the embedded amqtt broker takes anonymous clients and has no ACL: any local user "
            "can publish into this run (install mosquitto for a secured run)"
        )
    elif broker is not None:
        say(f"broker: a login per node and role; viewer login for watch and subscribers in {_viewer_env(broker, passwords)}")

    env = dict(os.environ)
    for var in (ENV_BROKER, ENV_USERNAME, ENV_PASSWORD):
        env.pop(var, None)
    common = ["--broker", config.url]

    def login(node: str) -> dict[str, str]:
        """The environment of a node: its own login (environment, not argv: ``ps`` shows argv to every user)."""
        if broker is not None:
            return {**env, **({ENV_USERNAME: node, ENV_PASSWORD: passwords[node]} if passwords else {})}
        if config.username:
            return {**env, ENV_USERNAME: config.username, ENV_PASSWORD: config.password or ""}
        return env

    data_args = []
    if args.data:
        data_args += ["--data", str(args.data)]
    if args.fraction is not None:
        data_args += ["--fraction", str(args.fraction)]
    data_args += ["--seed", str(args.seed)]

    children: list[Child] = []
    interrupt = Interrupt()
    watcher_bus = MqttBus(config, client_id=f"wattcast-runner-{os.getpid()}", session=False)
    our_nodes: list[str] = []
    try:
        try:
            watcher_bus.connect()
        except ConnectionError as exc:
            raise _StartError(str(exc)) from None
        watcher = Watcher(watcher_bus, since=time.time() - 1, view=view, houses=args.houses, total=total)
        collector_node = f"collector{suffix}"
        watcher_bus.subscribe(ALL_STATUS, *([ALL_METRICS, progress_topic(collector_node)] if view is not None else []))

        if args.broker:
            _reset_sessions(config, [collector_node, *(f"predictor-{m}{suffix}" for m in args.models)])
        children.append(
            _spawn(
                "collector",
                "collector",
                [
                    *common,
                    "--store",
                    str(store_path),
                    "--models",
                    *args.models,
                    "--exit-on-end",
                    "--node",
                    collector_node,
                    "--metrics-every",
                    "0.5",
                ],
                log_dir,
                login(collector_node),
            )
        )
        predictor_nodes = {}
        for model in args.models:
            node = f"predictor-{model}{suffix}"
            predictor_nodes[model] = node
            extra = ["--models-dir", args.models_dir] if args.models_dir else []
            extra += ["--state-dir", str(state_dir)]
            children.append(
                _spawn(node, "predictor", [*common, "--model", model, "--node", node, *extra], log_dir, login(node))
            )
        # The simulator starts with the others (its data loading is start-up, not replay) and
        # waits by itself until every node it feeds is online.
        simulator_node = f"simulator{suffix}"
        sim_args = [
            *common,
            *data_args,
            "--houses",
            str(args.houses),
            "--speed",
            "max" if args.speed is None else str(args.speed),
            "--node",
            simulator_node,
            "--wait-for",
            collector_node,
            *predictor_nodes.values(),
            "--recover-from",
            collector_node,
            "--run",
            run_id,
        ]
        if args.limit:
            sim_args += ["--limit", str(args.limit)]
        if args.speed is None:
            sim_args += ["--await-models", *args.models, "--await-nodes", collector_node]
            if args.window:
                sim_args += ["--window", str(args.window)]
        simulator = _spawn("simulator", "simulator", sim_args, log_dir, login(simulator_node))
        children.append(simulator)
        waiting = [collector_node, *predictor_nodes.values(), simulator_node]
        our_nodes = waiting
        deadline = time.monotonic() + 120
        while True:
            watcher.poll()
            # a short replay can be over (the simulator online, then offline) between two polls
            if all(n in watcher.started for n in waiting):
                break
            for c in children:
                if c.proc.poll() is not None and not (c.proc.returncode == 0 and c.name in watcher.started):
                    raise RunError(f"{c.name} exited with code {c.proc.returncode} at start-up: {c.tail(2)}")
            if time.monotonic() > deadline:
                late = [n for n in waiting if n not in watcher.started]
                raise RunError(f"nodes not online after 120 s: {', '.join(late)}")
            interrupt.sleep(0.02)
        startup_s = time.monotonic() - t0
        say(f"nodes online after {startup_s:.1f} s: collector, {', '.join(args.models)}, simulator; replaying")
        t_replay = time.monotonic()
        collector = children[0]
        while collector.proc.poll() is None:
            watcher.poll()
            if simulator.proc.poll() not in (None, 0):
                raise RunError(f"simulator failed (code {simulator.proc.returncode}): {simulator.tail(2)}")
            if time.monotonic() - t0 > args.timeout:
                raise RunError(f"run did not finish within {args.timeout:.0f} s")
            if view is not None:
                view.refresh()  # throttles itself
            interrupt.sleep(0.05)
        replay_s = time.monotonic() - t_replay
        if view is not None:
            watcher.poll()
            view.close(final_table=False)  # the summary below is the one final table
        if collector.proc.returncode not in (0, EXIT_INCOMPLETE):  # incomplete: named below
            raise RunError(f"collector failed (code {collector.proc.returncode}): {collector.tail(2)}")
        try:
            simulator.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise RunError(
                "the collector finished but the simulator was still replaying 30 s later "
                f"(an end of stream it did not send?): {simulator.tail(2)}"
            ) from None
        _stop(children)
        watcher.wait_offline([*predictor_nodes.values(), simulator_node], timeout=3.0)
        result = scores_from_store(store_path, args.models, args.houses, run_id)
        malformed = int(result["collector"].get("malformed", 0))
        malformed += sum(watcher.counter(n, "malformed") for n in predictor_nodes.values())
        published = watcher.counter(f"simulator{suffix}", "published") or result["ends"]
        out = {
            "models": {m: result["models"].get(m, {"n": 0}) for m in args.models},
            "published": published,
            "received": int(result["collector"].get("received", 0)),
            "malformed": malformed,
            # a second, different reading or forecast for a key already scored (forged or broken)
            "conflicts": int(result["collector"].get("conflicts", 0)),
            # what the simulator published and the store does not hold (a loss): the run fails
            "missing": result["missing"],
            "elapsed_s": round(time.monotonic() - t0, 3),
            "startup_s": round(startup_s, 3),
            "replay_s": round(replay_s, 3),
            "houses": args.houses,
            "broker": {"kind": broker_kind, "url": config.url},
            "store": str(store_path),
            "run": run_id,
            "predictors": {
                m: {k: watcher.counter(n, k) for k in ("received", "forecasts", "duplicates", "malformed")}
                for m, n in predictor_nodes.items()
            },
            # every node's last counters (peak RSS, start-up, messages), as its final status said
            "nodes": {n: dict(s.counters or {}) for n, s in sorted(watcher.statuses.items())},
        }
        if args.houses > 1:
            out["per_house"] = result["houses"]
        if args.report:
            from wattcast.report import build_report

            out["report"] = [
                str(p)
                for p in build_report(
                    store_path, Path(args.report), models_dir=Path(args.models_dir) if args.models_dir else None
                )
            ]
        return out
    finally:
        interrupt.restore()
        _stop(children)  # nodes first, while the broker still takes their final statuses
        if args.broker and our_nodes:
            _clear_statuses(watcher_bus, our_nodes)
        watcher_bus.close()
        if broker is not None:
            broker.close()


def _private_broker(kind: str | None, workdir: Path):
    """A started private broker and its per-run passwords (user -> password; empty for amqtt).

    mosquitto runs the deployment's own config (mosquitto/mosquitto.conf: no anonymous
    access, the per-role ACL of mosquitto/acl, a client id tied to its user) with a new
    random password for every user of this run; the files are private to this user.
    """
    from wattcast.broker import PrivateBroker, available_kind
    from wattcast.credentials import RUN_USERS, generate_password, secured_private_broker

    if available_kind(kind) == "mosquitto":
        passwords = {user: generate_password() for user in RUN_USERS}
        broker = secured_private_broker(workdir / "auth", passwords, prefer="mosquitto", workdir=workdir)
        return broker.start(), passwords
    return PrivateBroker(prefer=kind, workdir=workdir).start(), {}


def _viewer_env(broker, passwords: dict[str, str]) -> Path:
    """``<broker dir>/viewer.env`` (mode 600): how a subscriber logs in to this run as the viewer."""
    from wattcast.credentials import password_env_var, write_private

    path = broker.workdir / "viewer.env"
    write_private(
        path, f"MQTT_HOST={broker.host}\nMQTT_PORT={broker.port}\n{password_env_var('viewer')}={passwords['viewer']}\n"
    )
    return path


def _reset_sessions(config: BrokerConfig, nodes: list[str]) -> None:
    """Discard what a shared broker still holds for these node ids from an earlier run.

    The ids are stable, and the collector's and predictors' sessions persistent (for restarts
    within a run): an earlier run that did not finish would otherwise hand this one its queued
    readings, forecasts and end of stream.  A clean-session connection under the same client
    id discards the stored session (MQTT 3.1.1, 3.1.2.4).
    """
    for node in nodes:
        bus = MqttBus(config, client_id=f"wattcast-{node}", session=False)
        try:
            bus.connect(timeout=10)
        except ConnectionError as exc:
            raise _StartError(str(exc)) from None
        bus.close()


def _clear_statuses(bus: MqttBus, nodes: list[str]) -> None:
    """Remove the retained statuses a finished run leaves on a shared broker (an empty retained payload)."""
    from wattcast.contract import status_topic

    try:
        for node in nodes:
            bus.publish(status_topic(node), b"", qos=1, retain=True)
        bus.flush(timeout=5)
    except Exception as exc:  # the run's result matters more than this clean-up
        print(f"wattcast: warning: could not clear the retained statuses: {exc}", file=sys.stderr)


def format_table(result: dict[str, Any]) -> str:
    """The one summary of a run: per model, and what the counts mean."""
    houses = result.get("houses", 1)
    lines = [
        f"scores over {houses} house(s), every forecast scored against the reading at its target minute "
        "(issued + 5 min), kW²/kW:",
        f"{'model':<16}{'n':>7}{'MSE':>9}{'RMSE':>9}{'MAE':>9}{'unmatched':>11}{'pending':>9}",
    ]
    for model, r in result["models"].items():
        lines.append(
            f"{model:<16}{r.get('n', 0):>7}{r.get('mse', math.nan):>9.4f}{r.get('rmse', math.nan):>9.4f}"
            f"{r.get('mae', math.nan):>9.4f}{r.get('unmatched', 0):>11}{r.get('pending', 0):>9}"
        )
    lines.append(
        "n = matched forecasts; unmatched = no reading at the target minute (a gap in the data); "
        "pending = target after the last reading (5 per house: normal)"
    )
    lines.append(
        f"published {result['published']} readings, collector received {result['received']} messages, "
        f"malformed {result['malformed']}, conflicts {result.get('conflicts', 0)}, "
        f"missing {'none' if not result.get('missing') else len(result['missing'])}"
    )
    lines.append(
        f"start-up {result['startup_s']:.1f} s, replay {result['replay_s']:.1f} s, total {result['elapsed_s']:.1f} s"
    )
    lines.append(f"store: {result['store']}")
    if result.get("report"):
        files = result["report"]
        lines.append(f"report: {files[0]}" + (f" (+{len(files) - 1} files beside it)" if len(files) > 1 else ""))
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    if args.houses < 1:
        raise ValueError("--houses must be at least 1")
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    view = None
    if not args.quiet:
        from wattcast.live import LiveView

        view = LiveView(sys.stderr)
    try:
        result = run(args, progress, view)
    except RunError as exc:
        print(f"wattcast: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 1 if incomplete(result) else 0


def incomplete(result: dict[str, Any]) -> bool:
    """Say on stderr, one line each, why a finished run's scores cannot be trusted; True if so."""
    problems = []
    if result.get("missing"):
        shown = "; ".join(result["missing"][:8]) + (" ..." if len(result["missing"]) > 8 else "")
        problems.append(f"incomplete run: the store lacks what was published: {shown}")
    if result.get("conflicts"):
        problems.append(
            f"{result['conflicts']} conflicting readings or forecasts (a second, different message "
            f"for a minute already scored; the first was kept): see the store's rejections"
        )
    for line in problems:
        print(f"wattcast: error: {line}", file=sys.stderr)
    return bool(problems)
