"""The run itself: start the nodes, replay, wait for the scores, stop everything."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from wattcast.bus import BrokerConfig, MqttBus
from wattcast.config import (
    ENV_BLAS_THREADS,
    ENV_BROKER,
    ENV_CA_FILE,
    ENV_CERT_FILE,
    ENV_KEY_FILE,
    ENV_PASSWORD,
    ENV_USERNAME,
)
from wattcast.contract import (
    ALL_METRICS,
    ALL_STATUS,
    new_run_id,
    progress_topic,
)
from wattcast.node import EXIT_INCOMPLETE
from wattcast.runner.cluster import run_on_cluster
from wattcast.runner.dashboard import linger, start_dashboard
from wattcast.runner.options import RunError, RunOptions
from wattcast.runner.processes import (
    Child,
    Interrupt,
    StartError,
    Watcher,
    clear_statuses,
    predictor_env,
    private_broker,
    reset_sessions,
    spawn,
    stop_all,
    viewer_env,
)
from wattcast.runner.summary import scores_from_store


def run(args: RunOptions, progress=None, view=None) -> dict[str, Any]:
    """Run the pipeline; returns the result dict (what ``--json`` prints)."""

    say = progress or (lambda line: None)
    if view is not None and progress is not None:
        say = view.log  # keeps the table intact on a terminal
    t0 = time.monotonic()
    # Everything that can be checked is checked before anything starts: the data (read and
    # validated: a bad value fails here naming file and row), and what the machine can do.
    from wattcast.capacity import Plan, check
    from wattcast.data import data_notes, load_split
    from wattcast.split_file import arrays_of, write_split

    notes: list[str] = []
    args = _resolve_models(args, notes)
    for note in notes:
        say(note)
    split = load_split(args.data, args.fraction, args.seed, args.columns)
    for note in data_notes(split.info):
        say(f"data: {note}")
    args = _models_for_the_data(args, split.val, say)
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
        if args.engine == "rabbitmq":
            return run_on_cluster(args, say, t0, store_path, log_dir)
        # the simulator replays the split read here (wattcast/split_file.py), not the data file again
        replayed = write_split(store_path.parent / f"{store_path.stem}-split.npz", *arrays_of(split.val))
        data_args = ["--split-file", str(replayed.resolve())]
        return _run(args, say, view, t0, store_path, state_dir, log_dir, args.houses * minutes, data_args)
    except StartError as exc:
        if created:
            import shutil

            shutil.rmtree(store_path.parent, ignore_errors=True)
        raise RunError(str(exc)) from None


def _lightgbm_loads() -> bool:
    from wattcast.forecasters.gbm import import_lightgbm

    try:
        import_lightgbm()
    except (ImportError, OSError):
        return False
    return True


def _resolve_models(args: RunOptions, say_later: list[str]) -> RunOptions:
    """``args`` with every model named: a spec of your own (file.py:factory...) is loaded once here for its
    name, and kept (with an absolute path) for its predictor; RunError for two models of one name."""
    from wattcast.contract import MODELS
    from wattcast.forecasters import ArtifactError, load_model
    from wattcast.forecasters.registry import absolute_spec

    names, specs = [], {}
    if args.models == list(MODELS) and not _lightgbm_loads():  # the default set: run what this machine can
        say_later.append("gbm, gbm-history: LightGBM cannot load here (apt-get install libgomp1): not run")
        args = replace(args, models=[m for m in MODELS if not m.startswith("gbm")])
    for spec in args.models:
        if spec in MODELS:
            names.append(spec)
            continue
        try:
            name = load_model(spec, Path(args.models_dir) if args.models_dir else None).name
        except ArtifactError:
            raise
        except ValueError as exc:  # a name or spec that is no model: a usage error of --models
            raise ValueError(f"argument --models: {exc}") from None
        names.append(name)
        specs[name] = absolute_spec(spec)
    every = names + list(args.external_model)
    twice = sorted({n for n in every if every.count(n) > 1})
    if twice:
        raise RunError(f"two models are called {', '.join(twice)}: each model of a run needs its own name")
    return replace(args, models=names, specs=specs)


def _models_for_the_data(args: RunOptions, val, say) -> RunOptions:
    """``args`` without the models that need a measurement the data lacks (each said why); RunError if none is left."""
    from wattcast.data import absent_fields, lacking_note
    from wattcast.forecasters import load_model

    absent = absent_fields(val)
    if not absent:
        return args
    models, refused = [], []
    for name in args.models:
        model = load_model(args.specs.get(name, name), Path(args.models_dir) if args.models_dir else None)
        lacking = [f for f in model.needs if f in absent]
        if lacking:
            refused.append(lacking_note(name, lacking))
            say(refused[-1])
        else:
            models.append(name)
    if not models:
        raise RunError(f"no model can run on this data: {'; '.join(refused)}")
    return replace(args, models=models)


def _run(
    args, say, view, t0, store_path: Path, state_dir: Path, log_dir: Path, total: int, data_args: list[str]
) -> dict[str, Any]:
    broker = None
    run_id = new_run_id()  # on every message of this replay: the store, the report and a shared broker tell runs apart
    # Node ids (and MQTT client ids wattcast-<id>) are the same in every run and on any broker:
    # collector, predictor-<model>, simulator (docs/deployment.md); with --broker, the statuses
    # they leave retained are cleared at the end.
    suffix = ""
    if args.broker:
        config = BrokerConfig.from_url(
            args.broker, args.username, args.password, args.ca_file, args.cert_file, args.key_file
        )
        broker_kind = "external"
    else:
        try:
            # its config, log and database stay with the run's store and node logs
            declared = [*args.models, *args.external_model]
            broker, passwords = private_broker(args.broker_kind, store_path.parent / "broker", declared)
        except RuntimeError as exc:  # no broker installed, or it would not start: its log says why
            raise StartError(" | ".join(str(exc).strip().splitlines()[-3:])) from None
        config = BrokerConfig(broker.host, broker.port, *(("runner", passwords["runner"]) if passwords else ()))
        broker_kind = broker.kind
    say(f"broker: {broker_kind} at {config.url}" + (f" (log {broker.log_path})" if broker else ""))
    if broker is not None and not passwords:
        say(
            "broker: warning: the embedded amqtt broker takes anonymous clients and has no ACL: any local user "
            "can publish into this run (install mosquitto for a secured run)"
        )
    elif broker is not None:
        say(f"broker: a login per node and role; viewer login for watch and subscribers in {viewer_env(broker, passwords)}")
    for model in args.external_model:
        where = f"its login is in {predictor_env(broker, passwords, model)}" if broker is not None else "on your broker"
        say(
            f"external model {model}: the replay waits for predictor-{model} to be online (a retained status on "
            f"wattcast/v1/status/predictor-{model}); {where}"
        )

    env = dict(os.environ)
    for var in (ENV_BROKER, ENV_USERNAME, ENV_PASSWORD):
        env.pop(var, None)
    env.setdefault(ENV_BLAS_THREADS, "1")
    for var, path in ((ENV_CA_FILE, config.ca_file), (ENV_CERT_FILE, config.cert_file), (ENV_KEY_FILE, config.key_file)):
        env.pop(var, None)
        if path:  # absolute: the nodes may run in another folder
            env[var] = str(Path(path).resolve())
    common = ["--broker", config.url]

    def login(node: str) -> dict[str, str]:
        """The environment of a node: its own login (environment, not argv: ``ps`` shows argv to every user)."""
        if broker is not None:
            return {**env, **({ENV_USERNAME: node, ENV_PASSWORD: passwords[node]} if passwords else {})}
        if config.username:
            return {**env, ENV_USERNAME: config.username, ENV_PASSWORD: config.password or ""}
        return env

    children: list[Child] = []
    interrupt = Interrupt()
    watcher_bus = MqttBus(config, client_id=f"wattcast-runner-{os.getpid()}", session=False)
    our_nodes: list[str] = []
    try:
        try:
            watcher_bus.connect()
        except ConnectionError as exc:
            raise StartError(str(exc)) from None
        watcher = Watcher(watcher_bus, since=time.time() - 1, view=view, houses=args.houses, total=total)
        collector_node = f"collector{suffix}"
        watcher_bus.subscribe(ALL_STATUS, *([ALL_METRICS, progress_topic(collector_node)] if view is not None else []))

        if args.broker:
            reset_sessions(config, [collector_node, *(f"predictor-{m}{suffix}" for m in args.models)])
        scored = [*args.models, *args.external_model]  # the collector scores the outside ones too
        children.append(
            spawn(
                "collector",
                "collector",
                [
                    *common,
                    "--store",
                    str(store_path),
                    "--models",
                    *scored,
                    "--exit-on-end",
                    "--node",
                    collector_node,
                    "--metrics-every",
                    "0.5",
                    *(["--prometheus-port", str(args.prometheus_port)] if args.prometheus_port is not None else []),
                ],
                log_dir,
                login(collector_node),
            )
        )
        if args.dashboard:  # before the nodes: subscribed when the first reading comes
            child, dashboard_url = start_dashboard(config.url, args.dashboard_port, log_dir, login("dashboard"))
            children.append(child)
            say(f"dashboard: {dashboard_url}")
        predictor_nodes = {}
        for model in args.models:
            node = f"predictor-{model}{suffix}"
            predictor_nodes[model] = node
            extra = ["--models-dir", args.models_dir] if args.models_dir else []
            extra += ["--state-dir", str(state_dir)]
            children.append(
                spawn(
                    node,
                    "predictor",
                    [*common, "--model", args.specs.get(model, model), "--node", node, *extra],
                    log_dir,
                    login(node),
                )
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
            *(f"predictor-{m}{suffix}" for m in args.external_model),  # the replay waits for them too
            "--recover-from",
            collector_node,
            "--run",
            run_id,
        ]
        if args.limit:
            sim_args += ["--limit", str(args.limit)]
        if args.speed is None:
            sim_args += ["--await-models", *scored, "--await-nodes", collector_node]
            if args.window:
                sim_args += ["--window", str(args.window)]
        simulator = spawn("simulator", "simulator", sim_args, log_dir, login(simulator_node))
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
        if args.dashboard:
            linger(dashboard_url, say)
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
        stop_all(children)
        watcher.wait_offline([*predictor_nodes.values(), simulator_node], timeout=3.0)
        result = scores_from_store(store_path, scored, args.houses, run_id)
        malformed = int(result["collector"].get("malformed", 0))
        malformed += sum(watcher.counter(n, "malformed") for n in predictor_nodes.values())
        published = watcher.counter(f"simulator{suffix}", "published") or result["ends"]
        out = {
            "models": {m: result["models"].get(m, {"n": 0}) for m in scored},
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
        stop_all(children)  # nodes first, while the broker still takes their final statuses
        if args.broker and our_nodes:
            clear_statuses(watcher_bus, our_nodes)
        watcher_bus.close()
        if broker is not None:
            broker.close()
