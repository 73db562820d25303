"""One scoring rule, event time, offline and live, on any window.

The forecast issued after the reading at ``ts`` is scored against the reading at
``ts + 300 s``.  Offline ``evaluate`` used to pair it with the reading 5 *rows*
later, which is another minute across a gap; the collector pairs by time.  The
reader puts rows in time order and drops repeated timestamps (first kept), so both
see the same stream.  Parity is checked end to end (``wattcast run`` against a real
mosquitto) on a file with gaps, duplicate and swapped rows, and (slow) on the
full data set's seed-43 window, which has 4 minutes missing.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wattcast.broker import available_kind
from wattcast.contract import MODELS
from wattcast.data import data_notes, extract_block, load_split, read_meter_file, sample_path
from wattcast.evaluation import stream_forecasts, target_index
from wattcast.forecasters import load_model

FULL = Path(
    os.environ.get(
        "WATTCAST_FULL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "household_power_consumption.zip"
    )
)


def _sample_lines(n: int) -> tuple[str, list[str]]:
    with gzip.open(sample_path(), "rt", newline="") as fh:
        header = next(fh).rstrip("\r\n")
        return header, [next(fh).rstrip("\r\n") for _ in range(n)]


def messy_file(path: Path, rows: int = 1500) -> dict[str, int]:
    """The sample's first ``rows`` rows with gaps, repeated timestamps and swapped rows, all in the
    validation part (the last 20 %) and in the training part."""
    header, lines = _sample_lines(rows)
    out = list(lines)
    # gaps: 4 minutes, 1 minute, 7 minutes (validation part), 3 minutes (training part)
    gone = set(range(1300, 1304)) | {1350} | set(range(1400, 1407)) | set(range(200, 203))
    out = [ln for k, ln in enumerate(lines) if k not in gone]

    # a repeated timestamp with another value (a meter re-sending), and an exact repeat
    def twin(line: str) -> str:
        cells = line.split(";")
        cells[2] = f"{float(cells[2]) + 1.5:.3f}"
        return ";".join(cells)

    i = out.index(lines[1320])
    out.insert(i + 1, twin(lines[1320]))
    j = out.index(lines[1450])
    out.insert(j + 1, lines[1450])
    k = out.index(lines[100])
    out.insert(k + 1, twin(lines[100]))
    # swapped neighbours (a row older than the one before it)
    for a in (1330, 1460, 50):
        p = out.index(lines[a])
        out[p], out[p + 1] = out[p + 1], out[p]
    path.write_text(header + "\r\n" + "\r\n".join(out) + "\r\n", newline="")
    return {"rows": len(out), "duplicates": 3, "swapped": 3, "missing": len(gone)}


def test_target_index_pairs_by_time_not_by_row():
    ts = np.array([0, 60, 120, 180, 240, 300, 360, 600, 660, 900], np.int64)
    assert target_index(ts, 300).tolist() == [5, 6, -1, -1, -1, 7, 8, 9, -1, -1]
    assert target_index(np.zeros(0, np.int64), 300).tolist() == []


def test_the_reader_sorts_swapped_rows_and_keeps_the_first_of_a_repeated_timestamp(tmp_path):
    header, lines = _sample_lines(6)
    first = lines[2].split(";")
    repeat = ";".join([*first[:2], "9.999", *first[3:]])
    path = tmp_path / "m.txt"
    path.write_text("\r\n".join([header, lines[0], lines[2], lines[1], repeat, lines[3]]) + "\r\n", newline="")
    df = read_meter_file(path)
    assert df["ts"].tolist() == sorted(df["ts"].tolist()) and df["ts"].is_unique
    assert len(df) == 4
    assert df.attrs["out_of_order"] == 1 and df.attrs["duplicates_dropped"] == 1
    assert 9.999 not in df["global_active_power"].tolist()  # the first of the two rows stays
    assert data_notes({"out_of_order": 1, "duplicates_dropped": 1}) == [
        "1 row(s) older than a row before them: put in time order",
        "1 row(s) with the timestamp of an earlier row: dropped (first kept)",
    ]
    assert data_notes(load_split().info) == []  # the shipped sample is clean


def test_extract_of_a_messy_file_reads_back_to_the_same_rows(tmp_path):
    src = tmp_path / "messy.txt"
    messy_file(src)
    extract_block(src, tmp_path / "block.txt", fraction=0.5, seed=3)
    a = load_split(src, 0.5, 3)
    b = load_split(tmp_path / "block.txt", 1.0)
    assert a.val["ts"].tolist() == b.val["ts"].tolist()
    assert np.allclose(a.val["global_active_power"], b.val["global_active_power"])


def test_offline_skips_exactly_the_forecasts_whose_target_minute_is_missing(tmp_path):
    path = tmp_path / "messy.txt"
    messy_file(path)
    val = load_split(path, 1.0).val
    ts = val["ts"].to_numpy()
    preds, targets = stream_forecasts(load_model("persistence"), val)
    # a forecast after every reading (from the 2nd on) whose ts + 300 is a reading of the split
    expected = [i for i in range(1, len(ts)) if (ts[i] + 300) in set(ts.tolist())]
    assert len(targets) == len(expected) < len(ts) - 6  # the gaps cost forecasts
    gap = val["global_active_power"].to_numpy()
    assert np.allclose(targets, [gap[np.searchsorted(ts, ts[i] + 300)] for i in expected])
    assert np.allclose(preds, [gap[i] for i in expected])  # persistence: the newest reading


def _live_against_offline(
    data: Path, tmp_path: Path, fraction: float | None = 1.0, seed: int | None = None, models=MODELS
) -> dict:
    if available_kind("mosquitto") is None:
        pytest.skip("needs mosquitto (apt-get install mosquitto)")
    cmd = [
        sys.executable,
        "-m",
        "wattcast",
        "run",
        "--data",
        str(data),
        "--store",
        str(tmp_path / "r" / "w.db"),
        "--json",
        "--quiet",
        "--models",
        *models,
    ]
    if fraction is not None:
        cmd += ["--fraction", str(fraction)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    split = load_split(data, fraction, seed if seed is not None else 1234)
    for name in models:
        preds, targets = stream_forecasts(load_model(name), split.val)
        got = result["models"][name]
        assert got["n"] == len(targets), (name, got, len(targets))
        mse = float(np.mean((preds - targets) ** 2))
        assert math.isclose(got["mse"], mse, rel_tol=1e-6), (name, got["mse"], mse)
    # every reading published once, no QoS "duplicates" from repeated timestamps
    assert result["published"] == len(split.val)
    assert result["nodes"]["collector"].get("duplicates", 0) == 0, result["nodes"]["collector"]
    return {"result": result, "split": split, "stderr": out.stderr}


@pytest.mark.integration
def test_live_equals_offline_on_a_file_with_gaps_duplicates_and_swapped_rows(tmp_path):
    path = tmp_path / "messy.txt"
    facts = messy_file(path)
    got = _live_against_offline(path, tmp_path)
    info = got["split"].info
    assert info["duplicates_dropped"] == facts["duplicates"] and info["out_of_order"] == facts["swapped"]
    # the unscored forecasts are the ones whose target fell into a gap (unmatched) or after the end (pending)
    for name in MODELS:
        r = got["result"]["models"][name]
        assert r["pending"] == 5 and r["unmatched"] > 0, (name, r)


@pytest.mark.slow
@pytest.mark.integration
def test_live_equals_offline_on_the_full_data_sets_seed_43_window_with_its_gap(tmp_path):
    if not FULL.is_file():
        pytest.skip(f"the full UCI data set is not at {FULL}")
    block = tmp_path / "seed43.txt.gz"
    extract_block(FULL, block, 0.01, 43)  # the same split, cheaper to read twice
    val = load_split(block, 1.0).val
    ts = val["ts"].to_numpy()
    assert (np.diff(ts) > 60).sum() >= 1  # the window has a gap (4 minutes at validation row 874)
    _live_against_offline(block, tmp_path)


def test_evaluate_says_what_the_reader_changed(tmp_path):
    path = tmp_path / "messy.txt"
    messy_file(path)
    out = subprocess.run(
        [sys.executable, "-m", "wattcast", "evaluate", "--data", str(path), "--fraction", "1", "--models", "persistence"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        "wattcast: data: 3 row(s) older than a row before them: put in time order",
        "wattcast: data: 3 row(s) with the timestamp of an earlier row: dropped (first kept)",
    ], out.stderr
