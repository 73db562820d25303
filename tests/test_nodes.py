"""Node logic on the in-memory bus: predictor, collector and simulator without a broker."""

from __future__ import annotations

import json
import math
import queue
import threading

import numpy as np
import pytest
from helpers import MemoryPipeline

from collector.node import CollectorNode
from predictor.node import PredictorNode
from simulator.replay import Simulator
from simulator.streams import house_streams
from wattcast.bus import MemoryHub, Message
from wattcast.contract import (
    ALL_ENDS,
    ALL_READINGS,
    EndOfStream,
    Forecast,
    Metrics,
    Progress,
    Reading,
    decode,
    forecast_topic,
    progress_topic,
    reading_topic,
    status_topic,
)
from wattcast.data import to_readings
from wattcast.evaluation import stream_forecasts
from wattcast.forecasters import load_model
from wattcast.scoring import ModelScore
from wattcast.store import Store


def reading(house: str, seq: int, ts: int, gap: float) -> Reading:
    return Reading(house, seq, ts, gap, 0.1, 240.0, 4.0, 0.0, 0.0, 17.0)


def msg(obj) -> Message:
    return Message(obj.topic, obj.to_json(), received_at=1.0)


def forecasts_of(bus) -> list[Forecast]:
    return [decode(m.topic, m.payload) for m in bus.published if "/forecast/" in m.topic]


# ----------------------------------------------------------------------------- predictor


@pytest.mark.parametrize("name", ["persistence", "linear", "lstm"])
def test_predictor_matches_offline_forecasts_in_any_batching(val, name):
    model = load_model(name)
    expected, _ = stream_forecasts(model, val.iloc[:120])
    msgs = [msg(r) for r in to_readings(val.iloc[:120])]
    for batch_size in (1, 7, 120):
        bus = MemoryHub().connect()
        node = PredictorNode(bus, model)
        for k in range(0, len(msgs), batch_size):
            node.handle(msgs[k : k + batch_size])
        got = forecasts_of(bus)
        assert len(got) == 119  # one after every reading from the second on
        assert [f.seq for f in got] == list(range(1, 120))
        assert all(f.target_ts == f.issued_at + 300 for f in got)
        # the first 114 have their target inside the 120 readings: same values as offline
        np.testing.assert_allclose([f.value for f in got[:114]], expected, rtol=1e-6)


def test_predictor_counts_duplicates_gaps_and_malformed_without_crashing(val):
    from predictor.node import GAP_WAIT_S

    bus = MemoryHub().connect()
    now = [0.0]
    node = PredictorNode(bus, load_model("linear"), clock=lambda: now[0])
    rs = to_readings(val.iloc[:10])
    bad = [
        Message(reading_topic("h000"), b"{not json"),
        Message(reading_topic("h000"), b'{"house": "h000", "seq": "x"}'),
        Message(
            reading_topic("h000"), rs[0].to_json().replace(b'"global_active_power":', b'"global_active_power":1e999,"x":')
        ),
        Message(reading_topic("h001"), rs[0].to_json()),  # house of the payload differs from the topic
        Message(reading_topic("h000"), b"x" * 100_000),
    ]
    node.handle([msg(rs[0]), msg(rs[1]), *bad, msg(rs[1]), msg(rs[4])])
    c = node.stats.counters
    assert c["malformed"] == len(bad)
    assert c["duplicates"] == 1
    assert c["forecasts"] == 1  # after reading 1; reading 4 waits for 2 and 3 (a broker may have lost them)
    node.handle([msg(rs[5])])
    now[0] += GAP_WAIT_S - 1
    node.tick()
    assert c["forecasts"] == 1 and c["gaps"] == 0
    now[0] += 1  # they did not come: go on past the hole
    node.tick()
    assert c["gaps"] == 2
    assert c["forecasts"] == 3  # after readings 1, 4 and 5


def test_predictor_keeps_houses_apart():
    bus = MemoryHub().connect()
    node = PredictorNode(bus, load_model("persistence"))
    t = 1196680920
    node.handle(
        [
            msg(reading("a", 0, t, 1.0)),
            msg(reading("b", 0, t, 5.0)),
            msg(reading("a", 1, t + 60, 2.0)),
            msg(reading("b", 1, t + 60, 6.0)),
        ]
    )
    got = {f.house: f.value for f in forecasts_of(bus)}
    assert got == {"a": 2.0, "b": 6.0}


@pytest.mark.parametrize("name", ["linear", "lstm"])
def test_a_restarted_predictor_with_its_state_forecasts_as_if_it_never_stopped(val, tmp_path, name):
    model = load_model(name)
    msgs = [msg(r) for r in to_readings(val.iloc[:80], house="h000")]
    msgs += [msg(r) for r in to_readings(val.iloc[200:280], house="h001")]
    msgs.sort(key=lambda m: decode(m.topic, m.payload).seq)  # minute by minute, as the simulator sends them
    whole = MemoryHub().connect()
    PredictorNode(whole, model).handle(msgs)

    state = tmp_path / "state" / "p.json"
    first_bus = MemoryHub().connect()
    first = PredictorNode(first_bus, model, state_path=state)
    first.handle(msgs[:70])
    first.checkpoint()
    first.handle(msgs[70:90])  # handled but not checkpointed: killed here, so the broker redelivers them
    second_bus = MemoryHub().connect()
    second = PredictorNode(second_bus, model, state_path=state)
    assert second.stats.counters["restored_houses"] == 2
    assert second.last_seq == {("default", "h000"): 34, ("default", "h001"): 34}
    second.handle(msgs[70:])
    key = lambda f: (f.house, f.seq)  # noqa: E731
    expected = sorted(forecasts_of(whole), key=key)
    got = sorted({key(f): f for f in forecasts_of(first_bus) + forecasts_of(second_bus)}.values(), key=key)
    assert [(f.house, f.seq, f.issued_at, f.target_ts) for f in got] == [
        (f.house, f.seq, f.issued_at, f.target_ts) for f in expected
    ]
    # float32 LSTM sums differ in the last bits between batch sizes (one batch of 160 above)
    np.testing.assert_allclose([f.value for f in got], [f.value for f in expected], rtol=1e-6)


def test_a_saved_state_that_does_not_fit_is_reported_and_ignored(val, tmp_path, caplog):
    state = tmp_path / "p.json"
    linear = PredictorNode(MemoryHub().connect(), load_model("linear"), state_path=state)
    linear.handle([msg(r) for r in to_readings(val.iloc[:5])])
    linear.checkpoint()
    other = PredictorNode(MemoryHub().connect(), load_model("persistence"), state_path=state)
    assert other.stats.counters["state_errors"] == 1 and other.houses == {}
    assert "saved by model linear" in caplog.text
    good = json.loads(state.read_text())
    entry = good["streams"][0]
    broken = [
        '{"format": 1, "model": "linear", "houses": {',  # cut short
        "[" * 100_000 + "]" * 100_000,  # nested too deep for the parser
        json.dumps(good).replace(str(entry["state"]["s0"]), "NaN"),
        json.dumps(good).replace(str(entry["state"]["s0"]), "1e999"),
        json.dumps(good).replace(str(entry["state"]["s0"]), "9" * 1000),
        json.dumps(good).replace(f'"seen": {entry["state"]["seen"]}', '"seen": true'),
        json.dumps(good).replace(f'"last_seq": {entry["last_seq"]}', '"last_seq": -3'),
        json.dumps({**good, "streams": [{"run": "default", "house": "h000", "last_seq": 4, "state": [1, 2]}]}),
        json.dumps({**good, "streams": [{**entry, "run": "../x"}]}),  # not a run id
    ]
    for text in broken:
        state.write_text(text)
        again = PredictorNode(MemoryHub().connect(), load_model("linear"), state_path=state)
        assert again.stats.counters["state_errors"] == 1 and again.houses == {}, text[:80]
    state.write_text(json.dumps(good))
    assert PredictorNode(MemoryHub().connect(), load_model("linear"), state_path=state).houses


def test_serve_with_checkpoints_acknowledges_only_what_a_checkpoint_holds():
    import threading
    import time

    from wattcast.bus import MemoryBus
    from wattcast.node import NodeStats, StopFlag, serve

    log: list[str] = []

    class AckingBus(MemoryBus):
        def ack(self, message: Message) -> None:
            log.append(f"ack {message.topic}")

    hub = MemoryHub()
    bus = AckingBus(hub)
    hub._buses.append(bus)
    bus.subscribe("t/#")
    stop = StopFlag(install_signals=False)
    other = hub.connect()

    def feed() -> None:
        # the next message only once the previous one is acknowledged (it was 'sleep 0.3 s and
        # hope': on a busy machine two messages came in one batch, with one checkpoint)
        try:
            for i in range(3):
                other.publish(f"t/{i}", b"x")
                deadline = time.monotonic() + 60
                while f"ack t/{i}" not in log and time.monotonic() < deadline:
                    time.sleep(0.01)
        finally:
            stop.set()

    threading.Thread(target=feed).start()
    serve(
        bus,
        "n",
        "test",
        NodeStats("n"),
        lambda batch: log.extend(f"handle {m.topic}" for m in batch),
        stop,
        checkpoint=lambda: log.append("checkpoint"),
    )
    assert log == [entry for i in range(3) for entry in (f"handle t/{i}", "checkpoint", f"ack t/{i}")]


# ----------------------------------------------------------------------------- collector


def make_collector(tmp_path, models=("persistence",), **kw):
    hub = MemoryHub()
    bus = hub.connect()
    store = Store(tmp_path / "c.db")
    return CollectorNode(bus, store, models, **kw), bus, store


T0 = 1196680920


def fc(model: str, issued: int, value: float, house: str = "h000", seq: int = 0) -> Forecast:
    return Forecast(house, model, "v1", seq, issued, issued + 300, value)


def test_collector_matches_in_either_order_and_is_idempotent(tmp_path):
    node, bus, store = make_collector(tmp_path)
    # forecast first, then its actual
    node.handle([msg(fc("persistence", T0, 1.0))])
    assert store.count("matches") == 0
    node.handle([msg(reading("h000", 5, T0 + 300, 1.5))])
    # actual first, then a forecast for it (max speed: the actual can win the race)
    node.handle([msg(reading("h000", 6, T0 + 360, 2.0))])
    node.handle([msg(fc("persistence", T0 + 60, 3.0))])
    # QoS 1 redelivery of everything
    node.handle(
        [
            msg(fc("persistence", T0, 1.0)),
            msg(reading("h000", 5, T0 + 300, 1.5)),
            msg(fc("persistence", T0 + 60, 3.0)),
            msg(reading("h000", 6, T0 + 360, 2.0)),
        ]
    )
    rows = store.db.execute("SELECT issued_at, forecast, actual, error FROM matches ORDER BY issued_at").fetchall()
    assert rows == [(T0, 1.0, 1.5, -0.5), (T0 + 60, 3.0, 2.0, 1.0)]
    m = node.board.metrics("h000", "persistence")
    assert m.n == 2 and m.mse == pytest.approx((0.25 + 1.0) / 2) and m.mae == pytest.approx(0.75)
    assert node.stats.counters["duplicates"] == 4


def test_collector_publishes_its_progress_after_each_batch_with_new_readings(tmp_path):
    node, bus, store = make_collector(tmp_path)

    def progress() -> list[Progress]:
        return [decode(m.topic, m.payload) for m in bus.published if m.topic == progress_topic("collector")]

    node.handle(
        [msg(reading("h000", 5, T0 + 300, 1.5)), msg(reading("h001", 5, T0 + 300, 1.0)), msg(fc("persistence", T0, 1.0))]
    )
    # the newest reading of the batch; nothing complete yet (minutes 0-4 are missing), 2 houses seen
    assert progress() == [Progress("collector", "h001", 5, -1, 2)]
    node.handle([msg(fc("persistence", T0 + 60, 1.0))])  # no reading: nothing to say
    node.handle([msg(reading("h000", 5, T0 + 300, 1.5))])  # a duplicate: not progress either
    assert len(progress()) == 1
    node.handle([msg(reading("h000", 6, T0 + 360, 2.0))])
    assert progress()[-1] == Progress("collector", "h000", 6, -1, 2)
    # idle: the newest is sent again (a QoS 0 one lost would stall a simulator), 3 times at most
    for _ in range(5):
        node.progress_at -= 1.0
        node.tick()
    assert progress()[1:] == [Progress("collector", "h000", 6, -1, 2)] * 4


def test_the_collectors_progress_says_up_to_which_minute_it_holds_everything(tmp_path):
    """``complete``: every house's reading and every model's forecast up to that minute, no hole;
    what a simulator that lost its broker need not send again."""
    node, bus, store = make_collector(tmp_path, models=("persistence", "linear"))

    def complete() -> int:
        return [decode(m.topic, m.payload) for m in bus.published if m.topic == progress_topic("collector")][-1].complete

    houses = ("h000", "h001")
    node.handle([msg(reading(h, k, T0 + 60 * k, 1.0)) for k in range(4) for h in houses])
    assert complete() == 0  # minute 0 needs no forecast; minute 1 waits for them
    node.handle(
        [msg(fc(m, T0 + 60 * k, 1.0, house=h, seq=k)) for k in (1, 3) for h in houses for m in ("persistence", "linear")]
    )
    assert complete() == 1  # forecast 2 is a hole
    node.handle([msg(fc(m, T0 + 120, 1.0, house=h, seq=2)) for h in houses for m in ("persistence", "linear")])
    assert complete() == 3  # the hole filled: everything up to the newest reading
    # a collector restarted on this store knows the same
    again, bus2, _ = make_collector(tmp_path, models=("persistence", "linear"))
    assert again.board.complete(again.models) == 3


def test_collector_counts_and_stores_rejections(tmp_path):
    node, bus, store = make_collector(tmp_path)
    good = fc("persistence", T0, 1.0)
    bad = [
        Message(forecast_topic("h000", "persistence"), b"\xff\xfe"),
        Message(forecast_topic("h000", "persistence"), good.to_json().replace(b'"value":1.0', b'"value":NaN')),
        Message(forecast_topic("h000", "persistence"), good.to_json().replace(b'"value":1.0', b'"value":"1.0"')),
        Message(forecast_topic("h000", "oracle"), good.to_json().replace(b"persistence", b"oracle")),
        Message(forecast_topic("h000", "lstm"), fc("lstm", T0, 1.0).to_json()),  # valid, but not scored here
        Message("wattcast/v1/h000/forecast/persistence/extra", good.to_json()),
        Message(forecast_topic("h000", "persistence"), b"{" + b'"a":1,' * 2000 + b"}"),
    ]
    node.handle([*bad, msg(good), msg(reading("h000", 5, T0 + 300, 1.0))])
    assert node.stats.counters["malformed"] == len(bad)
    assert store.count("rejections") == len(bad)
    topics = {t for (t,) in store.db.execute("SELECT topic FROM rejections")}
    assert "wattcast/v1/h000/forecast/oracle" in topics
    assert store.count("matches") == 1


def test_collector_end_of_stream_reports_pending_and_unmatched(tmp_path):
    node, bus, store = make_collector(tmp_path, metrics_every=0.0)
    rs = [reading("h000", i, T0 + 60 * i, float(i)) for i in range(10) if i != 6]  # minute 6 is missing
    node.handle([msg(r) for r in rs])
    node.handle([msg(fc("persistence", r.ts, r.global_active_power, seq=r.seq)) for r in rs[1:]])
    assert not node.tick()  # no end of stream yet
    node.handle([msg(EndOfStream("h000", 9, 9, T0 + 540))])
    assert node.tick()
    (summary,) = store.summary()
    # issued at minutes 1..9 minus 6 (8 forecasts): targets 6..14; 6 is missing -> unmatched,
    # 7, 8, 9 matched; 10..14 are after the last reading -> pending
    assert summary["n"] == 3 and summary["unmatched"] == 1 and summary["pending"] == 4
    metrics = [decode(m.topic, m.payload) for m in bus.published if "/metrics/" in m.topic]
    assert metrics and isinstance(metrics[-1], Metrics) and metrics[-1].pending == 4


def test_collector_waits_for_every_model_before_finalizing(tmp_path):
    node, bus, store = make_collector(tmp_path, models=("persistence", "linear"), drain_s=60)
    node.handle(
        [
            msg(reading("h000", 0, T0, 1.0)),
            msg(reading("h000", 1, T0 + 60, 1.0)),
            msg(EndOfStream("h000", 2, 1, T0 + 60)),
            msg(fc("persistence", T0 + 60, 1.0, seq=1)),
        ]
    )
    assert not node.tick()
    node.handle([msg(fc("linear", T0 + 60, 1.0, seq=1))])
    assert node.tick()


def test_rolling_window_is_event_time():
    s = ModelScore(window_s=600)
    for k in range(20):
        s.add(T0 + 60 * k, error=float(k))
    # window (as_of - 600, as_of]: the last 10 errors 10..19
    assert len(s.window) == 10
    assert s.rolling_mse == pytest.approx(np.mean(np.arange(10, 20) ** 2))
    assert s.mse == pytest.approx(np.mean(np.arange(20) ** 2))
    assert s.mae == pytest.approx(np.mean(np.arange(20)))


def test_store_persists_everything_for_reports(tmp_path):
    node, bus, store = make_collector(tmp_path)
    node.handle([msg(reading("h000", 0, T0, 1.0)), msg(fc("persistence", T0 - 300, 2.0))])
    store.close()
    again = Store(tmp_path / "c.db")
    assert again.count("readings") == 1 and again.count("matches") == 1
    assert json.loads(again.db.execute("SELECT value FROM meta WHERE key='collector'").fetchone()[0])["models"] == [
        "persistence"
    ]


# ----------------------------------------------------------------------------- simulator


def test_simulator_publishes_every_house_then_ends(val):
    hub = MemoryHub()
    watcher = hub.connect()
    watcher.subscribe(ALL_READINGS, ALL_ENDS)
    sim = Simulator(hub.connect(), house_streams(val, houses=3, limit=50), speed=None, progress=lambda line: None)
    assert sim.run() == 150
    got = [decode(m.topic, m.payload) for m in list(watcher.inbox.queue)]
    readings = [g for g in got if isinstance(g, Reading)]
    ends = [g for g in got if isinstance(g, EndOfStream)]
    assert len(readings) == 150 and {e.house for e in ends} == {"h000", "h001", "h002"}
    h0 = [r for r in readings if r.house == "h000"]
    assert [r.global_active_power for r in h0] == val["global_active_power"].iloc[:50].tolist()
    h1 = [r for r in readings if r.house == "h001"]
    assert h1[0].global_active_power == val["global_active_power"].iloc[len(val) // 3]
    assert all(b.ts - a.ts == 60 for a, b in zip(h1, h1[1:], strict=False))
    assert all(r.sent_at is not None for r in readings)


def test_simulator_paces_real_time_multiples(val):
    import time

    sim = Simulator(MemoryHub().connect(), house_streams(val, 1, limit=4), speed=600.0, progress=lambda line: None)
    started = time.monotonic()
    sim.run()
    assert time.monotonic() - started >= 0.3 * 0.9  # 3 intervals of 60 s / 600


class WatchedInbox(queue.Queue):
    """An inbox that counts the times its reader found it empty: the reader has done all it
    could with what it was given and waits for more (how a test knows a node is blocked,
    without sleeping).  ``changed`` is notified on every take and every empty read."""

    def __init__(self) -> None:
        super().__init__()
        self.idle = 0
        self.changed = threading.Condition(self.mutex)

    def get(self, block: bool = True, timeout: float | None = None):
        if block:
            with self.mutex:
                if not self._qsize():
                    self.idle += 1
                    self.changed.notify_all()
        return super().get(block, timeout)

    def _get(self):  # called with the mutex held
        item = super()._get()
        self.changed.notify_all()
        return item


def settled(inbox: WatchedInbox, deadline_s: float = 60.0) -> None:
    """Wait until the reader of ``inbox`` has taken everything and waits again (generous deadline)."""
    with inbox.changed:
        assert inbox.changed.wait_for(lambda: not inbox._qsize(), deadline_s), "the node did not take its messages"
        seen = inbox.idle
        # two empty reads after it was drained: nothing was in progress
        assert inbox.changed.wait_for(lambda: inbox.idle > seen + 1, deadline_s), "the node did not come back to wait"


class PacedReplay:
    """A max-speed simulator on the memory hub, started on its own thread, and a watcher of its readings;
    ``peer`` publishes what it paces on (forecasts, progress).  The pacing knobs go to Simulator."""

    def __init__(self, val, houses: int, limit: int, stall_s: float = 600.0, **pacing) -> None:
        import threading

        hub = MemoryHub()
        self.watcher = hub.connect()
        self.watcher.subscribe(ALL_READINGS)
        self.peer = hub.connect()
        self.bus = hub.connect()
        self.bus.inbox = self.inbox = WatchedInbox()
        # stall_s: by default never within a test that checks the window, not the stall
        streams = house_streams(val, houses, limit=limit)
        self.sim = Simulator(self.bus, streams, None, lambda line: None, stall_s=stall_s, **pacing)
        self.runner = threading.Thread(target=self.sim.run, daemon=True)

    def start(self) -> PacedReplay:
        self.runner.start()
        return self


def test_simulator_keeps_at_most_window_readings_ahead_of_the_slowest_model(val):
    r = PacedReplay(val, 1, 40, await_models=("lstm", "linear"), window=5).start()
    watcher, predictor, inbox, sim, runner = r.watcher, r.peer, r.inbox, r.sim, r.runner

    def published() -> list[int]:
        return [decode(m.topic, m.payload).seq for m in list(watcher.inbox.queue)]

    def forecast(model: str, seq: int) -> None:
        r = decode(*next((m.topic, m.payload) for m in list(watcher.inbox.queue) if decode(m.topic, m.payload).seq == seq))
        f = Forecast(r.house, model, "t", seq, r.ts, r.ts + 300, 1.0, run=r.run)
        predictor.publish(f.topic, f.to_json())

    settled(inbox)
    assert published() == list(range(6))  # seq 0 (no forecast follows it) and 5 in flight
    for seq in (1, 2, 3):
        forecast("lstm", seq)
    settled(inbox)
    assert published() == list(range(6))  # linear, the slowest, has forecast nothing yet
    forecast("linear", 1)
    forecast("linear", 2)
    settled(inbox)
    assert published() == list(range(8))  # 2 forecast by both: 3..7 in flight
    for seq in range(3, 40):  # both keep up: the replay ends
        for model in ("lstm", "linear"):
            f = Forecast("h000", model, "t", seq, T0 + 60 * seq, T0 + 60 * seq + 300, 1.0, run=sim.run_id)
            predictor.publish(f.topic, f.to_json())
    runner.join(timeout=60)
    assert not runner.is_alive() and published() == list(range(40))


def test_flow_control_follows_the_house_published_last_in_each_minute(val):
    from simulator.streams import HouseStream, pacing_streams

    streams = house_streams(val, 3, limit=10)
    assert [s.house for s in pacing_streams(streams)] == ["h002"]
    short = HouseStream("h003", streams[0].ts[:4], streams[0].values[:4])
    longer = HouseStream("h004", streams[0].ts[:6], streams[0].values[:6])
    # minutes 0-5 end with h004, minutes 6-9 with h002
    assert [s.house for s in pacing_streams([*streams, short, longer])] == ["h004", "h002"]

    hub = MemoryHub()
    sim_bus = hub.connect()
    Simulator(sim_bus, streams, speed=None, progress=lambda line: None, await_models=("lstm",))
    assert sim_bus.filters == ["wattcast/v1/h002/forecast/lstm"]


def test_simulator_keeps_at_most_window_readings_ahead_of_an_awaited_node(val):
    r = PacedReplay(val, 2, 30, await_nodes=("collector",), window=4).start()  # 2 houses: 2 minutes in flight
    watcher, collector, inbox, sim, runner = r.watcher, r.peer, r.inbox, r.sim, r.runner

    def minutes() -> int:
        return len(watcher.inbox.queue) // 2

    def progress(house: str, seq: int) -> None:
        p = Progress("collector", house, seq, run=sim.run_id)
        collector.publish(p.topic, p.to_json(), qos=0)

    settled(inbox)
    assert minutes() == 3  # minutes 0, 1, 2
    progress("h000", 3)  # minute 3 of h000 stored, h001 not yet: minute 2 is the newest done
    settled(inbox)
    assert minutes() == 5  # minutes 3, 4 may follow (2 ahead of minute 2)
    progress("h001", 3)
    settled(inbox)
    assert minutes() == 6
    progress("h001", 29)  # everything stored: the replay ends
    runner.join(timeout=60)
    assert not runner.is_alive() and minutes() == 30


def test_with_the_collector_awaited_the_models_are_followed_through_its_complete_minute(val):
    r = PacedReplay(val, 1, 30, await_models=("lstm", "linear"), await_nodes=("collector",), window=3)
    assert r.bus.filters == ["wattcast/v1/progress/collector"]  # no forecast topic: the collector tells
    watcher, collector, inbox, sim, runner = r.watcher, r.peer, r.inbox, r.sim, r.start().runner

    def progress(seq: int, complete: int) -> None:
        p = Progress("collector", "h000", seq, complete, 1, run=sim.run_id)
        collector.publish(p.topic, p.to_json(), qos=0)

    settled(inbox)
    assert len(watcher.inbox.queue) == 4  # minute 0 (no forecast follows it) and 3 in flight
    progress(3, 0)  # every reading stored, the models' forecasts only up to minute 0
    settled(inbox)
    assert len(watcher.inbox.queue) == 4  # minute 4 waits for the forecasts of minute 1
    progress(3, 2)
    settled(inbox)
    assert len(watcher.inbox.queue) == 6  # minutes 0..5: 3 ahead of minute 2
    progress(3, 3)
    settled(inbox)
    assert len(watcher.inbox.queue) == 7  # minutes 0..6; minute 7 waits for reading 4 to be stored
    progress(29, 29)
    runner.join(timeout=60)
    assert not runner.is_alive() and len(watcher.inbox.queue) == 30


def test_a_dead_collector_does_not_take_the_models_pacing_with_it(val):
    import threading

    r = PacedReplay(val, 1, 40, stall_s=0.5, await_models=("lstm",), await_nodes=("collector",), window=3)
    stop = threading.Event()

    def predictor() -> None:  # alive: a forecast after every reading; the collector never says anything
        seen = 0
        while not stop.wait(0.01):
            queued = list(r.watcher.inbox.queue)
            for m in queued[seen:]:
                reading = decode(m.topic, m.payload)
                f = Forecast(reading.house, "lstm", "t", reading.seq, reading.ts, reading.ts + 300, 1.0, run=reading.run)
                r.peer.publish(f.topic, f.to_json())
            seen = len(queued)

    threading.Thread(target=predictor, daemon=True).start()
    r.start().runner.join(timeout=60)
    stop.set()
    assert not r.runner.is_alive() and r.sim.published == 40
    # the collector stopped being awaited; the live model paced the replay to its end
    assert r.sim.await_nodes == set() and r.sim.await_models == {"lstm"}
    assert "wattcast/v1/h000/forecast/lstm" in r.bus.filters


def test_models_followed_through_the_collector_stop_being_awaited_when_its_complete_stalls(val):
    import threading

    hub = MemoryHub()
    collector = hub.connect()
    sim_bus = hub.connect()
    stop = threading.Event()
    sim = Simulator(
        sim_bus,
        house_streams(val, 1, limit=20),
        speed=None,
        progress=lambda line: None,
        await_models=("lstm",),
        await_nodes=("collector",),
        window=2,
        stall_s=0.5,
    )
    watcher = hub.connect()
    watcher.subscribe(ALL_READINGS)

    def collector_stores_readings() -> None:  # every reading stored, the lstm forecasts never complete
        while not stop.wait(0.05):
            newest = [decode(m.topic, m.payload).seq for m in list(watcher.inbox.queue)]
            if newest:
                p = Progress("collector", "h000", max(newest), 0, 1, run=sim.run_id)
                collector.publish(p.topic, p.to_json(), qos=0)

    threading.Thread(target=collector_stores_readings, daemon=True).start()
    replay = threading.Thread(target=sim.run, args=(stop.is_set,))
    replay.start()
    replay.join(timeout=30)
    stop.set()
    replay.join()
    assert sim.published == 20 and sim.await_models == set() and sim.await_nodes == {"collector"}


def test_a_silent_model_stops_being_awaited_although_node_statuses_keep_coming(val):
    import threading

    hub = MemoryHub()
    sim_bus = hub.connect()
    sim_bus.subscribe("wattcast/v1/status/+")  # as wait_for_nodes leaves it
    peer, stop = hub.connect(), threading.Event()

    def chatter() -> None:  # the live nodes' periodic statuses
        while not stop.wait(0.1):
            peer.publish(status_topic("collector"), b'{"node":"collector","state":"online","role":"collector"}')

    threading.Thread(target=chatter, daemon=True).start()
    sim = Simulator(
        sim_bus,
        house_streams(val, 1, limit=20),
        speed=None,
        progress=lambda line: None,
        await_models=("lstm",),
        window=2,
        stall_s=0.5,
    )
    replay = threading.Thread(target=sim.run, args=(stop.is_set,))
    replay.start()
    replay.join(timeout=5)
    stop.set()
    replay.join()
    assert sim.published == 20 and sim.await_models == set()


def test_checkpoints_wait_for_the_broker_before_saving_and_acknowledging():
    from wattcast.bus import MemoryBus
    from wattcast.node import Checkpoints, NodeStats

    events: list[str] = []

    class Bus(MemoryBus):
        confirmed = False

        def flush(self, timeout=None) -> bool:
            events.append(f"flush {'ok' if self.confirmed else 'timeout'}")
            return self.confirmed

        def ack(self, message: Message) -> None:
            events.append(f"ack {message.topic}")

    bus = Bus()
    stats = NodeStats("n")
    cp = Checkpoints(bus, stats, save=lambda: events.append("save"))
    cp.hold([Message("t/1", b"")])
    cp.commit()  # the broker has not confirmed what the node published: neither save nor ack
    assert events == ["flush timeout"] and cp.held and stats.counters["checkpoints_deferred"] == 1
    bus.confirmed = True
    cp.commit()
    assert events == ["flush timeout", "flush ok", "save", "ack t/1"] and not cp.held


def test_pipeline_on_memory_bus_equals_offline_evaluation(val, tmp_path):
    """The three nodes wired through the in-memory hub reproduce `wattcast evaluate`."""
    models = ("persistence", "linear")
    pipeline = MemoryPipeline(Store(tmp_path / "m.db"), models)
    part = val.iloc[:400]
    pipeline.replay(part)
    collector = pipeline.collector
    for name in models:
        preds, targets = stream_forecasts(load_model(name), part)
        expected = float(np.mean((preds - targets) ** 2))
        m = collector.board.metrics("h000", name)
        assert m.n == len(targets) == 394
        assert math.isclose(m.mse, expected, rel_tol=1e-9)
        assert m.pending == 5


def test_restarted_collector_rebuilds_its_scores_from_the_store(tmp_path):
    node, bus, store = make_collector(tmp_path, models=("persistence",))
    rs = [reading("h000", i, T0 + 60 * i, float(i % 7)) for i in range(40)]
    fs = [fc("persistence", r.ts, r.global_active_power, seq=r.seq) for r in rs[1:]]
    node.handle([msg(r) for r in rs[:20]] + [msg(f) for f in fs[:25]])
    before = node.board.metrics("h000", "persistence")
    store.close()
    # a new process on the same store: the same state, then the rest of the stream
    again = CollectorNode(MemoryHub().connect(), Store(tmp_path / "c.db"), ("persistence",))
    assert again.board.metrics("h000", "persistence") == before
    again.handle([msg(r) for r in rs[15:]] + [msg(f) for f in fs[20:]])  # overlap: redelivery
    again.handle([msg(EndOfStream("h000", 40, 39, rs[-1].ts))])
    assert again.tick()
    reference, _, _ = make_collector(tmp_path / "ref", models=("persistence",))
    reference.handle([msg(r) for r in rs] + [msg(f) for f in fs])
    assert again.board.metrics("h000", "persistence") == reference.board.metrics("h000", "persistence")


def test_serve_survives_a_failing_handler_and_counts_it():
    from wattcast.node import NodeStats, StopFlag, serve

    hub = MemoryHub()
    bus = hub.connect()
    bus.subscribe("t/#")
    stats = NodeStats("n")
    stop = StopFlag(install_signals=False)
    seen = []

    def handle(batch):
        seen.extend(batch)
        if len(seen) == 1:
            other.publish("t/b", b"2")  # the next batch: the node must still be there for it
            raise RuntimeError("boom")
        stop.set()

    other = hub.connect()
    other.publish("t/a", b"1")
    import gc

    gc.unfreeze()
    serve(bus, "n", "test", stats, handle, stop)
    assert [m.topic for m in seen] == ["t/a", "t/b"]
    assert stats.counters["handler_errors"] == 1
    # the start-up heap is kept out of later collections (pauses a node's network thread)
    assert gc.get_freeze_count() > 0
    gc.unfreeze()
    # the final status carries the process's counters
    final = [m for m in bus.published if m.topic == status_topic("n")][-1]
    counters = json.loads(final.payload)["counters"]
    assert counters["rss_kb"] > 10_000 and counters["cpu_ms"] > 0


def test_a_last_will_keeps_the_node_counters_the_store_had(tmp_path):
    from wattcast.contract import Status

    node, bus, store = make_collector(tmp_path)
    final = Status("predictor-linear", "offline", "predictor", 2.0, {"rss_kb": 40000, "forecasts": 7})
    will = Status("predictor-linear", "offline", "predictor", 3.0)
    node.handle([msg(final)])
    node.handle([msg(will)])
    (row,) = store.db.execute("SELECT state, ts, counters FROM nodes").fetchall()
    assert row[0] == "offline" and row[1] == 3.0 and json.loads(row[2]) == {"rss_kb": 40000, "forecasts": 7}
    node.handle([msg(Status("predictor-linear", "online", "predictor", 4.0, {"rss_kb": 1}))])
    assert json.loads(store.db.execute("SELECT counters FROM nodes").fetchone()[0]) == {"rss_kb": 1}


# ------------------------------------------------------------------ retained messages


def test_collector_rejects_retained_readings_and_forecasts_but_not_statuses(tmp_path):
    """Only statuses are retained: a retained reading or forecast (left by anyone, in any run)
    would be delivered to every new subscriber; it is rejected, counted and stored."""
    from wattcast.contract import NOT_RETAINED, Status

    node, bus, store = make_collector(tmp_path)
    stale = [
        Message(reading_topic("h000"), reading("h000", 5, T0 + 300, 50.0).to_json(), retain=True),
        Message(forecast_topic("h000", "persistence"), fc("persistence", T0, 9.0).to_json(), retain=True),
        Message("wattcast/v1/h000/end", EndOfStream("h000", 1, 0, T0).to_json(), retain=True),
    ]
    status = Status("predictor-persistence", "online", "predictor", 1.0)
    node.handle([*stale, Message(status_topic(status.node), status.to_json(), retain=True)])
    assert node.stats.counters["malformed"] == len(stale)
    assert [r for (r,) in store.db.execute("SELECT reason FROM rejections")] == [NOT_RETAINED] * len(stale)
    assert store.count("readings") == store.count("forecasts") == 0 and not node.runs
    # the same messages delivered live are taken
    node.handle([msg(fc("persistence", T0, 1.0)), msg(reading("h000", 5, T0 + 300, 1.0))])
    assert store.count("matches") == 1


def test_predictor_rejects_a_retained_reading(val):
    bus = MemoryHub().connect()
    node = PredictorNode(bus, load_model("persistence"))
    rs = to_readings(val.iloc[:3])
    # a retained copy of a later reading must not make the node skip the earlier ones as duplicates
    node.handle([Message(reading_topic("h000"), rs[2].to_json(), retain=True)])
    assert node.stats.counters["malformed"] == 1 and node.stats.counters["received"] == 0
    node.handle([msg(r) for r in rs])
    assert node.stats.counters["duplicates"] == 0 and node.stats.counters["forecasts"] == 2


def test_the_simulator_does_not_take_a_stale_retained_status_for_a_node_that_is_there():
    from simulator.readiness import wait_for_nodes
    from wattcast.contract import FRESH_STATUS_S, Status

    now = 1_800_000_000.0
    bus = MemoryHub().connect()

    def status(ts: float, retain: bool) -> Message:
        return Message(status_topic("collector"), Status("collector", "online", "collector", ts).to_json(), retain=retain)

    bus.inbox.put(status(now - FRESH_STATUS_S - 1, retain=True))  # left by an earlier run
    with pytest.raises(TimeoutError, match="collector"):
        wait_for_nodes(bus, ["collector"], timeout=0.3, now=lambda: now)
    bus.inbox.put(status(now - 1, retain=True))  # fresh: the node is there
    wait_for_nodes(bus, ["collector"], timeout=30, now=lambda: now)
    bus.inbox.put(status(now - 3600, retain=False))  # delivered live: the node just said so
    wait_for_nodes(bus, ["collector"], timeout=30, now=lambda: now)


# ------------------------------------------------------------ conflicts and completeness


def test_a_second_different_reading_or_forecast_is_a_counted_stored_conflict_not_a_silent_first_win(tmp_path):
    node, bus, store = make_collector(tmp_path)
    real_f, real_r = fc("persistence", T0, 1.0), reading("h000", 5, T0 + 300, 1.5)
    node.handle([msg(real_f), msg(real_r)])
    # a redelivered copy is a duplicate; another value for the same key is a conflict
    node.handle([msg(real_f), msg(real_r), msg(fc("persistence", T0, 62.8)), msg(reading("h000", 5, T0 + 300, 50.0))])
    c = node.stats.counters
    assert c["duplicates"] == 2 and c["conflicts"] == 2
    reasons = [r for (r,) in store.db.execute("SELECT reason FROM rejections")]
    assert len(reasons) == 2 and all(r.startswith("conflict: ") for r in reasons), reasons
    # the first stays scored
    assert store.db.execute("SELECT forecast, actual FROM matches").fetchall() == [(1.0, 1.5)]


def test_the_store_names_what_a_finished_replay_lacks(tmp_path):
    store = Store(tmp_path / "s.db")
    t = T0
    store.add_end(EndOfStream("h000", 10, 9, t + 540), 1.0)
    store.add_end(EndOfStream("h001", 3, 2, t + 120), 1.0)
    store.add_readings([(reading("h000", k, t + 60 * k, 1.0), 1.0) for k in range(10) if k != 4])
    store.add_readings([(reading("h001", k, t + 60 * k, 1.0), 1.0) for k in range(3)])
    store.add_forecasts(
        [
            (fc("persistence", t + 60 * k, 1.0, house=h, seq=k), 1.0)
            for h in ("h000", "h001")
            for k in range(1, 10 if h == "h000" else 3)
        ]
    )
    store.add_forecasts([(fc("linear", t + 60 * k, 1.0, seq=k), 1.0) for k in range(1, 7)])
    store.commit()
    assert store.missing("default", ["persistence", "linear"], ["h000", "h001", "h002"]) == [
        "h002: no end of stream",
        "h000: 1 of 10 readings",
        "h000: 3 of 9 linear forecasts",
        "h001: 2 of 2 linear forecasts",
    ]
    assert store.missing("default", ["persistence"], ["h001"]) == ["h000: 1 of 10 readings"]


def test_the_collector_reports_a_loss_when_it_finalizes(tmp_path, caplog):
    node, bus, store = make_collector(tmp_path, drain_s=0.0)
    rs = [reading("h000", k, T0 + 60 * k, 1.0) for k in range(6)]
    node.handle([msg(r) for r in rs if r.seq != 2] + [msg(fc("persistence", r.ts, 1.0, seq=r.seq)) for r in rs[1:]])
    node.handle([msg(EndOfStream("h000", 6, 5, rs[-1].ts))])
    with caplog.at_level("ERROR"):
        while not node.tick():
            pass
    assert node.missing == ["h000: 1 of 6 readings"]
    assert store.meta()["collector_stats"]["missing"] == ["h000: 1 of 6 readings"]
    assert "incomplete" in caplog.text and "h000: 1 of 6 readings" in caplog.text


def test_a_reading_whose_seq_jumps_far_ahead_is_rejected_and_discards_nothing(val):
    from msgspec.structs import replace

    from predictor.node import MAX_SEQ_JUMP

    bus = MemoryHub().connect()
    node = PredictorNode(bus, load_model("persistence"))
    rs = to_readings(val.iloc[:6])
    node.handle([msg(rs[0]), msg(replace(rs[1], seq=2**53 - 1)), msg(replace(rs[1], seq=1 + MAX_SEQ_JUMP))])
    node.handle([msg(r) for r in rs[1:]])
    c = node.stats.counters
    assert c["malformed"] == 2 and c["duplicates"] == 0 and c["forecasts"] == 5


@pytest.mark.parametrize("name", ["persistence", "linear", "lstm"])
def test_after_a_broker_loss_the_predictor_fills_the_hole_and_sends_lost_forecasts_again(val, name):
    """A broker that dies loses readings it acknowledged; the simulator sends them again, after newer
    ones that its MQTT client re-sent on reconnecting.  The predictor waits for the hole to fill
    (its forecasts stay those of an unbroken stream) and answers a reading it already forecast
    with the same forecast again (the one the broker may have lost; the collector drops copies)."""
    rs = to_readings(val.iloc[:40])
    bus = MemoryHub().connect()
    node = PredictorNode(bus, load_model(name), clock=lambda: 0.0)
    node.handle([msg(r) for r in rs[:20]])
    node.handle([msg(r) for r in rs[25:30]])  # re-sent in flight after the restart; 20-24 were lost
    node.handle([msg(r) for r in rs[15:40]])  # the simulator sends again from its last complete minute
    got = forecasts_of(bus)
    c = node.stats.counters
    # forecasts 15-19 again; 25-29 came again in the batch that learnt them: forecast once
    assert c["gaps"] == 0 and c["resent"] == 5 and c["duplicates"] == 10
    unique = {f.seq: f for f in got}
    assert len(got) == 39 + 5 and sorted(unique) == list(range(1, 40))
    assert all(f == unique[f.seq] for f in got)  # copies are equal
    clean = MemoryHub().connect()
    PredictorNode(clean, load_model(name)).handle([msg(r) for r in rs])
    assert [unique[k].value for k in range(1, 40)] == [f.value for f in forecasts_of(clean)]


def test_readings_held_after_a_hole_survive_a_restart(val, tmp_path):
    rs = to_readings(val.iloc[:12])
    state = tmp_path / "p.json"
    first = PredictorNode(MemoryHub().connect(), load_model("linear"), state_path=state, clock=lambda: 0.0)
    first.handle([msg(r) for r in rs[:5] + rs[7:9]])
    first.checkpoint()
    bus = MemoryHub().connect()
    again = PredictorNode(bus, load_model("linear"), state_path=state, clock=lambda: 0.0)
    again.handle([msg(r) for r in rs[5:12]])
    clean = MemoryHub().connect()
    PredictorNode(clean, load_model("linear")).handle([msg(r) for r in rs])
    assert {f.seq: f.value for f in forecasts_of(bus)} == {f.seq: f.value for f in forecasts_of(clean)[4:]}


def test_a_forecast_a_model_cannot_give_is_counted_not_published(val):
    """Messages built in Python are not validated: the predictor checks what its model computed."""
    model = load_model("persistence")
    real = model.predict
    model.predict = lambda queries: [float("nan"), *real(queries[1:])]  # diverged for the first one
    bus = MemoryHub().connect()
    node = PredictorNode(bus, model)
    readings = to_readings(val.iloc[:3])
    node.handle([msg(r) for r in readings])
    assert node.stats.counters["bad_forecasts"] == 1
    assert [f.seq for f in forecasts_of(bus)] == [2]


def test_a_status_after_another_keeps_what_a_last_will_lacks():
    from wattcast.contract import Status

    final = Status("predictor-lstm", "online", "predictor", 2.0, {"forecasts": 7}, "lstm")
    will = Status("predictor-lstm", "offline", "predictor")
    assert will.after(final) == Status("predictor-lstm", "offline", "predictor", None, {"forecasts": 7}, "lstm")
    assert will.after(None) is will
    fresh = Status("predictor-lstm", "online", "predictor", 3.0, {"forecasts": 1}, "lstm")
    assert fresh.after(final) is fresh


@pytest.mark.integration
def test_a_node_stopped_after_its_broker_died_exits_at_once(broker, tmp_path):
    """SIGTERM while the broker is gone: the node must not wait (over a minute) for a reconnection to
    publish its final status."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers import REPO

    from wattcast.bus import BrokerConfig, MqttBus

    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
    log = tmp_path / "predictor.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "predictor", "--broker", broker.url, "--model", "persistence"]
            + ["--state-dir", str(tmp_path / "state")],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    watcher = MqttBus(BrokerConfig(broker.host, broker.port), "test-watcher", session=False).connect(timeout=30)
    try:
        watcher.subscribe("wattcast/v1/status/predictor-persistence")
        deadline = time.monotonic() + 120
        while b'"online"' not in watcher.inbox.get(timeout=max(0.1, deadline - time.monotonic())).payload:
            pass
        watcher.close()
        broker.kill()
        deadline = time.monotonic() + 60
        while "disconnected from" not in log.read_text():  # it has noticed
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)  # it waited 60 s for the broker (and then 10 s more) before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "stopping while disconnected from the broker" in log.read_text()
