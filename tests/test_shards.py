"""Houses in shards on a 3-node RabbitMQ cluster of the test's own (issue 15): meters speak MQTT, the
predictors AMQP (wattcast/bus/amqp.py), each model as replicas on quorum queues with a single active
consumer per shard, their per-house state checkpointed in a PostgreSQL database the test creates."""

from __future__ import annotations

import json
import math
import os
import queue
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, stop_all
from test_pipeline import offline_mse

from wattcast.bus import BrokerConfig, MqttBus
from wattcast.bus.amqp import AmqpBus
from wattcast.contract import ALL_ENDS, ALL_READINGS, ALL_STATUS, Status, decode, house_ids
from wattcast.rabbitmq import RabbitCluster, rabbit_available
from wattcast.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.integration]

LOGIN = ("pipeline", "pipeline-pw")
MODELS = ("persistence", "linear")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not rabbit_available():
        pytest.skip("RabbitMQ is not installed (apt-get install rabbitmq-server)")
    c = RabbitCluster(tmp_path_factory.mktemp("rabbit"), size=3, users=dict([LOGIN]))
    c.start()
    yield c
    c.close()


def amqp_url(cluster, k: int) -> str:
    """Node ``k`` of the cluster, then the others (a node lost: the bus connects to the next)."""
    ports = [n.amqp_port for n in cluster.nodes[k:] + cluster.nodes[:k]]
    return f"amqp://{LOGIN[0]}:{LOGIN[1]}@" + ",".join(f"127.0.0.1:{p}" for p in ports)


def mqtt_url(cluster, k: int) -> str:
    return f"mqtt://{LOGIN[0]}:{LOGIN[1]}@127.0.0.1:{cluster.nodes[k].mqtt_port}"


def house_part(val, houses: int, k: int, limit: int):
    """House ``k``'s readings as the simulator replays them (simulator/streams.py: rotated, re-stamped)."""
    n = len(val)
    offset = (k * n) // houses
    part = val.iloc[[(i + offset) % n for i in range(limit)]].reset_index(drop=True)
    if offset:
        part["ts"] = int(val["ts"].iloc[0]) + 60 * np.arange(limit, dtype=np.int64)
    return part


def test_houses_hash_onto_every_shard_each_into_exactly_one(cluster):
    """Readings of 24 houses over 4 shards: every house in one shard only, every shard used, a house's
    readings in order; every shard gets every end of stream after the readings of its houses."""
    shards, houses = 4, house_ids(24)
    probes = []
    for k in range(shards):
        cfg = BrokerConfig.from_url(amqp_url(cluster, k % 3), shards=shards, serve_shards=(k,))
        bus = AmqpBus(cfg, f"probe-{k}", group="probe", manual_ack=True).connect(timeout=60)
        bus.subscribe(ALL_READINGS, ALL_ENDS, timeout=60)
        probes.append(bus)
    meter = MqttBus(BrokerConfig.from_url(mqtt_url(cluster, 0)), "probe-meter", session=False).connect(timeout=60)
    try:
        for seq in range(3):
            for h in houses:
                meter.publish(f"wattcast/v1/{h}/reading", b"%d" % seq, qos=1)
        for h in houses:
            meter.publish(f"wattcast/v1/{h}/end", b"end", qos=1)
        assert meter.flush(60)
        seen: list[dict[str, list[bytes]]] = []
        for bus in probes:
            got: dict[str, list[bytes]] = {}
            ends = 0
            while ends < len(houses):
                m = bus.inbox.get(timeout=60)
                bus.ack(m)
                house, leaf = m.topic.split("/")[2:4]
                if leaf == "end":
                    assert got.get(house, [b""] * 3)[-1] in (b"", b"2")  # after the house's readings, if ours
                    ends += 1
                else:
                    got.setdefault(house, []).append(m.payload)
            seen.append(got)
    finally:
        meter.close()
        for bus in probes:
            bus.close()
    assert all(seen), [len(s) for s in seen]  # no shard left empty
    owners = {h: [k for k, s in enumerate(seen) if h in s] for h in houses}
    assert all(len(o) == 1 for o in owners.values()), owners
    assert all(s[h] == [b"0", b"1", b"2"] for s in seen for h in s)


def wait_status(url: str, want, timeout: float = 120.0) -> Status:
    """The first live status (MQTT, over the cluster) for which ``want(status)`` holds."""
    bus = MqttBus(BrokerConfig.from_url(url), f"test-status-{time.monotonic_ns()}", session=False).connect(timeout=60)
    bus.subscribe(ALL_STATUS, timeout=60)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                m = bus.inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            s = decode(m.topic, m.payload)
            if isinstance(s, Status) and want(s):
                return s
        raise AssertionError("no such status in time")
    finally:
        bus.close()


def wait_scored(store_url: str, run: str, rows: int, procs: dict[str, subprocess.Popen], logs: Path, timeout=600) -> None:
    """Until the store has the summary of every house and model of its run (written by whichever collector
    scored the house's shard), or a collector failed.  (The queues outlive a test: a collector may also
    store what an earlier test's run left in them, so everything here names its run.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in ("collector-0", "collector-1"):
            code = procs[node].poll()
            assert code in (None, 0, -signal.SIGKILL), (node, code, (logs / f"{node}.log").read_text()[-3000:])
        store = Store(store_url)
        try:
            if len(store.summary(run)) >= rows:
                return
        finally:
            store.close()
        time.sleep(0.5)
    raise AssertionError("the collectors did not score every house in time")


def spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", **env},
        cwd=REPO,
    )


@pytest.mark.parametrize("kill", [None, "predictor-linear-0", "collector-0", "rabbitmq-node-1"])
def test_sharded_replicas_score_every_house_exactly_as_offline(cluster, val, tmp_path, postgres_url, kill):
    """24 houses over 4 shards, 2 replicas of each model and of the collector on different RabbitMQ nodes,
    checkpoints and store in PostgreSQL.  With ``kill``, that replica (the active consumer of every shard
    of its group: it started first) is SIGKILLed mid-replay: its standby takes the shards over (from the
    checkpoints, or the store), and the scores are still exactly the offline ones.  Or a RabbitMQ node,
    where a third of the nodes are connected: the quorum queues keep a majority, the nodes connect to
    another node, and the scores are still exact."""
    houses, limit, shards = 24, 120, 4
    env = {"WATTCAST_STORE": postgres_url, "WATTCAST_CHECKPOINTS": postgres_url}
    status_url = mqtt_url(cluster, 0)
    procs: dict[str, subprocess.Popen] = {}
    try:
        for r in range(2):  # replicas 0 first: each becomes the active consumer of every shard of its group
            for group in ("collector", *MODELS):
                node = f"{group}-{r}" if group == "collector" else f"predictor-{group}-{r}"
                argv = ["collector", "--models", *MODELS, "--exit-on-end", "--drain", "60"]
                if group != "collector":
                    argv = ["predictor", "--model", group]
                argv += ["--broker", amqp_url(cluster, (r + len(procs)) % 3), "--shards", str(shards), "--node", node]
                procs[node] = spawn(argv, tmp_path / f"{node}.log", env)
                wait_status(status_url, lambda s, n=node: s.node == n and s.state == "online")
        run = f"shards-{secrets.token_hex(4)}"
        sim_argv = ["simulator", "--broker", mqtt_url(cluster, 2), "--houses", str(houses), "--limit", str(limit)]
        procs["simulator"] = spawn([*sim_argv, "--run", run, "--speed", "1200"], tmp_path / "sim.log", {})
        if kill is not None:
            who, counter = ("collector-0", "matched") if kill.startswith(("collector", "rabbit")) else (kill, "forecasts")
            wait_status(status_url, lambda s: s.node == who and (s.counters or {}).get(counter, 0) >= houses * limit // 3)
            if kill == "rabbitmq-node-1":
                cluster.kill(cluster.nodes[1])
            else:
                procs[kill].send_signal(signal.SIGKILL)
                procs[kill].wait()
        assert procs["simulator"].wait(timeout=600) == 0, (tmp_path / "sim.log").read_text()[-2000:]
        # the collectors that score the shards finish (which ones: those active when the ends came)
        wait_scored(postgres_url, run, houses * len(MODELS), procs, tmp_path)
        for node in ("collector-0", "collector-1"):
            code = procs[node].poll()
            assert code in (None, 0) or (node == kill and code == -signal.SIGKILL), (node, code)
    finally:
        stop_all(list(procs.values()))
        if cluster.nodes[1] not in cluster.running():
            cluster.start_node(cluster.nodes[1])
    store = Store(postgres_url)
    try:
        assert store.missing(run, MODELS, house_ids(houses)) == []
        got = {(r["house"], r["model"]): (r["n"], r["mse"]) for r in store.summary(run)}
        assert set(store.house_shards(run).values()) == set(range(shards))  # every shard had houses
    finally:
        store.close()
    for k, house in enumerate(house_ids(houses)):
        part = house_part(val, houses, k, limit)
        for model in MODELS:
            n, mse = offline_mse(model, part)
            assert got[(house, model)][0] == n and math.isclose(got[(house, model)][1], mse, rel_tol=1e-9), (house, model)
    for node in ("collector-0", "collector-1"):  # a collector scores the houses of its shards only
        assert " n=0 " not in (tmp_path / f"{node}.log").read_text(), node
    if kill is not None and kill != "rabbitmq-node-1":  # its standby took over from what it had saved
        standby, said = ("collector-1", "restored") if kill == "collector-0" else ("predictor-linear-1", "took over house")
        assert said in (tmp_path / f"{standby}.log").read_text()


def test_a_publish_the_broker_refuses_is_counted_and_dropped_not_retried_forever(cluster):
    """An AMQP node held to its topics (RabbitMQ topic permissions): a forged forecast closes its channel;
    the bus drops that publish (counted, logged), connects again and delivers the honest ones after it
    (an honest one the closed channel had not confirmed comes twice: receivers deduplicate)."""
    cluster.add_user("gbm-only", "gbm-pw", (r"^wattcast\.v1\.[^.]+\.forecast\.gbm$", "^$"))
    cluster.ctl(cluster.nodes[0], "set_permissions", "-p", "/", "gbm-only", "^$", "^amq\\.topic$", "^$")
    port = cluster.nodes[0].amqp_port
    viewer = MqttBus(BrokerConfig.from_url(mqtt_url(cluster, 0)), "deny-viewer", session=False).connect(timeout=60)
    bus = AmqpBus(BrokerConfig.from_url(f"amqp://gbm-only:gbm-pw@127.0.0.1:{port}"), "deny-gbm").connect(timeout=60)
    try:
        viewer.subscribe("wattcast/v1/+/forecast/+", timeout=60)
        bus.publish("wattcast/v1/h000/forecast/gbm", b"honest-1")
        bus.publish("wattcast/v1/h000/forecast/lstm", b"forged")
        bus.publish("wattcast/v1/h000/forecast/gbm", b"honest-2")
        assert bus.flush(60)
        got = [viewer.inbox.get(timeout=60).payload]
        while got[-1] != b"honest-2":
            got.append(viewer.inbox.get(timeout=60).payload)
        assert set(got) == {b"honest-1", b"honest-2"}  # honest-1 maybe twice: at least once, unconfirmed when closed
        assert bus.denied == 1 and bus.reconnects == 1
        with pytest.raises(queue.Empty):
            viewer.inbox.get(timeout=1)
    finally:
        bus.close()
        viewer.close()


def test_wattcast_run_on_a_rabbitmq_cluster_scores_every_house_as_on_mosquitto(tmp_path):
    """``wattcast run --engine rabbitmq``: a cluster of the run's own, 4 shards, 2 replicas of the collector and
    of each model (each serving its own shards, standing by for the others): the scores of mosquitto."""
    if not rabbit_available():
        pytest.skip("RabbitMQ is not installed (apt-get install rabbitmq-server)")
    common = ["--houses", "6", "--limit", "80", "--models", *MODELS, "--json", "--quiet"]
    results = {}
    for engine, extra in (("mosquitto", []), ("rabbitmq", ["--shards", "4", "--replicas", "2", "--cluster-nodes", "2"])):
        store = tmp_path / engine / "w.db"
        r = subprocess.run(
            [sys.executable, "-m", "wattcast", "run", "--engine", engine, "--store", str(store), *common, *extra],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        results[engine] = json.loads(r.stdout)
    cluster, single = results["rabbitmq"], results["mosquitto"]
    assert cluster["engine"] == {"name": "rabbitmq", "shards": 4, "replicas": 2}
    assert cluster["published"] == single["published"] == 480 and cluster["missing"] == []
    by_house = {e: {(h["house"], h["model"]): (h["n"], h["mse"]) for h in res["per_house"]} for e, res in results.items()}
    assert by_house["rabbitmq"].keys() == by_house["mosquitto"].keys()
    for key, (n, mse) in by_house["mosquitto"].items():
        assert by_house["rabbitmq"][key][0] == n and math.isclose(by_house["rabbitmq"][key][1], mse, rel_tol=1e-9), key


def test_declared_shards_keep_what_meters_publish_before_any_node_runs(cluster):
    """``wattcast shards`` declares the ring and every group's shard queues up front: readings published
    before any predictor runs wait there (RabbitMQ drops a message no queue is bound for); the shard count
    cannot change afterwards (one clear line)."""
    cli = [sys.executable, "-m", "wattcast", "shards", "--broker", amqp_url(cluster, 0), "--models", "declared"]
    r = subprocess.run([*cli, "--shards", "4"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0 and "declared 4 shard(s)" in r.stdout, r.stderr
    meter = MqttBus(BrokerConfig.from_url(mqtt_url(cluster, 1)), "early-meter", session=False).connect(timeout=60)
    try:
        for seq in range(2):
            for h in house_ids(8):
                meter.publish(f"wattcast/v1/{h}/reading", b"%d" % seq, qos=1)
        assert meter.flush(60)
    finally:
        meter.close()
    cfg = BrokerConfig.from_url(amqp_url(cluster, 2), shards=4)
    late = AmqpBus(cfg, "late-predictor", group="predictor-declared", manual_ack=True).connect(timeout=60)
    try:
        late.subscribe(ALL_READINGS, ALL_ENDS, timeout=60)
        got = []
        while len(got) < 16:
            m = late.inbox.get(timeout=60)
            late.ack(m)
            got.append((m.topic, m.payload))
        assert sorted(got) == sorted((f"wattcast/v1/{h}/reading", b"%d" % s) for s in range(2) for h in house_ids(8))
    finally:
        late.close()
    r = subprocess.run([*cli, "--shards", "3"], capture_output=True, text=True, timeout=120, cwd=REPO)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and "another number of shards than 3" in lines[0], r.stderr


def test_the_cluster_compose_services_run_as_processes_and_score_as_offline(cluster, val, tmp_path, postgres_url):
    """docker-compose.cluster.yml without a Docker engine: its one-shot ``shards``, then two replicas of the
    collector and of two models' predictors and the simulator, each its service's command and environment
    (.env values of the test; hosts mapped to this cluster and a PostgreSQL database of the test's own)."""
    from test_compose import depends_on, environment, interpolate, load_yaml

    compose = load_yaml(REPO / "docker-compose.cluster.yml")
    services = compose["services"]
    assert {"rabbitmq-1", "rabbitmq-2", "rabbitmq-3", "postgres", "shards", "collector", "simulator"} <= set(services)
    assert depends_on(services["simulator"]) == {"shards": "service_completed_successfully"}
    for name in ("collector", *(f"predictor-{m}" for m in ("lstm", "lstm-augmented", "gbm", "gbm-history", "rls"))):
        assert services[name]["deploy"]["replicas"] == "${WATTCAST_REPLICAS:-2}" and "shards" in depends_on(services[name])
    conf = (REPO / "rabbitmq" / "wattcast.conf").read_text()
    assert "mqtt.allow_anonymous = false" in conf
    from wattcast.credentials import USERS, password_env_var
    from wattcast.rabbitmq import RABBIT_BIN

    password, houses, limit = secrets.token_hex(12), 8, 60
    cluster.add_user("wattcast", password)  # the administrator (RABBITMQ_DEFAULT_USER in the file)
    dotenv = {
        **{password_env_var(u): secrets.token_hex(12) for u in USERS},  # wattcast broker passwd
        "WATTCAST_RABBITMQ_PASSWORD": password,
        "WATTCAST_RABBITMQ_COOKIE": (cluster.workdir / ".erlang.cookie").read_text(),  # this cluster's
        "WATTCAST_POSTGRES_PASSWORD": "unused-here",
        "WATTCAST_MODELS": ",".join(MODELS),
        "WATTCAST_HOUSES": str(houses),
        "WATTCAST_SPEED": "1200",
    }
    hosts = {f"rabbitmq-{k + 1}:5672": f"127.0.0.1:{n.amqp_port}" for k, n in enumerate(cluster.nodes)}
    hosts["rabbitmq-1:1883"] = f"127.0.0.1:{cluster.nodes[0].mqtt_port}"

    def service_env(name: str, replica: int = 0) -> dict[str, str]:
        env = {k: interpolate(v, dotenv) for k, v in environment(services[name]).items()}
        for k, v in env.items():
            if v.startswith("postgresql://"):
                env[k] = postgres_url
            for host, here in hosts.items():
                env[k] = env[k].replace(host, here)
        return {**env, "HOSTNAME": f"replica-{replica}"}

    def command(name: str) -> list[str]:
        argv = [interpolate(a, dotenv) for a in services[name]["command"]]
        return argv[2:] if argv[0] == "python" else ["wattcast", *argv[1:]]  # python -m <module> / wattcast ...

    # rabbitmq-users: its script, with this cluster's rabbitmqctl (and cookie) and the .env passwords
    users_env = {k: interpolate(v, dotenv) for k, v in environment(services["rabbitmq-users"]).items()}
    users_env = {**cluster._env(), **users_env, "RABBITMQ_NODE": cluster.nodes[0].name}
    users_env["PATH"] = f"{RABBIT_BIN}:{users_env.get('PATH', '')}"
    r = subprocess.run(["sh", str(REPO / "rabbitmq" / "init-users.sh")], env=users_env, capture_output=True, text=True)
    assert r.returncode == 0 and "predictor-linear (amqp)" in r.stdout, r.stderr[-2000:]
    shards = spawn(command("shards"), tmp_path / "shards.log", service_env("shards"))
    assert shards.wait(timeout=120) == 0, (tmp_path / "shards.log").read_text()[-2000:]
    procs: dict[str, subprocess.Popen] = {}
    try:
        for replica in range(2):
            for name in ("collector", *(f"predictor-{m}" for m in MODELS)):
                procs[f"{name}-{replica}"] = spawn(
                    command(name), tmp_path / f"{name}-{replica}.log", service_env(name, replica)
                )
        run = f"compose-{secrets.token_hex(4)}"
        sim = [*command("simulator"), "--limit", str(limit), "--run", run]
        procs["simulator"] = spawn(sim, tmp_path / "sim.log", service_env("simulator"))
        assert procs["simulator"].wait(timeout=600) == 0, (tmp_path / "sim.log").read_text()[-2000:]
        wait_scored(
            postgres_url,
            run,
            houses * len(MODELS),
            {"collector-0": procs["collector-0"], "collector-1": procs["collector-1"]},
            tmp_path,
        )
    finally:
        stop_all(list(procs.values()))
    store = Store(postgres_url)
    try:
        assert store.missing(run, MODELS, house_ids(houses)) == []
        got = {(r["house"], r["model"]): (r["n"], r["mse"]) for r in store.summary(run)}
    finally:
        store.close()
    for k, house in enumerate(house_ids(houses)):
        for model in MODELS:
            n, mse = offline_mse(model, house_part(val, houses, k, limit))
            assert got[(house, model)][0] == n and math.isclose(got[(house, model)][1], mse, rel_tol=1e-9), (house, model)


def test_wattcast_run_uses_a_running_cluster_given_with_broker(cluster, val, tmp_path):
    """``wattcast run --engine rabbitmq --broker amqp://...``: the nodes of the run on a cluster that runs
    already (this module's, its ring of 4 shards), every house scored as offline."""
    houses, limit = 4, 50
    store = tmp_path / "given" / "w.db"
    argv = ["run", "--engine", "rabbitmq", "--broker", amqp_url(cluster, 1), "--cluster-mqtt", mqtt_url(cluster, 0)]
    argv += ["--shards", "4", "--replicas", "2", "--store", str(store), "--houses", str(houses), "--limit", str(limit)]
    r = subprocess.run(
        [sys.executable, "-m", "wattcast", *argv, "--models", *MODELS, "--json", "--quiet"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert result["missing"] == [] and result["broker"]["replay_cpu_s"] is None
    assert not (store.parent / "rabbitmq").exists()  # no cluster of its own
    got = {(h["house"], h["model"]): (h["n"], h["mse"]) for h in result["per_house"]}
    for k, house in enumerate(house_ids(houses)):
        for model in MODELS:
            n, mse = offline_mse(model, house_part(val, houses, k, limit))
            assert got[(house, model)][0] == n and math.isclose(got[(house, model)][1], mse, rel_tol=1e-9), (house, model)


def test_an_amqp_node_is_held_to_its_role(cluster):
    """A predictor's AMQP login (``node_permissions``, from mosquitto/acl): it consumes its model's shard
    queues and publishes its model's forecasts; another model's forecast is refused (counted, dropped),
    and another model's queues cannot be taken."""
    from wattcast.credentials import ACL_FILE

    cli = [sys.executable, "-m", "wattcast", "shards", "--broker", amqp_url(cluster, 0), "--shards", "4"]
    r = subprocess.run([*cli, "--models", "gbm", "lstm"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr  # what a node of a role may not declare
    cluster.add_node_user("predictor-gbm", "gbm-node-pw", ACL_FILE.read_text())
    port = cluster.nodes[0].amqp_port
    url = f"amqp://predictor-gbm:gbm-node-pw@127.0.0.1:{port}"
    viewer = MqttBus(BrokerConfig.from_url(mqtt_url(cluster, 0)), "role-viewer", session=False).connect(timeout=60)
    node = AmqpBus(BrokerConfig.from_url(url, shards=4), "role-gbm", group="predictor-gbm", manual_ack=True).connect(60)
    try:
        viewer.subscribe("wattcast/v1/+/forecast/+", timeout=60)
        node.subscribe(ALL_READINGS, ALL_ENDS, timeout=60)  # its own shard queues: declared and bound
        node.publish("wattcast/v1/h000/forecast/lstm", b"forged")
        node.publish("wattcast/v1/h000/forecast/gbm", b"honest")
        node.publish("wattcast/v1/status/predictor-gbm-1", b"{}")  # a replica's status
        assert node.flush(60)
        got = [viewer.inbox.get(timeout=60).payload]
        while got[-1] != b"honest":
            got.append(viewer.inbox.get(timeout=60).payload)
        assert b"forged" not in got and node.denied == 1
    finally:
        node.close()
        viewer.close()
    thief = AmqpBus(BrokerConfig.from_url(url, shards=4), "role-thief", group="predictor-lstm", manual_ack=True)
    thief.subscribe(ALL_READINGS, ALL_ENDS)  # consumed when it connects: another model's queues
    with pytest.raises(ConnectionError, match="ACCESS_REFUSED"):
        thief.connect(timeout=60)
