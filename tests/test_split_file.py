"""The split file wattcast run hands its simulator: the same houses as the data file, or one clear error."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO

from simulator.streams import house_streams, streams_of
from wattcast.contract import READING_FIELDS
from wattcast.split_file import read_split, write_split


def test_the_houses_of_a_split_file_are_those_of_the_data(tmp_path, val):
    part = val.iloc[:300].copy()
    part.loc[5, "voltage"] = np.nan  # a missing measurement stays missing
    path = write_split(tmp_path / "split.npz", part["ts"].to_numpy(), part[list(READING_FIELDS)].to_numpy())
    ts, values = read_split(path)
    assert ts.dtype == np.int64 and values.dtype == np.float64
    theirs, ours = house_streams(part, 3, limit=250), streams_of(ts, values, 3, limit=250)
    assert [s.house for s in ours] == [s.house for s in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert len(a) == len(b) == 250
        for i in (0, 5, 99, 249):
            assert a.ts_at(i) == b.ts_at(i)
            assert np.array_equal(np.array(a.values_at(i), float), np.array(b.values_at(i), float), equal_nan=True)


@pytest.mark.parametrize(
    "content",
    [b"not a zip", None, "wrong shape"],
    ids=["garbage", "missing", "shape"],
)
def test_a_file_that_is_no_split_is_one_line_of_error(tmp_path, content):
    path = tmp_path / "split.npz"
    if content == "wrong shape":
        np.savez(path, ts=np.arange(3, dtype=np.int64), values=np.zeros((3, 2)))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="no split file of wattcast run"):
        read_split(path)
    r = subprocess.run(
        [sys.executable, "-m", "simulator", "--split-file", str(path), "--broker", "mqtt://127.0.0.1:9"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.strip().startswith("simulator: error: ") and "no split file" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
