"""Shared predictor checkpoints (wattcast/store/checkpoints.py): what a standby replica takes a shard
over from, on SQLite and PostgreSQL; and the shard options of a node."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO

from wattcast.bus import BrokerConfig, MemoryHub, Message
from wattcast.contract import Reading, decode
from wattcast.forecasters import load_model
from wattcast.store.checkpoints import SharedCheckpoints

T0 = 1196680920


def readings(n: int, start: int = 0, house: str = "h000") -> list[Message]:
    out = []
    for seq in range(start, n):
        r = Reading(house, seq, T0 + 60 * seq, 1.0 + (seq % 7) / 3, 0.1, 240.0, 4.0, 0.0, 0.0, 17.0, run="r1")
        out.append(Message(r.topic, r.to_json(), qos=1))
    return out


def forecasts(bus) -> dict[int, float]:
    return {f.seq: f.value for f in (decode(m.topic, m.payload) for m in bus.published if "/forecast/" in m.topic)}


def test_saves_never_go_back_and_a_version_must_match(store_location):
    cp = SharedCheckpoints(store_location, "linear", "v1")
    try:
        cp.save([("r1", "h000", 10, {"a": [1.5, 2.0]})])
        cp.save([("r1", "h000", 7, {"a": "older"})])  # a replica that lost the shard, finishing a batch
        assert cp.load("r1", "h000") == (10, {"a": [1.5, 2.0]})
        cp.save([("r1", "h000", 11, {"a": "newer"}), ("r1", "h001", 0, {})])
        assert cp.load("r1", "h000") == (11, {"a": "newer"}) and cp.load("r1", "h001") == (0, {})
        assert cp.load("r1", "h999") is None and cp.load("r2", "h000") is None
    finally:
        cp.close()
    other = SharedCheckpoints(store_location, "linear", "v2")
    try:
        with pytest.raises(ValueError, match="saved by linear v1"):
            other.load("r1", "h000")
    finally:
        other.close()


def test_a_standby_goes_on_from_the_checkpoint_with_the_forecasts_of_one_replica(tmp_path):
    """Replica A handles readings 0-59 and checkpoints; B (its memory stale at seq 19, from an earlier
    hold of the shard) gets 60-119 and the redelivered 55-59: its forecasts equal those of one replica
    that handled everything."""
    from predictor.node import PredictorNode

    model = load_model("linear")
    whole = PredictorNode(MemoryHub().connect(), model, "whole")
    whole.handle(readings(120))
    want = forecasts(whole.bus)

    location = tmp_path / "cp.db"
    a = PredictorNode(MemoryHub().connect(), model, "a", shared=SharedCheckpoints(location, model.name, model.version))
    b = PredictorNode(MemoryHub().connect(), model, "b", shared=SharedCheckpoints(location, model.name, model.version))
    b.handle(readings(20))  # b held the shard once, up to seq 19
    b.checkpoint()
    a.handle(readings(60, start=20))  # then a did, from b's checkpoint
    a.checkpoint()
    assert a.stats.counters["adopted"] == 1
    b.handle(readings(120, start=55))  # a died after its checkpoint: 55-59 come again, then the rest
    assert b.stats.counters["adopted"] == 1 and b.stats.counters["duplicates"] == 5
    got = {**forecasts(a.bus), **forecasts(b.bus)}
    assert got == want


def test_shards_need_an_amqp_broker_and_valid_numbers():
    assert BrokerConfig.from_url("amqp://u:p@h", shards=4, serve_shards=(0, 3)).serve_shards == (0, 3)
    assert BrokerConfig.from_url("amqp://u:p@h").url == "amqp://h:5672"
    with pytest.raises(ValueError, match="need a RabbitMQ broker over AMQP"):
        BrokerConfig.from_url("mqtt://u:p@h", shards=4)
    with pytest.raises(ValueError, match="numbered 0 to 3"):
        BrokerConfig.from_url("amqp://u:p@h", shards=4, serve_shards=(4,))
    with pytest.raises(ValueError, match="needs --shards"):
        BrokerConfig.from_url("amqp://u:p@h", serve_shards=(1,))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--shards", "4", "--broker", "mqtt://u:p@127.0.0.1:1"], "need a RabbitMQ broker over AMQP"),
        (["--shards", "4", "--houses", "h000", "--broker", "amqp://u:p@127.0.0.1:1"], "exclude each other"),
        (["--serve-shards", "x", "--broker", "amqp://u:p@127.0.0.1:1"], "numbers separated by commas"),
        (["--broker", "amqp://u:p@127.0.0.1:1"], "RabbitMQ at amqp://127.0.0.1:1 did not accept the connection"),
    ],
)
def test_a_predictors_shard_options_fail_in_one_line(argv, message):
    r = subprocess.run(
        [sys.executable, "-m", "predictor", "--model", "persistence", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert message in lines[0]


def test_an_mqtt_client_given_an_amqp_broker_says_so_in_one_line():
    r = subprocess.run(
        [sys.executable, "-m", "wattcast", "watch", "--broker", "amqp://u:p@127.0.0.1:1", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and "speaks AMQP" in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_the_rabbitmq_users_file_is_generated_from_the_acl():
    """rabbitmq/users (the compose cluster's logins and rights) is what role_grants makes of mosquitto/acl."""
    from wattcast.credentials import ACL_FILE, USERS
    from wattcast.rabbitmq import role_grants

    assert (REPO / "rabbitmq" / "users").read_text() == role_grants(ACL_FILE.read_text(), list(USERS))
