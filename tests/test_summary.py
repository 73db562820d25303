"""What a newcomer reads: a progress line with done/total and ETA, and one summary table."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys

import pytest

from wattcast.broker import available_kind
from wattcast.contract import Metrics
from wattcast.live import LiveTable, LiveView
from wattcast.runner import format_table

T0 = 1196680920


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _metrics(n: int, mse: float) -> Metrics:
    return Metrics("h000", "lstm", T0 + 60 * n, n, mse, math.sqrt(mse), mse / 2, n, mse, 3600, 0, 5)


def test_progress_has_done_total_rate_and_eta():
    clock = FakeClock(0.0)
    table = LiveTable(clock=clock)
    assert table.progress_text() is None
    table.set_progress(100, 4000)
    assert table.progress_text() == "readings 100/4,000 (2 %)"  # no rate from one sample
    clock.t = 2.0
    table.set_progress(1100, 4000)
    assert table.progress_text() == "readings 1,100/4,000 (28 %), 500/s, ETA 6 s"
    table.set_progress(900, 4000)  # an older message changes nothing
    assert table.done == 1100


def test_a_piped_log_gets_the_progress_line_and_no_second_table():
    clock = FakeClock(0.0)
    out = io.StringIO()
    view = LiveView(out, plain_every=5.0, clock=clock)
    view.table.set_progress(0, 4099)
    view.update(_metrics(10, 0.25))
    clock.t = 5.0
    view.table.set_progress(2000, 4099)
    assert view.refresh()
    line = out.getvalue().splitlines()[-1]
    assert line == "[   5.0 s] readings 2,000/4,099 (49 %), 400/s, ETA 5 s; MSE so far: lstm 0.2500"
    before = out.getvalue()
    view.close(final_table=False)
    assert out.getvalue() == before  # wattcast run prints its own summary: one table


def test_on_a_terminal_the_live_table_explains_rolling_and_gives_way_to_the_summary():
    clock = FakeClock(0.0)
    out = io.StringIO()
    view = LiveView(out, tty=True, clock=clock)
    view.table.set_progress(10, 100)
    view.update(_metrics(10, 0.25))
    view.refresh(force=True)
    text = out.getvalue()
    assert "readings 10/100 (10 %)" in text
    assert "rolling MSE = last 60 min of meter time" in text
    height = text.count("\n")
    view.close(final_table=False)
    assert out.getvalue()[len(text) :] == f"\x1b[{height}A\r\x1b[J"  # erased: the summary takes its place


def test_the_summary_table_says_what_its_counts_mean():
    result = {
        "models": {"lstm": {"n": 4093, "mse": 0.3376, "rmse": 0.581, "mae": 0.2752, "unmatched": 0, "pending": 5}},
        "published": 4099,
        "received": 20544,
        "malformed": 0,
        "startup_s": 1.0,
        "replay_s": 4.0,
        "elapsed_s": 5.0,
        "store": "runs/x/wattcast.db",
        "houses": 1,
    }
    text = format_table(result)
    assert sum(1 for line in text.splitlines() if line.startswith("model ")) == 1
    assert "pending = target after the last reading" in text and "unmatched = no reading" in text
    assert "target minute (issued + 5 min)" in text


@pytest.mark.integration
def test_a_run_prints_one_table(tmp_path):
    if available_kind("mosquitto") is None:
        pytest.skip("needs mosquitto (apt-get install mosquitto)")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "wattcast",
            "run",
            "--limit",
            "60",
            "--models",
            "persistence",
            "linear",
            "--store",
            str(tmp_path / "r" / "w.db"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
        env={**os.environ},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    both = (out.stderr + out.stdout).splitlines()
    assert sum(1 for line in both if line.split()[:2] in (["model", "n"], ["model", "houses"])) == 1, both
    assert "pending = target after the last reading" in out.stdout


def test_a_run_that_lost_data_or_took_a_conflict_says_so_and_fails(capsys):
    from wattcast.runner import incomplete

    clean = {"models": {}, "missing": [], "conflicts": 0}
    assert not incomplete(clean) and capsys.readouterr().err == ""
    lossy = {**clean, "missing": ["h000: 2 of 4099 readings", "h000: 3 of 4098 lstm forecasts"], "conflicts": 1}
    assert incomplete(lossy)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("wattcast: error: ") for line in err), err
    assert "h000: 2 of 4099 readings; h000: 3 of 4098 lstm forecasts" in err[0]
    assert "1 conflicting" in err[1]
