"""``wattcast run --engine rabbitmq``: the replay on a RabbitMQ cluster of the run's own, houses in shards.

The run starts ``--cluster-nodes`` RabbitMQ nodes on loopback (:mod:`wattcast.rabbitmq`), then
``--replicas`` collectors and as many replicas of each model, over AMQP, sharded
(``--shards``): replica ``r`` serves the shards ``k`` with ``k % replicas == r`` and stands by
for the others. The simulator speaks MQTT to the cluster, like a meter. The collectors share
the run's SQLite store, the predictors their checkpoints (an SQLite file beside it).

At max speed the simulator is not paced: the quorum queues take the backlog, and the replay
lasts until every house is scored. docs/scale-out.md has the design.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

from wattcast.bus import BrokerConfig, MqttBus
from wattcast.config import ENV_BLAS_THREADS, ENV_BROKER, ENV_PASSWORD, ENV_USERNAME
from wattcast.contract import ALL_STATUS, new_run_id
from wattcast.runner.options import RunError, RunOptions
from wattcast.runner.processes import Child, Interrupt, StartError, Watcher, spawn, stop_all
from wattcast.runner.summary import scores_from_store


def _own(shards: int, replicas: int, r: int) -> list[int]:
    return [k for k in range(shards) if k % replicas == r]


def _shard_args(shards: int, replicas: int, r: int) -> list[str]:
    own = _own(shards, replicas, r)
    others = [k for k in range(shards) if k not in own]
    args = ["--shards", str(shards), "--serve-shards", ",".join(map(str, own))]
    return args + (["--standby-shards", ",".join(map(str, others))] if others else [])


def run_on_cluster(args: RunOptions, say, t0: float, store_path: Path, log_dir: Path) -> dict[str, Any]:
    from wattcast.rabbitmq import RabbitCluster, RabbitError

    if args.replicas > args.shards:
        raise RunError(f"--replicas {args.replicas} > --shards {args.shards}: a replica would serve no shard")
    cluster = None
    logins: dict[str, tuple[str, str]] = {}  # role -> its login on a cluster of the run's own
    if args.broker:  # a running cluster: its AMQP nodes, and its MQTT listener for the meter and the runner
        given = BrokerConfig.from_url(args.broker, args.username, args.password)
        if not given.amqp:
            raise RunError("--engine rabbitmq --broker takes the cluster's AMQP URL: amqp://user:pw@host:port[,host:port]")
        hosts, user, password = given.hosts, given.username or "", given.password or ""
        mqtt = args.cluster_mqtt or f"mqtt://{given.host}:1883"
    else:
        cluster = RabbitCluster(store_path.parent / "rabbitmq", size=args.cluster_nodes)
        say(f"broker: starting a RabbitMQ cluster of {args.cluster_nodes} node(s) (its data in {cluster.workdir})")
        try:
            cluster.start()
            logins = _role_logins(cluster, args)
        except RabbitError as exc:
            cluster.close()
            raise StartError(str(exc)) from None
        user, password = cluster.admin  # declares the shards; every node logs in as its role
        hosts = [("127.0.0.1", n.amqp_port) for n in cluster.nodes]
        mqtt = f"mqtt://127.0.0.1:{cluster.nodes[0].mqtt_port}"
    children: list[Child] = []
    interrupt = Interrupt()
    watcher_bus = None
    try:

        def amqp(r: int) -> str:  # replica r on node r (mod size), the others after it
            order = hosts[r % len(hosts) :] + hosts[: r % len(hosts)]
            return "amqp://" + ",".join(f"{h}:{p}" for h, p in order)

        say(f"broker: RabbitMQ cluster at {amqp(0)} (MQTT at {mqtt}), {args.shards} shard(s), {args.replicas} replica(s)")
        base = {k: v for k, v in os.environ.items() if k not in (ENV_BROKER, ENV_USERNAME, ENV_PASSWORD)}
        base.setdefault(ENV_BLAS_THREADS, "1")

        def login(role: str) -> dict[str, str]:  # in the environment, not argv (ps shows argv to every user)
            name, secret = logins.get(role, (user, password))
            return {**base, ENV_USERNAME: name, ENV_PASSWORD: secret}

        _declare(BrokerConfig.from_url(amqp(0), user, password), args, purge=cluster is None)
        if cluster is None:
            say("broker: emptied the shard queues of the collector and the run's models (the run takes them over)")
        runner_user, runner_password = logins.get("runner", (user, password))
        watcher_bus = MqttBus(
            BrokerConfig.from_url(mqtt, runner_user, runner_password), f"wattcast-runner-{os.getpid()}", session=False
        )
        try:
            watcher_bus.connect()
        except ConnectionError as exc:
            raise StartError(str(exc)) from None
        watcher = Watcher(watcher_bus, since=time.time() - 1, houses=args.houses)
        watcher_bus.subscribe(ALL_STATUS)
        run_id = new_run_id()
        checkpoints = store_path.parent / f"{store_path.stem}-checkpoints.db"
        collectors: list[str] = []
        predictors: dict[str, list[str]] = {m: [] for m in args.models}
        for r in range(args.replicas):
            node = f"collector-{r}"
            collectors.append(node)
            argv = ["--broker", amqp(r), *_shard_args(args.shards, args.replicas, r), "--node", node]
            argv += ["--store", str(store_path), "--models", *args.models, "--exit-on-end", "--metrics-every", "0.5"]
            children.append(spawn(node, "collector", argv, log_dir, login("collector")))
            for model in args.models:
                node = f"predictor-{model}-{r}"
                predictors[model].append(node)
                argv = ["--broker", amqp(r), *_shard_args(args.shards, args.replicas, r), "--node", node]
                argv += ["--model", args.specs.get(model, model), "--checkpoints", str(checkpoints)]
                argv += ["--models-dir", args.models_dir] if args.models_dir else []
                children.append(spawn(node, "predictor", argv, log_dir, login(f"predictor-{model}")))
        waiting = [*collectors, *(n for ns in predictors.values() for n in ns)]
        _wait_online(watcher, waiting, children, interrupt)
        sim = ["--broker", mqtt, "--houses", str(args.houses), "--run", run_id, "--node", "simulator"]
        sim += ["--speed", "max" if args.speed is None else str(args.speed)]
        sim += ["--limit", str(args.limit)] if args.limit else []
        sim += ["--data", str(args.data)] if args.data else []
        sim += ["--fraction", str(args.fraction)] if args.fraction is not None else []
        sim += ["--seed", str(args.seed)] + (args.columns.argv() if args.columns is not None else [])
        startup_s = time.monotonic() - t0
        say(f"nodes online after {startup_s:.1f} s: {len(waiting)} on {args.shards} shard(s); replaying")
        t_replay = time.monotonic()
        # CPU before the replay (start-up): the replay's cost is what comes after
        started_cpu = {n: watcher.counter(n, "cpu_ms") / 1000 for n in waiting}
        broker_cpu = cluster.cpu_s() if cluster is not None else 0.0
        simulator = spawn("simulator", "simulator", sim, log_dir, login("simulator"))
        children.append(simulator)
        _wait_scored(store_path, run_id, args, children, simulator, watcher, interrupt, t0)
        replay_s = time.monotonic() - t_replay
        broker_cpu = cluster.cpu_s() - broker_cpu if cluster is not None else 0.0
        stop_all(children)
        watcher.wait_offline(waiting, timeout=5.0)
        result = scores_from_store(store_path, list(args.models), args.houses, run_id)
        counters = {n: dict(s.counters or {}) for n, s in sorted(watcher.statuses.items())}

        def total(nodes: list[str], name: str) -> int:
            return sum(int(counters.get(n, {}).get(name, 0)) for n in nodes)

        out = {
            "models": {m: result["models"].get(m, {"n": 0}) for m in args.models},
            "published": result["ends"],
            "received": total(collectors, "received"),
            "malformed": total(collectors, "malformed") + sum(total(ns, "malformed") for ns in predictors.values()),
            "conflicts": total(collectors, "conflicts"),
            "missing": result["missing"],
            "elapsed_s": round(time.monotonic() - t0, 3),
            "startup_s": round(startup_s, 3),
            "replay_s": round(replay_s, 3),
            "houses": args.houses,
            "broker": {
                "kind": "rabbitmq",
                "url": amqp(0),
                "nodes": len(hosts),
                "replay_cpu_s": round(broker_cpu, 2) if cluster is not None else None,  # a given cluster: not measured
            },
            # CPU of each node during the replay (its final CPU less the CPU of its start-up)
            "replay_cpu_s": {n: round(counters.get(n, {}).get("cpu_ms", 0) / 1000 - c, 2) for n, c in started_cpu.items()},
            "engine": {"name": "rabbitmq", "shards": args.shards, "replicas": args.replicas},
            "store": str(store_path),
            "run": run_id,
            "predictors": {
                m: {k: total(ns, k) for k in ("received", "forecasts", "duplicates", "malformed", "adopted")}
                for m, ns in predictors.items()
            },
            "nodes": counters,
            **({"per_house": result["houses"]} if args.houses > 1 else {}),
        }
        if args.report:
            from wattcast.report import build_report

            models_dir = Path(args.models_dir) if args.models_dir else None
            out["report"] = [str(p) for p in build_report(store_path, Path(args.report), models_dir=models_dir)]
        return out
    finally:
        interrupt.restore()
        stop_all(children)
        if watcher_bus is not None:
            watcher_bus.close()
        if cluster is not None:
            cluster.close()


def _role_logins(cluster: Any, args: RunOptions) -> dict[str, tuple[str, str]]:
    """A login per role, held to it as mosquitto/acl says (the nodes' over AMQP, :func:`node_permissions`;
    the simulator's and the runner's over MQTT); models of the run's own get their predictor's lines."""
    from wattcast.credentials import ACL_FILE, predictor_acl

    acl = ACL_FILE.read_text()
    acl += "".join(predictor_acl(m) for m in args.models if f"user predictor-{m}\n" not in acl)
    logins = {role: (role, secrets.token_hex(16)) for role in ("simulator", "runner")}
    cluster.add_users_by_role({role: pw for role, pw in logins.values()}, acl)
    for role in ("collector", *(f"predictor-{m}" for m in args.models)):
        logins[role] = (role, secrets.token_hex(16))
        cluster.add_node_user(role, logins[role][1], acl)
    return logins


def _declare(broker: BrokerConfig, args: RunOptions, purge: bool) -> None:
    """The ring, the shards and every group's queues, before a node runs (the nodes may not declare them).
    ``purge``: empty the groups' shard queues first (a cluster that runs already: what an earlier run left
    there would be scored as a run this one's collectors only partly hold, as reset_sessions does on MQTT)."""
    import pika

    from wattcast.bus.amqp_connection import parameters, quiet_pika
    from wattcast.bus.shards import ShardCountError
    from wattcast.shard_commands import declare

    quiet_pika()
    conn = pika.BlockingConnection(parameters(broker, "wattcast-runner"))
    try:
        channel = conn.channel()
        groups = declare(channel, args.shards, list(args.models))
        if purge:
            from wattcast.bus.shards import shard_queue

            for group in groups:
                for k in range(args.shards):
                    channel.queue_purge(shard_queue(group, k))
    except ShardCountError as exc:
        raise RunError(str(exc)) from None
    except pika.exceptions.AMQPError as exc:
        raise StartError(f"RabbitMQ at {broker.url} refused the shards' declarations: {exc}") from None
    finally:
        if conn.is_open:
            conn.close()


def _wait_online(watcher: Watcher, nodes: list[str], children: list[Child], interrupt: Interrupt) -> None:
    deadline = time.monotonic() + 180
    while not all(n in watcher.started for n in nodes):
        watcher.poll()
        for c in children:
            if c.proc.poll() is not None:
                raise RunError(f"{c.name} exited with code {c.proc.returncode} at start-up: {c.tail(2)}")
        if time.monotonic() > deadline:
            raise RunError(f"nodes not online after 180 s: {', '.join(n for n in nodes if n not in watcher.started)}")
        interrupt.sleep(0.05)


def _wait_scored(store_path, run_id, args, children, simulator, watcher, interrupt, t0) -> None:
    """Until the store holds the summary of every house and model (each written by the collector that
    scored the house's shard), the simulator or a collector fails, or the run times out."""
    from wattcast.store import open_readonly

    want = args.houses * len(args.models)
    while True:
        watcher.poll()
        if simulator.proc.poll() not in (None, 0):
            raise RunError(f"simulator failed (code {simulator.proc.returncode}): {simulator.tail(2)}")
        for c in children:
            if c.name.startswith("collector") and c.proc.poll() not in (None, 0):
                raise RunError(f"{c.name} failed (code {c.proc.returncode}): {c.tail(2)}")
        try:
            con, _ = open_readonly(store_path, run_id)  # read only: the collectors write it
        except (OSError, ValueError):
            con = None  # no store, or no row of the run yet
        if con is not None:
            try:
                if con.execute("SELECT COUNT(*) FROM summary").fetchone()[0] >= want:
                    return
            finally:
                con.close()
        if time.monotonic() - t0 > args.timeout:
            raise RunError(f"run did not finish within {args.timeout:.0f} s")
        interrupt.sleep(0.25)
