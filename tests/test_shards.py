"""Houses in shards on a 3-node RabbitMQ cluster of the test's own (issue 15): meters speak MQTT, the
predictors AMQP (wattcast/bus/amqp.py), each model as replicas on quorum queues with a single active
consumer per shard, their per-house state checkpointed in a PostgreSQL database the test creates."""

from __future__ import annotations

import math
import os
import queue
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
    return f"amqp://{LOGIN[0]}:{LOGIN[1]}@127.0.0.1:{cluster.nodes[k].amqp_port}"


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


def spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", **env},
        cwd=REPO,
    )


@pytest.mark.parametrize("kill", [None, "predictor-linear-0", "collector-0"])
def test_sharded_replicas_score_every_house_exactly_as_offline(cluster, val, tmp_path, postgres_url, kill):
    """24 houses over 4 shards, 2 replicas of each model and of the collector on different RabbitMQ nodes,
    checkpoints and store in PostgreSQL.  With ``kill``, that replica (the active consumer of every shard
    of its group: it started first) is SIGKILLed mid-replay: its standby takes the shards over (from the
    checkpoints, or the store), and the scores are still exactly the offline ones."""
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
        sim_argv = ["simulator", "--broker", mqtt_url(cluster, 2), "--houses", str(houses), "--limit", str(limit)]
        procs["simulator"] = spawn([*sim_argv, "--speed", "1200"], tmp_path / "sim.log", {})
        if kill is not None:
            counter = "matched" if kill.startswith("collector") else "forecasts"
            wait_status(status_url, lambda s: s.node == kill and (s.counters or {}).get(counter, 0) >= houses * limit // 3)
            procs[kill].send_signal(signal.SIGKILL)
            procs[kill].wait()
        assert procs["simulator"].wait(timeout=600) == 0, (tmp_path / "sim.log").read_text()[-2000:]
        scorer = "collector-1" if kill == "collector-0" else "collector-0"
        assert procs[scorer].wait(timeout=600) == 0, (tmp_path / f"{scorer}.log").read_text()[-3000:]
    finally:
        stop_all(list(procs.values()))
    store = Store(postgres_url)
    try:
        run = store.run()
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
    if kill is not None:  # its standby took over from what it had saved
        standby, said = ("collector-1", "restored") if kill == "collector-0" else ("predictor-linear-1", "took over house")
        assert said in (tmp_path / f"{standby}.log").read_text()
