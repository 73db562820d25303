"""The data pipeline: readers, cleaning, the notebook's split, extract_block.

The facts come from ../shared/reference/README.md (the course notebook on the
full UCI data set).  Tests on the full data set read it once per session and skip
when it is not there.
"""

from __future__ import annotations

import calendar
import gzip
import os
import zipfile
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import wattcast.data as data
from wattcast.contract import READING_FIELDS
from wattcast.data import DataError, extract_block, load_split, read_meter_file, sample_path, subset_bounds

# The full data set beside the checkout (../shared/data), as on the developers' machines and in CI.
FULL = Path(
    os.environ.get(
        "WATTCAST_FULL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "household_power_consumption.zip"
    )
)
FIXTURES = Path(__file__).parent / "fixtures"
# tests/fixtures/cleaned_head.csv: the first 60 rows of the shipped sample written the way the course's
# assignment 2 saves its cleaned frame (df.to_csv): index column, ISO Date, Time, the UCI columns as
# floats, Datetime, and a rolling-mean column that is empty for the first rows.
CLEANED_CSV = FIXTURES / "cleaned_head.csv"

BLOCK = ("2007-11-22 02:08:00", "2007-12-06 07:40:00")
TRAIN_WINDOW = ("2007-11-22 02:08:00", "2007-12-03 11:21:00")
VAL_WINDOW = ("2007-12-03 11:22:00", "2007-12-06 07:40:00")
COLUMNS = ["datetime", "ts", *READING_FIELDS]


def unix(text: str) -> int:
    """Unix seconds of a naive 'yyyy-mm-dd hh:mm:ss' read as UTC, computed without pandas."""
    return calendar.timegm(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timetuple())


def check_split_facts(split: data.Split) -> None:
    info = split.info
    assert (len(split.train), len(split.val)) == (16_393, 4_099)
    assert (info["train_rows"], info["val_rows"]) == (16_393, 4_099)
    assert tuple(info["block"]) == BLOCK
    assert tuple(info["train_window"]) == TRAIN_WINDOW
    assert tuple(info["val_window"]) == VAL_WINDOW
    assert list(split.train.columns) == COLUMNS == list(split.val.columns)
    assert split.val["ts"].iloc[0] == unix(VAL_WINDOW[0])
    assert split.train["ts"].iloc[-1] + 60 == split.val["ts"].iloc[0]
    # validation: every minute present
    assert (np.diff(split.val["ts"].to_numpy()) == 60).all()


def uci_lines(n: int) -> list[str]:
    """The header and first ``n`` data lines of the shipped sample (CRLF stripped)."""
    with gzip.open(sample_path(), "rt", newline="") as fh:
        return [next(fh).rstrip("\r\n") for _ in range(n + 1)]


def write_uci(path: Path, lines: list[str]) -> Path:
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


# ------------------------------------------------------------------ the shipped sample


@pytest.fixture(scope="module")
def sample_split() -> data.Split:
    return load_split()


def test_sample_split_facts(sample_split):
    check_split_facts(sample_split)
    info = sample_split.info
    assert info["source"] == "shipped sample"
    assert (info["fraction"], info["seed"]) == (1.0, 1234)
    assert info["rows_raw"] == info["rows_clean"] == 20_492
    assert info["start_index"] == 0


def test_ts_are_unix_seconds(sample_split):
    val = sample_split.val
    assert val["ts"].dtype == np.int64
    assert unix("2007-12-03 11:22:00") == 1196680920
    assert int(val["ts"].iloc[0]) == 1196680920
    expected = [calendar.timegm(t.timetuple()) for t in val["datetime"].dt.to_pydatetime()]
    assert val["ts"].tolist() == expected
    assert int(sample_split.train["ts"].iloc[0]) == unix(BLOCK[0])


def test_values_are_the_file_values(sample_split):
    first = uci_lines(1)[1].split(";")
    row = sample_split.train.iloc[0]
    assert row["datetime"] == pd.Timestamp(2007, 11, 22, 2, 8)
    assert [row[f] for f in READING_FIELDS] == [float(v) for v in first[2:]]


def test_other_seed_or_fraction_gives_another_block():
    a = load_split(fraction=0.5, seed=1234)
    b = load_split(fraction=0.5, seed=99)
    assert len(a.train) + len(a.val) == 10_246
    assert a.info["start_index"] != b.info["start_index"]
    assert a.info["block"] != b.info["block"]


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, 1.0000001])
def test_fraction_out_of_range(fraction):
    with pytest.raises(DataError, match="fraction"):
        load_split(fraction=fraction)


def test_fraction_too_small_to_split():
    with pytest.raises(DataError, match="too few"):
        load_split(fraction=0.0001)


def test_subset_bounds_is_the_notebooks_draw():
    # np.random.seed(1234); np.random.randint(0, rows - size), without touching the global RNG
    state = np.random.get_state()
    np.random.seed(1234)
    expected = np.random.randint(0, 2_049_280 - 20_492)
    np.random.set_state(state)
    before = np.random.get_state()[1].copy()
    assert subset_bounds(2_049_280, 0.01, 1234) == (expected, 20_492)
    assert (np.random.get_state()[1] == before).all()


# ----------------------------------------------------------------- readers and formats


def test_cleaned_csv_reads_like_the_uci_file():
    csv = read_meter_file(CLEANED_CSV)
    uci = read_meter_file(sample_path()).iloc[:60].reset_index(drop=True)
    assert len(csv) == 60
    assert csv.attrs["rows_raw"] == 60  # the empty rolling-mean cells do not drop rows
    pd.testing.assert_frame_equal(csv, uci, check_exact=True)


def test_cleaned_csv_drops_rows_with_missing_values(tmp_path):
    lines = CLEANED_CSV.read_text().splitlines()
    cells = lines[3].split(",")
    cells[5] = ""  # Voltage
    lines[3] = ",".join(cells)
    path = tmp_path / "clean.csv"
    path.write_text("\n".join(lines) + "\n")
    df = read_meter_file(path)
    assert len(df) == 59 and df.attrs["rows_raw"] == 60
    assert pd.Timestamp("2007-11-22 02:10:00") not in set(df["datetime"])


def test_uci_missing_values_are_dropped(tmp_path):
    lines = uci_lines(20)
    lines[5] = ";".join(lines[5].split(";")[:2] + ["?"] * 7)
    lines[9] = lines[9].replace(lines[9].split(";")[4], "?", 1)
    df = read_meter_file(write_uci(tmp_path / "h.txt", lines))
    assert len(df) == 18 and df.attrs["rows_raw"] == 20
    full = read_meter_file(write_uci(tmp_path / "all.txt", uci_lines(20)))
    pd.testing.assert_frame_equal(df, full.drop(index=[4, 8]).reset_index(drop=True))


@pytest.mark.parametrize("member", ["household_power_consumption.txt", "data/household_power_consumption.txt"])
def test_zip_reader(tmp_path, member):
    lines = uci_lines(100)
    plain = read_meter_file(write_uci(tmp_path / "plain.txt", lines))
    archive = tmp_path / "h.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, "\r\n".join(lines) + "\r\n")
    pd.testing.assert_frame_equal(read_meter_file(archive), plain)


def test_zip_reader_prefers_the_uci_member(tmp_path):
    lines = uci_lines(30)
    archive = tmp_path / "h.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a_readme.txt", "not data\n")
        zf.writestr("household_power_consumption.txt", "\r\n".join(lines) + "\r\n")
    assert len(read_meter_file(archive)) == 30


def test_zip_without_data_member(tmp_path):
    archive = tmp_path / "h.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("notes.md", "nothing here")
    with pytest.raises(DataError, match="no .txt or .csv"):
        read_meter_file(archive)


def test_gzip_reader(tmp_path):
    lines = uci_lines(100)
    plain = read_meter_file(write_uci(tmp_path / "plain.txt", lines))
    gz = tmp_path / "h.txt.gz"
    gz.write_bytes(gzip.compress(("\r\n".join(lines) + "\r\n").encode()))
    pd.testing.assert_frame_equal(read_meter_file(gz), plain)
    # gzip is detected by content, not by name
    renamed = tmp_path / "h.dat"
    renamed.write_bytes(gz.read_bytes())
    pd.testing.assert_frame_equal(read_meter_file(renamed), plain)


def test_lf_line_ends_and_bom(tmp_path):
    lines = uci_lines(10)
    crlf = read_meter_file(write_uci(tmp_path / "crlf.txt", lines))
    lf = tmp_path / "lf.txt"
    lf.write_bytes(("\ufeff" + "\n".join(lines) + "\n").encode())
    pd.testing.assert_frame_equal(read_meter_file(lf), crlf)


def test_comma_separated_uci_is_accepted(tmp_path):
    # The reader picks the separator from the header, so a ','-separated UCI file reads like the original.
    lines = uci_lines(20)
    semi = read_meter_file(write_uci(tmp_path / "semi.txt", lines))
    comma = read_meter_file(write_uci(tmp_path / "comma.txt", [ln.replace(";", ",") for ln in lines]))
    pd.testing.assert_frame_equal(comma, semi)


# ------------------------------------------------------------------------ extract_block


def synthetic_uci(path: Path, rows: int = 400, seed: int = 5) -> Path:
    """A small UCI-format file with a few '?' rows and irregular values."""
    rng = np.random.default_rng(seed)
    t0 = datetime(2008, 2, 27, 23, 50)
    lines = [data.UCI_HEADER]
    for i in range(rows):
        t = pd.Timestamp(t0) + pd.Timedelta(minutes=i)
        stamp = f"{t.day}/{t.month}/{t.year};{t:%H:%M:%S}"
        if i % 37 == 5:
            lines.append(stamp + ";?" * 7)
            continue
        gap, grp = rng.uniform(0.1, 6), rng.uniform(0, 0.5)
        volt, amp = rng.uniform(230, 250), rng.uniform(0.2, 26)
        s1, s2, s3 = rng.integers(0, 40, 3)
        lines.append(f"{stamp};{gap:.3f};{grp:.3f};{volt:.3f};{amp:.3f};{s1:.3f};{s2:.3f};{s3:.3f}")
    return write_uci(path, lines)


@pytest.mark.parametrize("out_name", ["block.txt", "block.txt.gz"])
def test_extract_block_round_trip(tmp_path, out_name):
    src = synthetic_uci(tmp_path / "src.txt")
    df = read_meter_file(src)
    assert df.attrs["rows_raw"] == 400 and len(df) == 400 - 11
    n = extract_block(src, tmp_path / out_name, fraction=0.25, seed=7)
    start, size = subset_bounds(len(df), 0.25, 7)
    assert n == size == 97
    block = read_meter_file(tmp_path / out_name)
    pd.testing.assert_frame_equal(block, df.iloc[start : start + size].reset_index(drop=True))
    # the block read with fraction 1.0 splits exactly like the source with the fraction
    a, b = load_split(src, 0.25, 7), load_split(tmp_path / out_name, 1.0)
    assert a.train.equals(b.train) and a.val.equals(b.val)
    raw = (tmp_path / out_name).read_bytes()
    text = (gzip.decompress(raw) if out_name.endswith(".gz") else raw).decode()
    assert text.startswith(data.UCI_HEADER + "\r\n") and text.endswith("\r\n") and "?" not in text


def test_extract_block_with_an_empty_field(tmp_path):
    lines = synthetic_uci(tmp_path / "src.txt").read_text().splitlines()
    lines[3] = lines[3].rsplit(";", 1)[0] + ";"  # empty Sub_metering_3: a missing value too
    src = write_uci(tmp_path / "src.txt", lines)
    extract_block(src, tmp_path / "block.txt", 0.5, 3)
    a, b = load_split(src, 0.5, 3), load_split(tmp_path / "block.txt", 1.0)
    assert a.train.equals(b.train) and a.val.equals(b.val)


def test_extract_block_is_reproducible(tmp_path):
    src = synthetic_uci(tmp_path / "src.txt")
    # (same file name: gzip stores it in its header; the mtime is fixed at 0)
    extract_block(src, tmp_path / "a" / "block.txt.gz", 0.5, 3)
    extract_block(src, tmp_path / "b" / "block.txt.gz", 0.5, 3)
    assert (tmp_path / "a" / "block.txt.gz").read_bytes() == (tmp_path / "b" / "block.txt.gz").read_bytes()


def test_extract_block_of_the_sample_is_the_sample(tmp_path):
    out = tmp_path / "again.txt.gz"
    assert extract_block(sample_path(), out, fraction=1.0) == 20_492
    assert gzip.decompress(out.read_bytes()) == gzip.decompress(sample_path().read_bytes())


def test_extract_block_refuses_csv(tmp_path):
    with pytest.raises(DataError, match="UCI text format"):
        extract_block(CLEANED_CSV, tmp_path / "x.txt", fraction=1.0)


# ------------------------------------------------------------------- the full data set


@pytest.fixture(scope="session")
def full() -> SimpleNamespace:
    """The full data set's default split, and its cleaned frame, reading the 133 MB file once."""
    if not FULL.is_file():
        pytest.skip(f"the full UCI data set is not at {FULL}")
    captured = {}
    real = data.read_meter_file

    def spy(path, own=None):
        captured["df"] = real(path, own)
        return captured["df"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "read_meter_file", spy)
        split = load_split(FULL)
    return SimpleNamespace(split=split, df=captured["df"])


@pytest.mark.slow
def test_full_data_set_counts(full):
    assert full.split.info["rows_raw"] == 2_075_259
    assert full.split.info["rows_clean"] == len(full.df) == 2_049_280
    assert full.split.info["fraction"] == 0.01 and full.split.info["seed"] == 1234
    df = full.df
    assert df["datetime"].iloc[0] == pd.Timestamp("2006-12-16 17:24:00")
    assert df["datetime"].iloc[-1] == pd.Timestamp("2010-11-26 21:02:00")
    assert df["ts"].is_monotonic_increasing
    assert not df[list(READING_FIELDS)].isna().any().any()


@pytest.mark.slow
def test_full_data_set_split_facts(full):
    check_split_facts(full.split)
    assert full.split.info["start_index"] == subset_bounds(2_049_280, 0.01, 1234)[0]


@pytest.mark.slow
def test_sample_is_the_full_data_sets_block(full, sample_split):
    assert full.split.train.equals(sample_split.train)
    assert full.split.val.equals(sample_split.val)


@pytest.mark.slow
def test_full_data_set_other_seed(full, monkeypatch):
    monkeypatch.setattr(data, "read_meter_file", lambda path, own=None: full.df)
    other = load_split(FULL, 0.01, seed=1)
    assert len(other.train) == 16_393 and len(other.val) == 4_099
    assert other.info["start_index"] != full.split.info["start_index"]
    assert other.info["block"] != full.split.info["block"]
    start = subset_bounds(len(full.df), 0.01, 1)[0]
    assert other.train["datetime"].iloc[0] == full.df["datetime"].iloc[start]


def test_dates_and_times_parsed_once_each_equal_parsing_every_row():
    date = pd.Series(["16/12/2006", "16/12/2006", "1/1/2007", "31/02/2007", "29/2/2008", "1/13/2007", "7/3/2010"])
    time = pd.Series(["17:24:00", "23:59:00", "00:00:00", "12:00:00", "25:00:00", "10:00:00", "9:05:07"])
    expected = pd.to_datetime(date + " " + time, format="%d/%m/%Y %H:%M:%S", errors="coerce")
    got = data._date_and_time(date, time)
    assert got.isna().tolist() == [False, False, False, True, True, True, False]
    assert got.dtype == expected.dtype
    pd.testing.assert_series_equal(got, expected)
