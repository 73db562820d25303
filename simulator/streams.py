"""The houses a simulator replays, made from the validation split without copying it.

House ``k`` of ``N`` replays the split rotated by ``k * len / N`` readings, so that the
houses differ; house ``h000`` is the split exactly as it is.  The other houses'
readings are re-stamped as consecutive minutes from the split's first minute, so
every house covers the same event-time window, like meters that run side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from wattcast.contract import house_ids
from wattcast.split_file import arrays_of

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class HouseStream:
    """One house's readings, made on demand from the split's arrays (shared by every house).

    House ``k`` reads row ``(i + offset) % rows`` for its ``i``-th reading; with ``restamp``
    its timestamps are consecutive minutes from the split's first one.  Nothing is copied
    per house: memory grows with the readings replayed, not with houses x split.
    """

    house: str
    ts: np.ndarray  # int64 unix seconds of the split (shared)
    values: np.ndarray  # (n, 7) float64, READING_FIELDS order (shared); NaN: a measurement the meter lacks
    offset: int = 0
    restamp: bool = False
    length: int | None = None  # readings of this house (default: len(ts))
    #: the columns the meter lacks (all NaN: left out of its readings); None: find out from ``values``
    absent: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.length is None:
            self.length = len(self.ts)
        if self.absent is None:
            self.absent = absent_columns(self.values)

    def __len__(self) -> int:
        return len(self.ts) if self.length is None else self.length

    def ts_at(self, i: int) -> int:
        if self.restamp:
            return int(self.ts[0]) + 60 * i
        return int(self.ts[(i + self.offset) % len(self.ts)])

    def values_at(self, i: int) -> list[float | None]:
        row: list[float | None] = self.values[(i + self.offset) % len(self.values)].tolist()
        for c in self.absent or ():
            row[c] = None
        return row


def absent_columns(values: np.ndarray) -> tuple[int, ...]:
    """The measurements (columns) a meter lacks: NaN in every row (a data file's unmapped fields)."""
    if not len(values):
        return ()
    return tuple(int(c) for c in np.flatnonzero(np.isnan(values).all(axis=0)))


def house_streams(val: pd.DataFrame, houses: int, limit: int | None = None) -> list[HouseStream]:
    """The houses of a validation split (a data frame of ``wattcast.data``)."""
    return streams_of(*arrays_of(val), houses, limit)


def streams_of(ts: np.ndarray, values: np.ndarray, houses: int, limit: int | None = None) -> list[HouseStream]:
    """The houses of a split's arrays: unix seconds, and measurements in READING_FIELDS order (n, 7)."""
    n = len(ts)
    length = n if limit is None else min(n, limit)
    absent = absent_columns(values)
    return [
        HouseStream(house, ts, values, (k * n) // houses, (k * n) // houses != 0, length, absent)
        for k, house in enumerate(house_ids(houses))
    ]


def pacing_streams(streams: list[HouseStream]) -> list[HouseStream]:
    """The houses whose forecasts pace a max-speed replay: for every minute, the one published last.

    Minute by minute the simulator publishes one reading per house, in list order, and
    a predictor handles readings in the order they arrive: once it has forecast minute
    ``i`` of the house published last in that minute, it has handled minute ``i`` of
    every house.  Following those forecasts instead of all of them keeps the
    simulator's intake at models x minutes instead of models x readings (50 houses x
    1 day: 5,760 messages instead of 288,000).  With streams of equal length (as
    :func:`house_streams` makes them) that is just the last house.
    """
    pacing, longest = [], 0
    for s in reversed(streams):
        if len(s) > longest:
            pacing.append(s)
            longest = len(s)
    return pacing
