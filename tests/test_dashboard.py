"""The dashboard's state and web server, without a broker or a browser (tests/test_dashboard_live.py has both)."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from wattcast.contract import Forecast, Metrics, Progress, Reading, Status
from wattcast.dashboard import DashboardServer, DashboardState, subscriptions
from wattcast.scoring import pooled

T0 = 1196680920  # a whole minute
RUN = "20261203T000000Z-aaaaaa"


def reading(house: str, seq: int, gap: float, run: str = RUN) -> Reading:
    return Reading(house, seq, T0 + 60 * seq, gap, run=run, sent_at=1000.0 + seq)


def forecast(house: str, model: str, seq: int, value: float, run: str = RUN) -> Forecast:
    ts = T0 + 60 * seq
    return Forecast(house, model, "v1", seq, ts, ts + 300, value, reading_sent_at=1000.0 + seq, run=run)


def metrics(house: str, model: str, as_of_seq: int, n: int, mse: float, rolling: float, run: str = RUN) -> Metrics:
    return Metrics(house, model, T0 + 60 * as_of_seq, n, mse, mse**0.5, mse**0.5, n, rolling, 3600, 0, 5, run=run)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_models_are_pooled_over_houses_with_skill_against_persistence():
    state = DashboardState(clock=Clock(), wall=lambda: 2000.0)
    state.take(metrics("h000", "lstm", 10, n=6, mse=0.30, rolling=0.2))
    state.take(metrics("h001", "lstm", 10, n=2, mse=0.50, rolling=0.4))
    state.take(metrics("h000", "persistence", 10, n=6, mse=0.40, rolling=0.3))
    state.take(metrics("h001", "persistence", 10, n=2, mse=0.60, rolling=0.5))
    snap = state.snapshot()
    by = {m["model"]: m for m in snap["models"]}
    lstm_mse = pooled([(6, 0.30), (2, 0.50)])
    base = pooled([(6, 0.40), (2, 0.60)])
    assert by["lstm"]["n"] == 8 and by["lstm"]["houses"] == 2
    assert by["lstm"]["mse"] == pytest.approx(lstm_mse)
    assert by["lstm"]["rolling_mse"] == pytest.approx(pooled([(6, 0.2), (2, 0.4)]))
    assert by["lstm"]["skill"] == pytest.approx(1 - lstm_mse / base)
    assert by["persistence"]["skill"] == pytest.approx(0.0)
    assert snap["houses"] == ["h000", "h001"]
    assert json.dumps(snap)  # JSON-ready


def test_history_follows_meter_time_and_stays_bounded():
    state = DashboardState(history_points=50, clock=Clock())
    for k in range(1, 200):
        state.take(metrics("h000", "lstm", k, n=k, mse=1.0 / k, rolling=0.5))
        if k >= 100:  # a model that appears later has no points before it
            state.take(metrics("h000", "gbm", k, n=k, mse=2.0 / k, rolling=0.5))
    h = state.snapshot()["history"]
    assert len(h["t"]) <= 50
    assert h["t"] == sorted(h["t"]) and h["t"][-1] == T0 + 60 * 199  # the newest point is kept
    assert len(h["mse"]["lstm"]) == len(h["mse"]["gbm"]) == len(h["t"])
    assert h["mse"]["lstm"][-1] == pytest.approx(1.0 / 199)
    assert h["mse"]["gbm"][0] is None and h["mse"]["gbm"][-1] == pytest.approx(2.0 / 199)


def test_a_house_lines_up_forecasts_with_the_actual_reading_of_their_target_minute():
    state = DashboardState(keep_minutes=30, clock=Clock())
    for seq in range(100):
        state.take(reading("h000", seq, gap=float(seq)))
        state.take(forecast("h000", "lstm", seq, value=seq + 5.5), received_at=1000.0 + seq + 0.02)
        state.take(reading("h001", seq, gap=-1.0))
    house = state.snapshot("h000", window_minutes=20)["house"]
    assert house["id"] == "h000"
    t, actual, lstm = house["t"], house["actual"], house["forecasts"]["lstm"]
    assert t == sorted(t) and t[-1] == T0 + 60 * 104  # the newest forecast's target, 5 min ahead
    assert t[0] >= T0 + 60 * (99 - 20)  # the window asked for
    for ts, a, f in zip(t, actual, lstm, strict=True):
        seq = (ts - T0) // 60
        assert a == (float(seq) if seq <= 99 else None)  # no reading yet for the last 5 targets
        assert f == pytest.approx(seq + 0.5)  # issued 5 min earlier, for this very minute
    assert len(state.actual["h000"]) <= 30 + 16  # older minutes dropped
    assert state.snapshot("h001")["house"]["actual"][-1] == -1.0  # another house chosen
    assert state.snapshot("nope")["house"]["id"] == "h000"  # an unknown house: the first
    by = {m["model"]: m for m in state.snapshot()["models"]}
    assert by == {}  # no metrics yet: readings and forecasts alone make no score


def test_a_new_run_starts_afresh_and_late_messages_of_the_old_one_are_ignored():
    state = DashboardState(clock=Clock())
    state.take(metrics("h000", "lstm", 5, n=5, mse=0.3, rolling=0.3))
    state.take(reading("h000", 5, gap=1.0))
    new = "20261203T010000Z-bbbbbb"
    state.take(reading("h000", 0, gap=2.0, run=new))  # the new run's first reading
    snap = state.snapshot()
    assert snap["run"] == new and snap["models"] == [] and snap["history"]["t"] == []
    assert snap["house"]["actual"] == [2.0]
    state.take(metrics("h000", "lstm", 6, n=6, mse=0.3, rolling=0.3))  # late, of the old run
    state.take(reading("h000", 6, gap=9.0))
    assert state.snapshot()["models"] == [] and state.snapshot()["house"]["actual"] == [2.0]


def test_progress_and_eta_come_from_the_simulators_plan_and_the_collectors_progress():
    clock = Clock()
    state = DashboardState(clock=clock)
    assert state.snapshot()["progress"] is None
    counters = {"planned": 400}
    state.take(Status("simulator", "online", "simulator", 1.0, counters), retained=True)
    state.take(Progress("collector", "h001", 49, complete=48, houses=2, run=RUN))
    clock.t += 10
    state.take(Progress("collector", "h001", 99, complete=98, houses=2, run=RUN))
    p = state.snapshot()["progress"]
    assert (p["done"], p["total"]) == (200, 400)
    assert "10/s, ETA 20 s" in p["text"]  # 100 readings in 10 s, 200 to go


def test_node_states_online_offline_and_silent():
    wall = [1000.0]
    state = DashboardState(clock=Clock(), wall=lambda: wall[0])
    state.take(Status("simulator", "online", "simulator", 990.0, {"planned": 10}))  # heard live
    state.take(Status("predictor-old", "online", "predictor", 100.0, {}, model="lstm"), retained=True)
    state.take(Status("collector", "online", "collector", 999.0, {"received": 5}), retained=True)
    state.take(Status("predictor-gbm", "offline", "predictor", 999.0), retained=True)
    nodes = {n["node"]: n for n in state.snapshot()["nodes"]}
    assert nodes["simulator"]["state"] == "online"
    assert nodes["predictor-old"]["state"] == "silent"  # a retained online status of long ago
    assert nodes["collector"]["state"] == "online" and nodes["collector"]["counters"] == {"received": 5}
    assert nodes["predictor-gbm"]["state"] == "offline"


def test_the_dashboard_reads_every_score_but_only_the_houses_it_draws():
    every = subscriptions(None)
    assert "wattcast/v1/+/reading" in every and "wattcast/v1/+/forecast/+" in every
    some = subscriptions(["h003"])
    assert "wattcast/v1/+/metrics/+" in some and "wattcast/v1/status/+" in some and "wattcast/v1/progress/+" in some
    assert "wattcast/v1/h003/reading" in some and "wattcast/v1/+/reading" not in some


@pytest.fixture
def server():
    state = DashboardState(clock=Clock())
    state.take(metrics("h000", "lstm", 5, n=5, mse=0.3, rolling=0.25))
    srv = DashboardServer(state, "127.0.0.1", 0, push_every=0.05)
    srv.serve_in_thread()
    yield srv
    srv.stop()


def get(server, path: str, host: str | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    headers = {"Host": host} if host else {}
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    out = r.status, dict(r.getheaders()), r.read()
    conn.close()
    return out


def test_the_server_serves_the_page_its_files_and_the_state(server):
    status, headers, body = get(server, "/")
    assert status == 200 and b"uPlot.iife.min.js" in body and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]  # nothing from elsewhere, no inline script
    for name in ("app.js", "style.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"):
        status, _, body = get(server, f"/static/{name}")
        assert status == 200 and len(body) > 100, name
    status, headers, body = get(server, "/api/state?house=h000")
    snap = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert snap["models"][0]["model"] == "lstm" and snap["models"][0]["mse"] == pytest.approx(0.3)


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/vendor/../../state.py", "/static/.hidden", "/nope"])
def test_the_server_serves_nothing_else(server, path):
    assert get(server, path)[0] == 404


def test_a_page_of_another_site_cannot_read_the_dashboard(server):
    # DNS rebinding: evil.example resolved to 127.0.0.1 would send its own name as Host
    status, _, body = get(server, "/api/state", host="evil.example:8050")
    assert status == 403 and b"--allow-host" in body
    assert get(server, "/api/state", host=f"localhost:{server.server_address[1]}")[0] == 200


def test_a_dashboard_on_all_interfaces_answers_the_names_it_is_told():
    srv = DashboardServer(DashboardState(), "0.0.0.0", 0, allowed_hosts=("meter.lan",))
    srv.serve_in_thread()
    try:
        assert get(srv, "/healthz", host="meter.lan:8050")[0] == 200
        assert get(srv, "/healthz", host="127.0.0.1")[0] == 200
        assert get(srv, "/healthz", host="evil.example")[0] == 403
        assert get(srv, "/healthz", host="")[0] == 403
    finally:
        srv.stop()


def test_events_push_a_snapshot_when_the_state_changes(server):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    conn.request("GET", "/events")
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"

    def event() -> dict:
        lines = []
        while True:
            line = r.fp.readline().decode()
            if line == "\n" and lines:
                break
            lines.append(line)
        assert lines[0] == "event: state\n"
        return json.loads(lines[1][len("data: ") :])

    first = event()
    assert first["models"][0]["n"] == 5
    threading.Thread(target=server.state.take, args=(metrics("h000", "lstm", 6, n=6, mse=0.2, rolling=0.2),)).start()
    while (snap := event())["models"][0]["n"] != 6:  # a refresh may come first
        assert snap["version"] == first["version"]
    conn.close()


def test_a_dashboard_without_its_broker_says_so_in_one_line():
    import subprocess
    import sys

    from wattcast.broker import free_port

    r = subprocess.run(
        [sys.executable, "-m", "wattcast", "dashboard", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("wattcast: error: cannot reach MQTT broker at mqtt://127.0.0.1:")
    assert len(r.stderr.strip().splitlines()) == 1


class Subscriptions:
    """A bus that records (un)subscriptions."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def subscribe(self, *filters: str, qos: int = 1) -> None:
        self.calls.append(("subscribe", filters))

    def unsubscribe(self, *filters: str) -> None:
        self.calls.append(("unsubscribe", filters))


def test_a_slow_feed_is_followed_whole():
    from wattcast.dashboard.feed import HouseFeed

    clock, bus = Clock(), Subscriptions()
    feed = HouseFeed(bus, ["r", "f"], budget=200, burst=100, pause_s=2.0, clock=clock)
    feed.start()
    for _ in range(1000):  # 100 a second: under the budget
        clock.t += 0.01
        feed.seen()
        feed.tick()
    assert bus.calls == [("subscribe", ("r", "f"))] and feed.subscribed and not feed.sampled


def test_a_fast_feed_is_sampled_in_bursts_and_says_so():
    from wattcast.dashboard.feed import HouseFeed

    clock, bus = Clock(), Subscriptions()
    feed = HouseFeed(bus, ["r", "f"], budget=200, burst=100, pause_s=2.0, clock=clock)
    feed.start(subscribed=True)
    taken = 0
    for _ in range(10_000):  # 1,000 a second for 10 s
        clock.t += 0.001
        if feed.subscribed:
            taken += 1
        feed.seen()  # what was in flight still arrives, and is not counted
        feed.tick()
    assert feed.sampled and feed.pauses >= 4
    assert bus.calls[0] == ("unsubscribe", ("r", "f")) and bus.calls[1] == ("subscribe", ("r", "f"))
    assert taken < 10_000 // 3  # bursts of 100 every ~2.1 s
    assert taken >= 100 * feed.pauses  # every burst whole
    clock.t += 60  # long after: no longer said to be sampled
    assert not feed.sampled
