"""A broker killed with SIGKILL mid-replay loses what it had acknowledged; the endpoints recover it.

mosquitto acknowledges a QoS 1 message before it writes it to disk (and writes its
database only every ``autosave_interval``): killed, it restarts with an old database or
none.  The simulator (``--recover-from collector``) then sends again from the collector's
last complete minute; predictors wait for the readings they missed and send again the
forecasts the collector may lack; the collector drops copies.  The final scores must
equal the offline ones.  Without recovery the collector names what is missing.

Each run is a full max-speed replay of the default split (4,099 readings) with the
persistence and linear models, killed once the collector holds a given share of it.
"""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import stop_all

from wattcast.broker import PrivateBroker, available_kind
from wattcast.data import load_split
from wattcast.evaluation import stream_forecasts
from wattcast.forecasters import load_model
from wattcast.node import EXIT_INCOMPLETE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODELS = ("persistence", "linear")
NODES = ["collector", *(f"predictor-{m}" for m in MODELS)]


@pytest.fixture(scope="module")
def offline() -> dict[str, tuple[int, float]]:
    val = load_split().val
    out = {}
    for model in MODELS:
        preds, targets = stream_forecasts(load_model(model), val)
        out[model] = (len(targets), float(np.mean((preds - targets) ** 2)))
    return out


def _spawn(module: str, *args: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args, "--log-level", "INFO"], stdout=log.open("a"), stderr=subprocess.STDOUT, env=env
    )


def _stored(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def replay_with_a_broker_crash(
    tmp_path: Path, kill_at: int, recover: bool = True, collector_down: bool = False, broker_conf: str = ""
) -> dict:
    """A full replay whose broker is SIGKILLed once the collector holds ``kill_at`` readings.

    ``collector_down``: first kill the collector too (SIGKILL) and wait until the broker has
    queued readings for its persistent session (a spy sees the simulator 8 minutes further):
    the broker's crash then surely loses those, which only its memory held.  The collector is
    restarted (from its store) once the broker is back.
    """
    broker = PrivateBroker(workdir=tmp_path / "broker", prefer="mosquitto", extra_conf=broker_conf).start()
    db = tmp_path / "w.db"
    procs: list[subprocess.Popen] = []
    url = broker.url

    def start_collector() -> subprocess.Popen:
        args = ["--broker", url, "--store", str(db), "--models", *MODELS, "--exit-on-end", "--drain", "60"]
        return _spawn("collector", *args, log=tmp_path / "collector.log")

    try:
        procs.append(start_collector())
        for m in MODELS:
            procs.append(
                _spawn(
                    "predictor",
                    "--broker",
                    url,
                    "--model",
                    m,
                    "--state-dir",
                    str(tmp_path / "state"),
                    log=tmp_path / f"{m}.log",
                )
            )
        sim_args = [
            "--broker",
            url,
            "--speed",
            "max",
            "--await-models",
            *MODELS,
            "--await-nodes",
            "collector",
            "--wait-for",
            *NODES,
            *(["--recover-from", "collector"] if recover else []),
        ]
        sim = _spawn("simulator", *sim_args, log=tmp_path / "simulator.log")
        procs.append(sim)
        deadline = time.monotonic() + 300
        while (stored := _stored(db)) < kill_at:
            assert sim.poll() is None and time.monotonic() < deadline, (stored, (tmp_path / "simulator.log").read_text())
            time.sleep(0.005)
        if collector_down:
            procs[0].kill()
            procs[0].wait()
            from wattcast.bus import BrokerConfig, MqttBus
            from wattcast.contract import ALL_READINGS, decode

            spy = MqttBus(BrokerConfig(broker.host, broker.port), f"spy-{os.getpid()}", session=False).connect()
            spy.subscribe(ALL_READINGS)
            newest, deadline = -1, time.monotonic() + 120
            while newest < stored + 8:
                assert time.monotonic() < deadline, f"the simulator did not go on past {newest}"
                try:
                    newest = max(newest, decode((m := spy.inbox.get(timeout=0.5)).topic, m.payload).seq)
                except Exception:
                    continue
            spy.close()
        broker_cpu_s = _cpu_s(broker.proc.pid)
        t_kill = time.monotonic()
        broker.kill()
        broker.start()  # same port, same persistence folder
        if collector_down:
            procs[0] = start_collector()
        collector_rc = procs[0].wait(timeout=300)  # 0: complete, EXIT_INCOMPLETE: a loss it names
        assert collector_rc in (0, EXIT_INCOMPLETE), (tmp_path / "collector.log").read_text()[-3000:]
        assert sim.wait(timeout=120) == 0, (tmp_path / "simulator.log").read_text()[-3000:]
        t_end = time.monotonic()
    finally:
        stop_all(procs, timeout=20)
        broker.close()
    with sqlite3.connect(db) as con:
        scores = {m: (n, mse) for m, n, mse in con.execute("SELECT model, n, mse FROM summary")}
        import json

        stats = json.loads(con.execute("SELECT value FROM meta WHERE key = 'collector_stats'").fetchone()[0])
    missing = stats.get("missing", [])
    assert (collector_rc == EXIT_INCOMPLETE) == bool(missing), (collector_rc, missing)
    return {
        "scores": scores,
        "missing": missing,
        "stored_at_kill": stored,
        "collector_rc": collector_rc,
        "broker_cpu_s_at_kill": broker_cpu_s,
        "kill_to_end_s": round(t_end - t_kill, 2),
        "simulator_log": (tmp_path / "simulator.log").read_text(),
    }


@pytest.mark.parametrize("kill_at", [300, 2000, 3900])
def test_a_broker_killed_mid_replay_loses_nothing_the_endpoints_cannot_recover(tmp_path, offline, kill_at):
    if available_kind("mosquitto") is None:
        pytest.skip("needs the mosquitto binary (apt-get install mosquitto)")
    got = replay_with_a_broker_crash(tmp_path, kill_at)
    assert got["stored_at_kill"] < 4099, "the replay was over before the broker could be killed"
    assert "sending again from minute" in got["simulator_log"]
    assert got["missing"] == []
    for model, (n, mse) in offline.items():
        live_n, live_mse = got["scores"][model]
        assert live_n == n and math.isclose(live_mse, mse, rel_tol=1e-9), (model, got["scores"][model], n, mse)


def test_what_a_crash_surely_lost_is_sent_again(tmp_path, offline):
    """The collector down while the broker queues readings and forecasts for it: the crash loses
    them (only the broker's memory held them); the endpoints recover every one."""
    if available_kind("mosquitto") is None:
        pytest.skip("needs the mosquitto binary (apt-get install mosquitto)")
    got = replay_with_a_broker_crash(tmp_path, 2000, collector_down=True)
    assert got["missing"] == []
    assert "sent again after losing the broker" in got["simulator_log"]
    for model, (n, mse) in offline.items():
        live_n, live_mse = got["scores"][model]
        assert live_n == n and math.isclose(live_mse, mse, rel_tol=1e-9), (model, got["scores"][model], n, mse)


def test_without_recovery_what_a_crash_surely_lost_is_named(tmp_path, offline):
    if available_kind("mosquitto") is None:
        pytest.skip("needs the mosquitto binary (apt-get install mosquitto)")
    got = replay_with_a_broker_crash(tmp_path, 2000, recover=False, collector_down=True)
    assert got["missing"], "nothing missing: the crash lost nothing, so this test proves nothing"
    assert any("readings" in line for line in got["missing"]), got["missing"]
    assert any(got["scores"][m][0] < n for m, (n, _) in offline.items())


def test_without_recovery_the_collector_names_what_the_broker_lost(tmp_path, offline):
    """Not a guarantee that something is lost (a kill may fall between two messages): whatever
    the outcome, a loss is named, and a run that lost nothing has the offline scores."""
    if available_kind("mosquitto") is None:
        pytest.skip("needs the mosquitto binary (apt-get install mosquitto)")
    got = replay_with_a_broker_crash(tmp_path, 2000, recover=False)
    complete = all(got["scores"][m][0] == n for m, (n, _) in offline.items())
    assert complete == (got["missing"] == []), got["missing"]
