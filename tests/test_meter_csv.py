"""Your own meter's CSV (issue 14, part 2): named columns, kW or W, resampled to one reading a minute."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import REPO

from wattcast.bus import MemoryHub, Message
from wattcast.contract import MODELS, READING_FIELDS, Reading, decode
from wattcast.data import DataError, load_split, read_meter_file, sample_path
from wattcast.evaluation import evaluate
from wattcast.forecasters import load_model
from wattcast.meter_csv import ColumnError, ColumnMap

EXAMPLE = REPO / "wattcast" / "sample" / "example_meter.csv"
#: the sample's columns under other names, in another order (a meter's export)
RENAMED = {
    "voltage": "U_V",
    "global_intensity": "I_A",
    "global_active_power": "P_W",
    "global_reactive_power": "Q_var",
    "sub_metering_1": "kitchen_Wh",
    "sub_metering_2": "laundry_Wh",
    "sub_metering_3": "heater_Wh",
}
ALL_MAPPED = ColumnMap("when", "P_W", "W", tuple((f, c) for f, c in RENAMED.items() if f != "global_active_power"))


@pytest.fixture(scope="module")
def sample():
    return read_meter_file(sample_path())


def export(df: pd.DataFrame, path, time_format: str = "%Y-%m-%dT%H:%M:%S", sep: str = ",") -> None:
    """``df`` as a meter would export it: other names, power in whole watts, the time first."""
    out = pd.DataFrame({"when": df["datetime"].dt.strftime(time_format)})
    for f, column in RENAMED.items():
        values = df[f]
        if f in ("global_active_power", "global_reactive_power"):  # kW with 3 decimals: whole watts
            out[column] = (values * 1000).round().astype(np.int64)
        else:
            out[column] = values
    out.to_csv(path, index=False, sep=sep)


def write(tmp_path, text: str, name: str = "meter.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------ the sample, exported


def test_the_sample_exported_with_other_names_in_watts_scores_exactly_like_the_sample(sample, tmp_path):
    path = tmp_path / "export.csv"
    export(sample, path, sep=";")
    own = load_split(path, columns=ALL_MAPPED)
    shipped = load_split()
    assert own.info["val_window"] == shipped.info["val_window"]
    for f in READING_FIELDS:  # read back to the very same doubles
        assert np.array_equal(own.val[f].to_numpy(), shipped.val[f].to_numpy()), f
    assert np.array_equal(own.val["ts"].to_numpy(), shipped.val["ts"].to_numpy())
    for name in MODELS:
        model = load_model(name)
        assert evaluate(model, own.val) == evaluate(model, shipped.val), name


def test_a_csv_with_only_power_runs_the_models_that_need_nothing_else(sample, tmp_path):
    path = tmp_path / "power.csv"
    export(sample, path)
    split = load_split(path, columns=ColumnMap("when", "P_W", "W"))
    assert split.info["absent"] == list(READING_FIELDS[1:])
    shipped = load_split()
    for name in ("persistence", "linear", "lstm"):
        assert evaluate(load_model(name), split.val) == evaluate(load_model(name), shipped.val), name
    with pytest.raises(ValueError, match="lstm-augmented needs voltage, global_intensity, which the data does not have"):
        evaluate(load_model("lstm-augmented"), split.val)


# ------------------------------------------------------------ times and minutes


def test_times_iso_with_offsets_unix_seconds_milliseconds_and_a_format(tmp_path):
    iso = write(tmp_path, "t,p\n2024-03-31T01:58:00+01:00,1\n2024-03-31T01:59:00+01:00,2\n2024-03-31T03:00:00+02:00,3\n")
    df = read_meter_file(iso, ColumnMap("t", "p"))
    # offsets are converted to UTC: the clock change in the night leaves no hole
    assert df["ts"].tolist() == [1711846680, 1711846740, 1711846800]
    unix = write(tmp_path, "t,p\n1711846680,1\n1711846740,2\n", "unix.csv")
    assert read_meter_file(unix, ColumnMap("t", "p"))["ts"].tolist() == [1711846680, 1711846740]
    ms = write(tmp_path, "t,p\n1711846680000,1\n1711846740500,2\n", "ms.csv")
    assert read_meter_file(ms, ColumnMap("t", "p"))["ts"].tolist() == [1711846680, 1711846740]
    fmt = write(tmp_path, "t;p\n31.03.2024 00:58;1\n31.03.2024 00:59;2\n", "fmt.csv")
    assert read_meter_file(fmt, ColumnMap("t", "p", time_format="%d.%m.%Y %H:%M"))["ts"].tolist() == [
        1711846680,
        1711846740,
    ]


def test_sub_minute_readings_are_averaged_and_out_of_order_rows_sorted_with_counts(tmp_path):
    # a meter every 20 s, one row out of order, one without a value
    text = "time,watts\n"
    text += "2024-01-01 00:00:00,1000\n2024-01-01 00:00:40,3000\n2024-01-01 00:00:20,2000\n"
    text += "2024-01-01 00:01:00,500\n2024-01-01 00:01:20,\n2024-01-01 00:01:40,700\n"
    text += "2024-01-01 00:02:10,100\n"
    df = read_meter_file(write(tmp_path, text), ColumnMap("time", "watts", "W"))
    assert df["global_active_power"].tolist() == [2.0, 0.6, 0.1]
    assert df["ts"].diff().dropna().tolist() == [60, 60]
    counts = df.attrs["resampling"]
    assert counts["rows_averaged"] == 5 and counts["minutes_averaged"] == 2
    assert counts["rows_dropped_missing"] == 1 and counts["off_the_minute"] == 4
    assert df.attrs["out_of_order"] == 1
    assert df["voltage"].isna().all()


def test_gaps_are_left_or_filled_up_to_fill_gaps_minutes_and_counted(tmp_path):
    minutes = [0, 1, 2, 5, 6, 20, 21]  # a gap of 2 minutes and one of 13
    text = "t,p,v\n" + "".join(f"2024-01-01 00:{m:02d}:00,{m},{230 + m}\n" for m in minutes)
    path = write(tmp_path, text)
    left = read_meter_file(path, ColumnMap("t", "p", fields=(("voltage", "v"),)))
    assert (left["ts"] // 60 % 60).tolist() == minutes
    expected = {"gaps": 2, "gap_minutes": 15, "longest_gap": 13, "gaps_filled": 0}
    assert {k: left.attrs["resampling"][k] for k in expected} == expected
    filled = read_meter_file(path, ColumnMap("t", "p", fields=(("voltage", "v"),), fill_gaps=2))
    assert (filled["ts"] // 60 % 60).tolist() == [0, 1, 2, 3, 4, 5, 6, 20, 21]
    assert filled["global_active_power"].tolist()[2:6] == [2.0, 3.0, 4.0, 5.0]  # linear between 2 and 5
    assert filled["voltage"].tolist()[3] == 233.0
    assert filled["sub_metering_1"].isna().all()  # an absent measurement stays absent
    assert filled.attrs["resampling"]["gaps_filled"] == 1 and filled.attrs["resampling"]["minutes_filled"] == 2


def test_a_quarter_hour_meter_is_told_how_to_fill(tmp_path):
    from wattcast.data import data_notes

    text = "t,p\n" + "".join(f"2024-01-01 {m // 60:02d}:{m % 60:02d}:00,{m}\n" for m in range(0, 600, 15))
    split = load_split(write(tmp_path, text), columns=ColumnMap("t", "p"))
    notes = "\n".join(data_notes(split.info))
    assert "the meter reports every 15 minutes: --fill-gaps 14" in notes
    filled = read_meter_file(tmp_path / "meter.csv", ColumnMap("t", "p", fill_gaps=14))
    assert len(filled) == 586 and filled["ts"].diff().dropna().eq(60).all()


# ------------------------------------------------------------ one clear line


def wattcast(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wattcast", *args], capture_output=True, text=True, timeout=120, cwd=cwd or REPO
    )


@pytest.mark.parametrize(
    ("text", "flags", "expected"),
    [
        ("t,p\n2024-01-01 00:00,1\n", ["--time-col", "t", "--value-col", "power"], "line 1: no column 'power'"),
        ("t,p\n2024-01-01 00:00,1\nyesterday,2\n", ["--time-col", "t", "--value-col", "p"], "line 3: 'yesterday' is not"),
        (
            "t,p\n2024-01-01 00:00,1\n\n2024-01-01 00:02,x\n",
            ["--time-col", "t", "--value-col", "p"],
            "line 4: p is not a number",
        ),
        (
            "t,p\n2024-01-01 00:00,1\n2024-01-01 00:01,2e9\n",
            ["--time-col", "t", "--value-col", "p"],
            "line 3: p out of range",
        ),
        ("t,p\n2024-01-01 00:00,1\n", ["--time-col", "t", "--value-col", "p", "--field", "volts=p"], "no such measurement"),
        ("t,p\n2024-01-01 00:00,1\n", ["--value-col", "p"], "give both --time-col and --value-col"),
        ("a;b\n1;2\n", [], "your own meter's CSV? name its columns with --time-col and --value-col"),
    ],
)
def test_bad_input_is_one_line_naming_the_file_and_line(tmp_path, text, flags, expected):
    path = write(tmp_path, text)
    r = wattcast("data", "info", "--data", str(path), *flags)
    assert r.returncode in (1, 2) and r.stdout == "", r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wattcast: error:") and expected in lines[0], r.stderr
    if r.returncode == 1:  # bad data (2: flags that do not fit together)
        assert str(path) in lines[0]


def test_column_maps_are_checked_before_any_file_is_read():
    with pytest.raises(ColumnError, match="mapped twice"):
        ColumnMap("t", "p", fields=(("Voltage", "a"), ("voltage", "b")))
    with pytest.raises(ColumnError, match="FIELD=COLUMN"):
        ColumnMap.parse_field("voltage")
    argv = ColumnMap("t", "p", "W", (("voltage", "V"),), "%H", 3).argv()
    assert " ".join(argv) == "--time-col t --value-col p --unit W --field voltage=V --time-format %H --fill-gaps 3"


def test_the_example_file_reads_with_the_readme_command(tmp_path):
    r = wattcast(
        "evaluate", "--data", str(EXAMPLE), "--time-col", "timestamp", "--value-col", "power_W", "--unit", "W",
        "--field", "voltage=voltage_V", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert set(result["models"]) == {"lstm", "linear", "persistence"}
    assert "lstm-augmented needs global_intensity" in r.stderr
    assert "1 row(s) without a time or a value: dropped" in r.stderr
    with pytest.raises(DataError, match="line 1: no column 'power'"):
        load_split(EXAMPLE, columns=ColumnMap("timestamp", "power"))


# ------------------------------------------------------------ live: predictor and pipeline


def test_a_predictor_counts_readings_that_lack_what_its_model_needs_and_forecasts_nothing_for_them(caplog):
    from predictor.node import PredictorNode

    nodes = {name: PredictorNode(MemoryHub().connect(), load_model(name)) for name in ("lstm-augmented", "persistence")}
    readings = [Reading("h000", i, 1709301900 + 60 * i, 1.0 + i, voltage=None) for i in range(5)]
    with caplog.at_level("WARNING"):
        for node in nodes.values():
            node.handle([Message(r.topic, r.to_json()) for r in readings])
    sent = {name: [decode(m.topic, m.payload) for m in node.bus.published] for name, node in nodes.items()}
    assert sent["lstm-augmented"] == []
    assert [f.seq for f in sent["persistence"]] == [1, 2, 3, 4]  # from the second reading, as in the course
    assert nodes["lstm-augmented"].stats.counters["lacking"] == 5
    assert nodes["lstm-augmented"].stats.counters["malformed"] == 0
    said = [r.message for r in caplog.records if "lack" in r.message]
    assert len(said) == 1 and "voltage, global_intensity, which lstm-augmented needs" in said[0]


@pytest.mark.integration
def test_a_run_on_your_own_csv_over_mosquitto_scores_like_evaluate_on_it(sample, tmp_path):
    """The live pipeline (private mosquitto with the repo's config) on a CSV of power and voltage only."""
    from wattcast.broker import available_kind

    if available_kind("mosquitto") is None:
        pytest.skip("needs the mosquitto binary (apt-get install mosquitto)")
    path = tmp_path / "meter.csv"
    export(sample.iloc[-1500:], path)  # 300 readings to replay
    flags = ["--time-col", "when", "--value-col", "P_W", "--unit", "W", "--field", "voltage=U_V"]
    r = subprocess.run(
        [sys.executable, "-m", "wattcast", "run", "--data", str(path), *flags, "--store", str(tmp_path / "run.db"),
         "--json", "--quiet", "--broker-kind", "mosquitto"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert set(result["models"]) == {"lstm", "linear", "persistence"}
    split = load_split(path, columns=ColumnMap("when", "P_W", "W", (("voltage", "U_V"),)))
    for name, got in result["models"].items():
        offline = evaluate(load_model(name), split.val)
        assert got["n"] == offline.n and got["mse"] == pytest.approx(offline.mse, rel=1e-6), name
    import sqlite3

    with sqlite3.connect(tmp_path / "run.db") as db:
        stored = db.execute("SELECT count(*), count(voltage), count(global_intensity) FROM readings").fetchone()
    assert stored == (300, 300, 0)  # what the meter does not measure is not made up
