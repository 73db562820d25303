"""The validation split as ``wattcast run`` hands it to its simulator: two NumPy arrays in one ``.npz``.

A run reads and checks the meter data before anything starts; its simulator then replays
these arrays instead of reading the data file a second time (which costs it pandas and a
second parse: about half of its start-up CPU).  ``ts`` holds the readings' unix seconds
(int64), ``values`` the measurements in the reading contract's order (float64, NaN where
the meter lacks one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wattcast.contract import READING_FIELDS


def arrays_of(val: Any) -> tuple[np.ndarray, np.ndarray]:
    """(ts, values) of a split's data frame (``wattcast.data``): what a simulator replays."""
    return val["ts"].to_numpy(np.int64), val[list(READING_FIELDS)].to_numpy(np.float64)


def write_split(path: str | Path, ts: np.ndarray, values: np.ndarray) -> Path:
    path = Path(path)
    np.savez(path, ts=np.asarray(ts, np.int64), values=np.asarray(values, np.float64))
    return path


def read_split(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(ts, values) of a split file; ValueError in one line if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            ts, values = z["ts"], z["values"]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ValueError(f"{path} is no split file of wattcast run: {exc}") from None
    shape = (len(ts), len(READING_FIELDS))
    if ts.ndim != 1 or ts.dtype != np.int64 or values.shape != shape or values.dtype != np.float64 or not len(ts):
        raise ValueError(f"{path} is no split file of wattcast run: ts {ts.shape} {ts.dtype}, values {values.shape}")
    return ts, values
