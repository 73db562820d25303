"""The live pipeline against a real mosquitto (the repo's config, a free loopback port).

Every node runs as its own process, like in a deployment.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, stop_all

from wattcast.broker import PrivateBroker
from wattcast.bus import BrokerConfig, MqttBus
from wattcast.contract import MODELS, EndOfStream, Forecast, Reading, forecast_topic, reading_topic
from wattcast.evaluation import stream_forecasts
from wattcast.forecasters import load_model
from wattcast.store import Store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory):
    broker = PrivateBroker(workdir=tmp_path_factory.mktemp("broker"))
    if broker.kind != "mosquitto":
        pytest.skip("these tests need the mosquitto binary (apt-get install mosquitto)")
    broker.start()
    yield broker
    broker.close()


def offline_mse(name: str, val) -> tuple[int, float]:
    preds, targets = stream_forecasts(load_model(name), val)
    return len(targets), float(np.mean((preds - targets) ** 2))


def spawn(module: str, *args: str, log: Path) -> subprocess.Popen:
    fh = log.open("a")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", module, *args], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def wait_online(url: str, nodes: list[str], timeout: float = 60) -> None:
    """Wait for the retained online status of every node (fresh ones only)."""
    from wattcast.contract import ALL_STATUS, Status, decode

    since = time.time() - 0.5
    bus = MqttBus(
        BrokerConfig.from_url(url), client_id=f"test-wait-{os.getpid()}-{time.monotonic_ns()}", session=False
    ).connect()
    bus.subscribe(ALL_STATUS)
    online: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while not set(nodes) <= online:
            if time.monotonic() > deadline:
                raise AssertionError(f"not online: {set(nodes) - online}")
            try:
                m = bus.inbox.get(timeout=0.2)
            except Exception:
                continue
            s = decode(m.topic, m.payload)
            if isinstance(s, Status) and s.state == "online" and (s.ts or 0) >= since:
                online.add(s.node)
    finally:
        bus.close()


def test_full_replay_at_max_speed_loses_nothing_and_equals_offline_scores(module_broker, val, tmp_path):
    store = tmp_path / "run.db"
    out = subprocess.run(
        [sys.executable, "-m", "wattcast", "run", "--broker", module_broker.url, "--store", str(store), "--json", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["published"] == 4099
    assert result["malformed"] == 0
    for name in MODELS:
        n, mse = offline_mse(name, val)
        got = result["models"][name]
        assert n == 4093
        assert got["n"] == n, name
        assert math.isclose(got["mse"], mse, rel_tol=1e-6), (name, got["mse"], mse)
        assert got["pending"] == 5 and got["unmatched"] == 0
        # every reading reached every predictor, every forecast reached the collector
        assert result["predictors"][name]["received"] == 4099
        assert result["predictors"][name]["forecasts"] == 4098
    s = Store(store)
    try:
        assert s.count("readings") == 4099
        assert s.count("forecasts") == len(MODELS) * 4098
        assert s.count("matches") == len(MODELS) * 4093
    finally:
        s.close()


def test_collector_over_mqtt_matches_out_of_order_dedupes_and_counts_malformed(module_broker, tmp_path):
    db = tmp_path / "c.db"
    proc = spawn(
        "collector",
        "--broker",
        module_broker.url,
        "--store",
        str(db),
        "--models",
        "persistence",
        "--exit-on-end",
        "--node",
        "collector-ooo",
        "--drain",
        "2",
        log=tmp_path / "collector.log",
    )
    try:
        wait_online(module_broker.url, ["collector-ooo"])
        pub = MqttBus(BrokerConfig.from_url(module_broker.url), client_id="test-pub-ooo", session=False).connect()
        t0 = 1196680920

        def reading(seq, gap):
            return Reading("h900", seq, t0 + 60 * seq, gap, 0.1, 240.0, 4.0, 0.0, 0.0, 17.0)

        def forecast(seq, value):
            return Forecast("h900", "persistence", "v", seq, t0 + 60 * seq, t0 + 60 * (seq + 5), value)

        sent = []
        # forecast before its actual (seq 0 -> target seq 5) and actual before its forecast (seq 6 <- 1)
        sent += [forecast(0, 1.0), reading(5, 2.0), reading(6, 3.0), forecast(1, 5.0)]
        sent += sent[:]  # everything delivered twice
        for m in sent:
            pub.publish(m.topic, m.to_json())
        hostile = [b"{", b"null", b'{"house":"h900"}', b"\x00" * 10, json.dumps({"a": "b" * 10_000}).encode()]
        for payload in hostile:
            pub.publish(reading_topic("h900"), payload)
            pub.publish(forecast_topic("h900", "persistence"), payload)
        end = EndOfStream("h900", 2, 6, t0 + 360)
        pub.publish(end.topic, end.to_json())
        pub.flush(10)
        pub.close()
        # the collector waits for the forecast of the last reading (seq 6), which never comes: drain
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    s = Store(db)
    try:
        rows = s.db.execute("SELECT issued_at, forecast, actual FROM matches ORDER BY issued_at").fetchall()
        assert rows == [(t0, 1.0, 2.0), (t0 + 60, 5.0, 3.0)]
        assert s.count("rejections") == 2 * len(hostile)
        stats = s.meta()["collector_stats"]
        assert stats["malformed"] == 2 * len(hostile)
        assert stats["duplicates"] == 4
    finally:
        s.close()


@pytest.mark.slow
def test_predictor_killed_mid_replay_resumes_where_it_stopped(module_broker, val, tmp_path):
    """SIGKILL a predictor mid-replay and start it again with the same --state-dir and node id:
    it goes on from its last checkpoint, the broker's persistent session gives it every reading
    after that again, and its scores equal the offline ones as if it had never stopped."""
    url = module_broker.url
    db = tmp_path / "r.db"
    limit = 600
    logs = tmp_path
    state = ["--state-dir", str(tmp_path / "state")]
    collector = spawn(
        "collector",
        "--broker",
        url,
        "--store",
        str(db),
        "--models",
        "persistence",
        "linear",
        "--exit-on-end",
        "--node",
        "collector-rs",
        "--drain",
        "20",
        log=logs / "collector.log",
    )
    predictors = {
        m: spawn("predictor", "--broker", url, "--model", m, "--node", f"predictor-{m}-rs", *state, log=logs / f"{m}.log")
        for m in ("persistence", "linear")
    }
    procs = [collector, *predictors.values()]
    try:
        wait_online(url, ["collector-rs", "predictor-persistence-rs", "predictor-linear-rs"])
        sim = spawn(
            "simulator",
            "--broker",
            url,
            "--limit",
            str(limit),
            "--speed",
            "9000",
            "--node",
            "simulator-rs",
            log=logs / "sim.log",
        )  # 150 readings/s: about 4 s
        procs.append(sim)
        # kill it once it has checkpointed a house (a condition, not a delay: on a fast or a busy
        # machine a fixed wait could kill it before its first checkpoint or after the replay)
        checkpoint = tmp_path / "state" / "predictor-linear-rs.json"
        deadline = time.monotonic() + 60
        while not (checkpoint.exists() and '"h000"' in checkpoint.read_text()):
            assert time.monotonic() < deadline, "the linear predictor wrote no checkpoint of h000 in 60 s"
            time.sleep(0.02)
        predictors["linear"].send_signal(signal.SIGKILL)
        predictors["linear"].wait()
        time.sleep(0.5)
        procs.append(
            spawn(
                "predictor",
                "--broker",
                url,
                "--model",
                "linear",
                "--node",
                "predictor-linear-rs",
                *state,
                log=logs / "linear.log",
            )
        )
        assert sim.wait(timeout=60) == 0
        assert collector.wait(timeout=90) == 0
    finally:
        stop_all(procs)
    assert "restored 1 house(s)" in (logs / "linear.log").read_text()
    s = Store(db)
    try:
        seqs = [r[0] for r in s.db.execute("SELECT seq FROM forecasts WHERE model='linear' ORDER BY seq")]
        assert seqs == list(range(1, limit))  # a forecast after every reading from the second on
        for model in ("linear", "persistence"):
            n, mse = offline_mse(model, val.iloc[:limit])
            (row,) = s.db.execute("SELECT n, mse FROM summary WHERE model = ?", (model,)).fetchall()
            assert row[0] == n and math.isclose(row[1], mse, rel_tol=1e-9), (model, row, n, mse)
    finally:
        s.close()


def test_run_replays_many_houses(module_broker, val, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "wattcast",
            "run",
            "--broker",
            module_broker.url,
            "--store",
            str(tmp_path / "h.db"),
            "--houses",
            "3",
            "--limit",
            "100",
            "--models",
            "persistence",
            "linear",
            "--json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["published"] == 300
    per_house = {(r["house"], r["model"]): r for r in result["per_house"]}
    assert set(per_house) == {(h, m) for h in ("h000", "h001", "h002") for m in ("persistence", "linear")}
    assert all(r["n"] == 94 and r["pending"] == 5 for r in per_house.values())
    n, mse = offline_mse("linear", val.iloc[:100])
    assert math.isclose(per_house[("h000", "linear")]["mse"], mse, rel_tol=1e-9)
    assert result["models"]["linear"]["n"] == 3 * 94


def test_run_stops_everything_on_ctrl_c(module_broker, tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wattcast",
            "run",
            "--broker",
            module_broker.url,
            "--store",
            str(tmp_path / "c.db"),
            "--speed",
            "60",
            "--limit",
            "600",
            "--models",
            "persistence",
        ],  # 10 min: within --timeout
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        wait_for = time.monotonic() + 60
        while time.monotonic() < wait_for:
            time.sleep(0.5)
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            if len(children) >= 3:  # collector, predictor, simulator
                break
        assert len(children) >= 3, children
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-1000:]
    assert "Traceback" not in err
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_run_falls_back_to_the_embedded_broker(val, tmp_path):
    pytest.importorskip("amqtt", reason="the embedded broker needs the embedded-broker extra")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "wattcast",
            "run",
            "--broker-kind",
            "amqtt",
            "--store",
            str(tmp_path / "a.db"),
            "--limit",
            "150",
            "--models",
            "persistence",
            "linear",
            "--json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["broker"]["kind"] == "amqtt"
    for name in ("persistence", "linear"):
        n, mse = offline_mse(name, val.iloc[:150])
        assert result["models"][name]["n"] == n == 144
        assert math.isclose(result["models"][name]["mse"], mse, rel_tol=1e-9)


@pytest.mark.slow
def wait_stored(db: Path, at_least: int, proc: subprocess.Popen, timeout: float = 120.0) -> int:
    """Wait until the collector's store holds ``at_least`` readings; how many it holds then."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the collector ended (code {proc.returncode})"
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
                n = con.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            n = 0
        if n >= at_least:
            return n
        time.sleep(0.01)
    raise AssertionError(f"the collector stored fewer than {at_least} readings in {timeout:.0f} s")


def test_collector_killed_mid_replay_restarts_with_the_same_scores(module_broker, val, tmp_path):
    url = module_broker.url
    db = tmp_path / "k.db"
    limit = 600
    models = ("persistence", "linear")

    def collector():
        return spawn(
            "collector",
            "--broker",
            url,
            "--store",
            str(db),
            "--models",
            *models,
            "--exit-on-end",
            "--node",
            "collector-kill",
            "--drain",
            "20",
            log=tmp_path / "collector.log",
        )

    first = collector()
    procs = [
        first,
        *(
            spawn("predictor", "--broker", url, "--model", m, "--node", f"predictor-{m}-kill", log=tmp_path / f"{m}.log")
            for m in models
        ),
    ]
    try:
        wait_online(url, ["collector-kill", "predictor-persistence-kill", "predictor-linear-kill"])
        sim = spawn(
            "simulator",
            "--broker",
            url,
            "--limit",
            str(limit),
            "--speed",
            "3000",
            "--node",
            "simulator-kill",
            log=tmp_path / "sim.log",
        )
        procs.append(sim)
        # mid-replay (the collector has stored a sixth of it), mid-batch perhaps: nothing acknowledged is lost
        stored = wait_stored(db, at_least=limit // 6, proc=first)
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert stored < limit, "the replay was over before the collector could be killed mid-replay"
        second = collector()
        procs.append(second)
        assert sim.wait(timeout=60) == 0
        assert second.wait(timeout=90) == 0
    finally:
        stop_all(procs)
    assert "restored" in (tmp_path / "collector.log").read_text()
    s = Store(db)
    try:
        for model in models:
            n, mse = offline_mse(model, val.iloc[:limit])
            (row,) = s.db.execute("SELECT n, mse, pending FROM summary WHERE model = ?", (model,)).fetchall()
            assert row[0] == n and math.isclose(row[1], mse, rel_tol=1e-9) and row[2] == 5, (model, row)
        assert s.count("readings") == limit
    finally:
        s.close()


def test_run_with_its_default_store_in_the_working_directory(tmp_path):
    """No --store: runs/<time>/ under the current directory, private broker files included."""
    out = subprocess.run(
        [sys.executable, "-m", "wattcast", "run", "--limit", "50", "--models", "persistence", "--json", "--quiet"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    store = tmp_path / result["store"]
    assert not Path(result["store"]).is_absolute() and store.is_file()
    assert (store.parent / "logs" / "collector.log").is_file()
    assert [p.name for p in (store.parent / "wattcast-state").glob("*.json")] == ["predictor-persistence.json"]
    assert result["models"]["persistence"]["n"] == 44

    # A store, and the predictors' state beside it, hold one run: reusing either is refused in one line.
    again = [
        sys.executable,
        "-m",
        "wattcast",
        "run",
        "--limit",
        "50",
        "--models",
        "persistence",
        "--quiet",
        "--store",
        str(store),
    ]
    out = subprocess.run(again, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 1 and "exists" in out.stderr and "Traceback" not in out.stderr
    store.unlink()
    out = subprocess.run(again, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 1 and "predictor state of an earlier run" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
