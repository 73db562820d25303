"""Every replay is a run: nodes that keep running score a second replay apart from the first.

On the in-memory bus (fast): predictors keep a forecaster per (run, house), the
collector keeps each run's scores and rows apart in one store and does not score a
finished run again after a restart, the simulator paces itself on its own run only,
and a report or ``wattcast run``'s scores show one run (the newest unless told).
The same with real processes and mosquitto: tests/test_compose.py
(``test_a_second_up_is_scored_as_a_new_run``).
"""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys

import msgspec
import numpy as np
import pytest
from helpers import MemoryPipeline

from collector.node import CollectorNode
from predictor.node import MAX_RUNS, PredictorNode
from simulator.replay import Simulator
from simulator.streams import house_streams
from wattcast.bus import MemoryHub, Message
from wattcast.contract import ALL_ENDS, ALL_READINGS, READING_FIELDS, EndOfStream, Forecast, Reading, decode
from wattcast.data import to_readings
from wattcast.evaluation import stream_forecasts
from wattcast.forecasters import load_model
from wattcast.report import list_runs, load_report_data
from wattcast.runner import scores_from_store
from wattcast.store import Store, StoreError


def msg(obj) -> Message:
    return Message(obj.topic, obj.to_json(), received_at=1.0)


def in_run(readings, run: str) -> list:
    return [msgspec.structs.replace(r, run=run) for r in readings]


def forecasts_of(bus) -> list[Forecast]:
    return [decode(m.topic, m.payload) for m in bus.published if "/forecast/" in m.topic]


# ---------------------------------------------------------------------------- predictor


def test_a_second_run_into_a_running_predictor_is_forecast_afresh(val):
    model = load_model("linear")
    readings = to_readings(val.iloc[:60])
    bus = MemoryHub().connect()
    node = PredictorNode(bus, model)
    node.handle([msg(r) for r in in_run(readings, "r1")])
    first = forecasts_of(bus)
    bus.published.clear()
    node.handle([msg(r) for r in in_run(readings, "r2")])  # the same seqs again: a new replay, not duplicates
    second = forecasts_of(bus)
    assert node.stats.counters["duplicates"] == 0
    assert len(second) == len(first) == 59 and {f.run for f in second} == {"r2"}
    assert [f.value for f in second] == [f.value for f in first]  # a fresh forecaster, as in the first run
    # the first run's late redelivery is still answered from its own state
    bus.published.clear()
    node.handle([msg(in_run(readings, "r1")[30])])
    assert node.stats.counters["duplicates"] == 1 and [f.run for f in forecasts_of(bus)] == ["r1"]


def test_a_predictor_keeps_the_state_of_the_runs_used_last(val):
    bus = MemoryHub().connect()
    node = PredictorNode(bus, load_model("persistence"))
    readings = to_readings(val.iloc[:3])
    for k in range(MAX_RUNS + 2):
        node.handle([msg(r) for r in in_run(readings, f"r{k}")])
    assert sorted(node.runs) == [f"r{k}" for k in range(2, MAX_RUNS + 2)]
    assert {run for run, _ in node.houses} == set(node.runs)
    assert node.stats.counters["runs_dropped"] == 2


def test_a_predictors_saved_state_keeps_runs_apart(val, tmp_path):
    model = load_model("linear")
    readings = to_readings(val.iloc[:40])
    state = tmp_path / "p.json"
    node = PredictorNode(MemoryHub().connect(), model, state_path=state)
    node.handle([msg(r) for r in in_run(readings[:30], "r1")] + [msg(r) for r in in_run(readings[:10], "r2")])
    node.checkpoint()
    again = PredictorNode(MemoryHub().connect(), model, state_path=state)
    assert again.last_seq == {("r1", "h000"): 29, ("r2", "h000"): 9}
    bus = MemoryHub().connect()
    again.bus = bus
    again.handle([msg(r) for r in in_run(readings[10:], "r2")])
    whole = MemoryHub().connect()
    PredictorNode(whole, model).handle([msg(r) for r in in_run(readings, "r2")])
    assert [f.value for f in forecasts_of(bus)] == [f.value for f in forecasts_of(whole)][9:]


# ---------------------------------------------------------------------------- collector

T0 = 1196680920


def reading(run: str, seq: int, gap: float, house: str = "h000"):
    from wattcast.contract import Reading

    return Reading(house, seq, T0 + 60 * seq, gap, 0.1, 240.0, 4.0, 0.0, 0.0, 17.0, run=run)


def forecast(run: str, seq: int, value: float, house: str = "h000") -> Forecast:
    ts = T0 + 60 * seq
    return Forecast(house, "persistence", "v1", seq, ts, ts + 300, value, run=run)


def replay(run: str, minutes: int, offset: float = 0.0) -> list[Message]:
    """A whole replay of one house: readings, persistence forecasts, end of stream."""
    rs = [reading(run, i, float(i % 5) + offset) for i in range(minutes)]
    out = [msg(r) for r in rs] + [msg(forecast(run, r.seq, r.global_active_power)) for r in rs[1:]]
    return out + [msg(EndOfStream("h000", minutes, minutes - 1, rs[-1].ts, run=run))]


def expected_mse(minutes: int, offset: float = 0.0) -> tuple[int, float]:
    gap = np.array([float(i % 5) + offset for i in range(minutes)])
    err = gap[1 : minutes - 5] - gap[6:]
    return len(err), float(np.mean(err**2))


def score(store: Store, run: str) -> tuple[int, float]:
    (row,) = store.summary(run)
    return row["n"], row["mse"]


def test_the_collector_scores_two_runs_into_one_store_apart(store_location):
    store = Store(store_location)
    node = CollectorNode(MemoryHub().connect(), store, ("persistence",), drain_s=60)
    node.handle(replay("r1", 40))
    assert node.tick() and node.missing == []
    node.handle(replay("r2", 30, offset=0.5))  # the same minutes and houses, other values: no conflict
    assert node.tick()
    assert node.stats.counters["conflicts"] == 0
    n1, mse1 = score(store, "r1")
    n2, mse2 = score(store, "r2")
    assert (n1, n2) == (expected_mse(40)[0], expected_mse(30)[0])
    assert math.isclose(mse1, expected_mse(40)[1]) and math.isclose(mse2, expected_mse(30, 0.5)[1])
    assert [r["run"] for r in store.summary()] == ["r2"]  # the newest by default
    assert store.count("readings", "r1") == 40 and store.count("readings", "r2") == 30
    assert store.missing("r1", ["persistence"]) == store.missing("r2", ["persistence"]) == []
    # metrics name their run
    metrics = [decode(m.topic, m.payload) for m in node.bus.published if "/metrics/" in m.topic]
    assert {m.run for m in metrics} == {"r1", "r2"}


def test_a_restarted_collector_waits_for_a_new_run_instead_of_ending_at_once(store_location):
    store = Store(store_location)
    first = CollectorNode(MemoryHub().connect(), store, ("persistence",))
    first.handle(replay("r1", 40))
    assert first.tick()
    store.close()
    # docker compose up again: the store holds a finished run; the new process has scored nothing yet
    store = Store(store_location)
    again = CollectorNode(MemoryHub().connect(), store, ("persistence",))
    assert not again.runs and not again.tick()
    again.handle(replay("r2", 30))
    assert again.tick() and list(again.scored) == ["r2"]
    assert score(store, "r1") == score(Store(store_location), "r1")
    assert score(store, "r2")[0] == expected_mse(30)[0]


def test_a_collector_restarted_mid_run_goes_on_with_that_run(store_location):
    store = Store(store_location)
    whole = replay("r1", 40)
    CollectorNode(MemoryHub().connect(), store, ("persistence",)).handle(whole[:30])
    store.close()
    store = Store(store_location)
    again = CollectorNode(MemoryHub().connect(), store, ("persistence",))
    assert list(again.runs) == ["r1"] and not again.finished  # restored, not scored yet
    again.handle(whole[20:])  # redelivery and the rest
    assert again.tick() and score(store, "r1") == expected_mse(40)


def test_a_late_message_of_a_finished_run_is_scored_into_that_run(store_location):
    store = Store(store_location)
    node = CollectorNode(MemoryHub().connect(), store, ("persistence",), drain_s=0.0)
    whole = replay("r1", 40)
    late = whole[45]  # a forecast the broker delivered after the end (a re-send)
    node.handle([m for m in whole if m is not late])
    assert node.tick()
    assert node.missing == ["h000: 1 of 39 persistence forecasts"]
    node.handle(replay("r2", 10))
    node.handle([late])
    assert node.tick()
    assert score(store, "r1") == expected_mse(40) and store.missing("r1", ["persistence"]) == []


def test_the_collector_fails_a_run_it_scored_incomplete_or_conflicting(store_location):
    node = CollectorNode(MemoryHub().connect(), Store(store_location), ("persistence",), drain_s=0.0)
    whole = replay("r1", 20)
    node.handle(whole[:5] + whole[6:])  # reading 5 lost
    node.handle([msg(reading("r1", 3, 99.0))])  # a conflicting reading
    assert node.tick()
    assert node.failed == ["h000: 1 of 20 readings", "run r1: 1 conflicting messages (rejections)"]


# ------------------------------------------------------------------------------- simulator


def test_the_simulator_paces_itself_on_its_own_run_only(val):
    from wattcast.contract import Progress

    hub = MemoryHub()
    sim = Simulator(
        hub.connect(),
        house_streams(val, 1, limit=20),
        speed=None,
        progress=lambda line: None,
        await_models=("linear",),
        await_nodes=("collector",),
        recover_from="collector",
        run="mine",
    )
    theirs = [
        Forecast("h000", "linear", "v", 7, T0, T0 + 300, 1.0, run="other"),
        Progress("collector", "h000", 7, 7, 1, run="other"),
    ]
    ours = [msgspec.structs.replace(m, run="mine") for m in theirs]
    # an earlier replay's late forecasts and progress move nothing on
    assert not any(sim._note(msg(m)) for m in theirs)
    assert sim.forecast_seq == {} and sim.node_minute == {} and sim.complete == -1
    assert all(sim._note(msg(m)) for m in ours)
    assert sim.forecast_seq == {("h000", "linear"): 7} and sim.node_minute == {"collector": 7}
    assert sim.complete == 7
    # and every reading it publishes names its run
    watcher = hub.connect()
    watcher.subscribe(ALL_READINGS, ALL_ENDS)
    Simulator(hub.connect(), house_streams(val, 2, limit=5), progress=lambda line: None, run="r9").run()
    assert {decode(m.topic, m.payload).run for m in watcher.inbox.queue} == {"r9"}


# -------------------------------------------------------------------------- reading a run


def two_run_store(location, val) -> tuple[Store, list[str]]:
    """A store with two replays of 200 minutes through persistence and linear (memory bus)."""
    store = Store(location)
    pipeline = MemoryPipeline(store, ("persistence", "linear"))
    return store, [pipeline.replay(val.iloc[:limit]) for limit in (200, 120)]


def test_scores_and_report_show_one_run_the_newest_by_default(tmp_path, store_location, val):
    store, (r1, r2) = two_run_store(store_location, val)
    store.close()
    for run, limit in ((r1, 200), (r2, 120)):
        preds, targets = stream_forecasts(load_model("linear"), val.iloc[:limit])
        expected = float(np.mean((preds - targets) ** 2))
        got = scores_from_store(store_location, ["persistence", "linear"], 1, run)
        assert got["run"] == run and got["missing"] == []
        assert got["models"]["linear"]["n"] == len(targets) and math.isclose(got["models"]["linear"]["mse"], expected)
        data = load_report_data(store_location, run=run)
        row = next(r for r in data.aggregate if r.model == "linear")
        assert data.facts["run"] == run and row.n == len(targets) and math.isclose(row.mse, expected)
        assert data.facts["readings"] == limit
    assert scores_from_store(store_location)["run"] == r2
    assert load_report_data(store_location).facts["run"] == r2
    lines = list_runs(store_location)
    assert [line.split()[0] for line in lines] == [r1, r2] and lines[-1].endswith("(newest)")
    with pytest.raises(ValueError, match="holds no run 'nope'"):
        load_report_data(store_location, run="nope")


def test_report_and_runs_commands_take_a_run(tmp_path, store_location, val):
    store, (r1, r2) = two_run_store(store_location, val)
    store.close()
    db = str(store_location)
    cli = [sys.executable, "-m", "wattcast"]
    r = subprocess.run([*cli, "runs", "--db", db], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r1 in r.stdout and r2 in r.stdout, r.stderr
    r = subprocess.run(
        [*cli, "report", "--db", db, "--out", str(tmp_path / "out"), "--run", r1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert f"run {r1}" in (tmp_path / "out" / "report.md").read_text()
    r = subprocess.run(
        [*cli, "report", "--db", db, "--out", str(tmp_path / "out2"), "--run", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "no run 'nope'" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_store_of_an_older_layout_is_a_clear_error(tmp_path):
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    for table in ("readings", "forecasts", "matches"):  # a store of wattcast 0.x: no run column
        con.execute(f"CREATE TABLE {table} (house TEXT, ts INTEGER, PRIMARY KEY (house, ts))")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="before run ids"):
        Store(old)
    with pytest.raises(ValueError, match="before run ids"):
        load_report_data(old)


def test_a_store_of_layout_2_is_read_as_it_is_and_upgraded_by_a_writer(tmp_path):
    """Layout 3 only lets a reading's measurements other than global active power be NULL."""
    from wattcast.store.schema import READING_COLUMNS, SCHEMA

    old = tmp_path / "v2.db"
    con = sqlite3.connect(old)
    layout2 = SCHEMA.replace(READING_COLUMNS, ", ".join(f"{f} REAL NOT NULL" for f in READING_FIELDS))
    con.executescript(layout2 + "PRAGMA user_version = 2;")
    con.execute("INSERT INTO readings VALUES ('r1', 'h000', 60, 0, 1, 2, 3, 4, 5, 6, 7, NULL, 1.5)")
    con.commit()
    with pytest.raises(sqlite3.IntegrityError):  # what layout 2 refuses
        con.execute(
            "INSERT INTO readings (run, house, ts, seq, global_active_power, received_at) "
            "VALUES ('r1', 'h000', 120, 1, 1, 2)"
        )
    con.close()
    store = Store(old)
    store.add_readings([(Reading("h000", 1, 120, 0.5, run="r1"), 2.0)])
    store.db.commit()
    rows = store.db.execute("SELECT ts, global_active_power, voltage, received_at FROM readings ORDER BY ts").fetchall()
    assert rows == [(60, 1.0, 3.0, 1.5), (120, 0.5, None, 2.0)]
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == 3
    store.close()


def test_pooling_counts_every_matched_forecast_once():
    from wattcast.scoring import pooled

    # two houses: 3 forecasts with squared errors 1, 1, 1 and 1 forecast with 5: MSE 8/4
    assert pooled([(3, 1.0), (1, 5.0)]) == 2.0
    assert pooled([(0, None), (2, 4.0)]) == 4.0  # a house without a match adds nothing
    assert pooled([(0, None)]) is None
