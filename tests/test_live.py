"""The live view: LiveTable's aggregation, LiveView's output, ``wattcast watch`` against a real broker."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import time

import pytest
from helpers import REPO

from wattcast.broker import free_port
from wattcast.bus import BrokerConfig, MqttBus
from wattcast.contract import Metrics, Status
from wattcast.live import LiveTable, LiveView

T0 = 1196680980


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def metrics(
    house: str,
    model: str,
    n: int,
    mse: float,
    rolling_n: int,
    rolling_mse: float,
    as_of: int = T0,
    unmatched: int = 0,
    pending: int = 0,
    run: str = "default",
) -> Metrics:
    return Metrics(
        house, model, as_of, n, mse, math.sqrt(mse), mse / 2, rolling_n, rolling_mse, 3600, unmatched, pending, run=run
    )


# --------------------------------------------------------------------------- LiveTable


def test_table_pools_houses_per_model():
    table = LiveTable(clock=FakeClock())
    table.update(metrics("h000", "lstm", 100, 0.2, 50, 0.1, unmatched=1))
    table.update(metrics("h001", "lstm", 300, 0.4, 60, 0.3, unmatched=2, pending=5))
    table.update(metrics("h000", "persistence", 10, 0.5, 10, 0.5))
    lines = {x.model: x for x in table.lines()}
    lstm = lines["lstm"]
    assert (lstm.houses, lstm.n, lstm.rolling_n, lstm.unmatched, lstm.pending) == (2, 400, 110, 3, 5)
    assert lstm.mse == pytest.approx((100 * 0.2 + 300 * 0.4) / 400)
    assert lstm.rolling_mse == pytest.approx((50 * 0.1 + 60 * 0.3) / 110)
    assert lines["persistence"].mse == pytest.approx(0.5)
    assert [x.model for x in table.lines()] == ["lstm", "persistence"]  # the contract's order

    text = table.render()
    assert text.startswith("2 house(s), meter time 2007-12-03 11:23, MSE in kW², rolling 60 min\n")
    assert max(len(line) for line in text.splitlines()) < 80
    row = next(line for line in text.splitlines() if line.startswith("lstm "))
    assert row.split() == ["lstm", "2", "400", f"{lstm.rolling_mse:.4f}", f"{lstm.mse:.4f}", "0.0", "3"]


def test_table_keeps_the_newest_metrics_per_house_and_model():
    table = LiveTable(clock=FakeClock())
    assert table.update(metrics("h000", "lstm", 100, 0.2, 50, 0.1, as_of=T0 + 600))
    assert not table.update(metrics("h000", "lstm", 90, 0.9, 50, 0.9, as_of=T0 + 540))  # a late redelivery
    assert table.update(metrics("h000", "lstm", 120, 0.3, 55, 0.2, as_of=T0 + 720))
    (line,) = table.lines()
    assert (line.n, line.mse, line.rolling_mse) == (120, pytest.approx(0.3), pytest.approx(0.2))
    assert table.as_of() == T0 + 720


def test_forecast_rate_comes_from_the_growth_of_n_over_wall_time():
    clock = FakeClock(100.0)
    table = LiveTable(rate_window=5.0, clock=clock)
    table.update(metrics("h000", "lstm", 1000, 0.2, 50, 0.1))  # first sight: n so far is no rate
    assert table.rate("lstm") == 0.0
    clock.t = 101.0
    table.update(metrics("h000", "lstm", 1050, 0.2, 50, 0.1))
    table.update(metrics("h001", "lstm", 700, 0.2, 50, 0.1))  # a house joining adds nothing either
    clock.t = 102.0
    table.update(metrics("h000", "lstm", 1150, 0.2, 50, 0.1))
    table.update(metrics("h001", "lstm", 750, 0.2, 50, 0.1))
    assert table.rate("lstm") == pytest.approx((50 + 100 + 50) / 2.0)
    clock.t = 104.0  # no news for 2 s: the same growth over a longer time
    assert table.rate("lstm") == pytest.approx(200 / 4.0)
    clock.t = 110.0  # nothing within the last 5 s: the stream has stopped
    assert table.rate("lstm") == 0.0
    assert table.rate("linear") == 0.0


def test_table_renders_nodes_and_an_empty_state():
    table = LiveTable(clock=FakeClock(), wall=lambda: 12.0)
    assert "(no metrics yet)" in table.render()
    table.update_status(Status("collector", "online", "collector", 5.0, {}))
    table.update_status(Status("predictor-lstm", "offline", "predictor", 6.0, {}))
    assert "nodes online: 1 (collector), offline: 1" in table.render()
    # a retained online status over 10 s old is a node gone silent (an earlier run's)
    table.update_status(Status("predictor-linear", "online", "predictor", 1.0, {}))
    assert "nodes online: 1 (collector), offline: 1, silent for over 10 s: 1" in table.render()


def test_table_follows_the_newest_run():
    table = LiveTable(clock=FakeClock())
    assert table.update(metrics("h000", "lstm", 4000, 0.3, 60, 0.1, run="r1"))
    assert table.update(metrics("h000", "lstm", 10, 0.9, 10, 0.9, run="r2"))  # a new replay: n starts again
    assert [x.n for x in table.lines()] == [10] and table.render().endswith("run r2")
    assert not table.update(metrics("h000", "lstm", 4093, 0.3, 60, 0.1, run="r1"))  # the old run's late final
    assert [x.n for x in table.lines()] == [10]


# ---------------------------------------------------------------------------- LiveView


def test_view_off_a_terminal_prints_plain_lines_at_most_every_few_seconds():
    clock = FakeClock(0.0)
    out = io.StringIO()  # isatty() is False
    view = LiveView(out, plain_every=5.0, clock=clock)
    assert not view.tty
    view.update(metrics("h000", "lstm", 10, 0.25, 10, 0.25))
    assert view.refresh()
    clock.t = 1.0
    view.update(metrics("h000", "lstm", 20, 0.25, 20, 0.25))
    assert not view.refresh()  # too soon
    clock.t = 6.0
    assert view.refresh()
    clock.t = 12.0
    assert not view.refresh()  # nothing new: no repeated line
    view.close()
    text = out.getvalue()
    assert "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "[   0.0 s] lstm n=10 roll=0.2500 mse=0.2500 0.0/s"
    assert lines[1].startswith("[   6.0 s] lstm n=20 ")
    assert lines[2].startswith("1 house(s), meter time")  # close(): the whole table once
    assert any(line.split()[:3] == ["lstm", "1", "20"] for line in lines[3:])


def test_view_on_a_terminal_redraws_in_place():
    clock = FakeClock(0.0)
    out = io.StringIO()
    view = LiveView(out, tty=True, clock=clock)
    view.update(metrics("h000", "lstm", 10, 0.25, 10, 0.25))
    view.refresh()
    first = out.getvalue()
    assert "\x1b[" not in first.replace(LiveView.CLEAR_LINE, "")  # nothing to go back over yet
    height = first.count("\n")
    clock.t = 1.0
    view.update(metrics("h000", "persistence", 10, 0.5, 10, 0.5))  # one more row
    view.refresh()
    second = out.getvalue()[len(first) :]
    assert second.startswith(f"\x1b[{height}A\r")  # back to the top of the table
    assert second.count(LiveView.CLEAR_LINE) == height + 1
    view.log("a progress line")
    third = out.getvalue()[len(first) + len(second) :]
    assert third.startswith(f"\x1b[{height + 1}A\r\x1b[Ja progress line\n")
    assert "persistence" in third  # the table again, below the line


# ------------------------------------------------------------------- wattcast watch


def test_watch_shows_what_a_deployment_publishes(broker):
    """``python -m wattcast watch --duration`` against a real broker, with a test publisher."""
    pub = MqttBus(BrokerConfig.from_url(broker.url), f"test-pub-{time.monotonic_ns()}", session=False).connect(5)
    try:
        pub.publish(
            "wattcast/v1/status/collector",
            Status("collector", "online", "collector", time.time(), {}).to_json(),
            retain=True,
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "wattcast", "watch", "--broker", broker.url, "--duration", "4"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        n = 0
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            n += 7
            for house, mse in (("h000", 0.25), ("h001", 0.75)):
                m = metrics(house, "lstm", n, mse, n, mse, as_of=T0 + 60 * n)
                pub.publish(m.topic, m.to_json())
            pub.publish("wattcast/v1/h000/metrics/lstm", b"{not json")  # ignored, counted
            time.sleep(0.1)
        out, err = proc.communicate(timeout=10)
    finally:
        pub.close()
    assert proc.returncode == 0, err
    assert f"watching {broker.url}" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("lstm ")]
    assert rows, out
    model, houses, matched, rolling, mse, _rate, unmatched = rows[-1]  # the final table
    assert (model, houses, unmatched) == ("lstm", "2", "0")
    assert int(matched) > 0 and int(matched) % 14 == 0  # both houses' n
    assert float(mse) == pytest.approx(0.5, abs=1e-4) and float(rolling) == pytest.approx(0.5, abs=1e-4)
    assert "nodes online: 1 (collector)" in out
    assert "malformed" in out
    assert "Traceback" not in err


def test_watch_of_an_unreachable_broker_is_one_line(capsys):
    from wattcast.cli import main
    from wattcast.watch import watch

    url = f"mqtt://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match="cannot reach MQTT broker"):
        watch(BrokerConfig.from_url(url), duration=1, stream=io.StringIO())
    assert main(["watch", "--broker", url, "--duration", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wattcast: error: cannot reach MQTT broker")
