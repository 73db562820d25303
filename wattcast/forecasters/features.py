"""Features of every reading from all seven measurements, built incrementally per house.

One :class:`Featurizer` per house takes the readings as they come (gaps and all, as
the other forecasters do) and keeps the last hour of them in a ring of fixed size, so
a reading costs the same whatever came before (O(1)).  Training streams the training
split through the very same code, so the features a model is trained on and the ones
it sees live are the same numbers (``tests/test_gbm.py`` checks them against pandas).

Before an hour of readings has come, the ring is padded with the first reading.
"""

from __future__ import annotations

import math

import numpy as np

from wattcast.contract import READING_FIELDS

HISTORY = 60  # readings kept: the longest window
LAGS = 30  # global active power of the newest 30 readings
WINDOWS = (5, 15, 30, 60)
#: a sub-meter above this (Wh in a minute) is "on"
ON_WH = 2.0
#: a run of on or off readings is counted up to a day
MAX_RUN = 1440
GAP, REACTIVE, VOLTAGE, INTENSITY, SUB1, SUB2, SUB3 = range(7)
SUBS = (SUB1, SUB2, SUB3)


def feature_names() -> list[str]:
    names = [f"gap_lag{k}" for k in range(LAGS)]
    for w in WINDOWS:
        names += [f"gap_mean{w}", f"gap_std{w}", f"gap_min{w}", f"gap_max{w}"]
    names += ["gap_diff1", "gap_diff5"]
    for k in (1, 2, 3):
        names += [f"sub{k}", f"sub{k}_lag1", f"sub{k}_lag2", f"sub{k}_mean5", f"sub{k}_mean60", f"sub{k}_run"]
    names += ["reactive", "voltage", "intensity", "unmetered", "unmetered_mean5"]
    names += ["hour_sin", "hour_cos", "minute_of_day", "weekday", "weekend"]
    return names


FEATURES = feature_names()


class Featurizer:
    """One house's last hour of readings and the sub-meters' on/off runs; :meth:`features` of the newest."""

    def __init__(self) -> None:
        self.ring = np.zeros((HISTORY, len(READING_FIELDS)))
        self.head = 0  # where the next reading goes
        self.count = 0
        self.ts = 0
        #: per sub-meter: readings in its current state, positive on, negative off
        self.runs = np.zeros(3)

    def push(self, ts: int, values: np.ndarray) -> None:
        """Take the next reading (``values`` in :data:`READING_FIELDS` order)."""
        if self.count == 0:
            self.ring[:] = values  # padding: the first reading, as if it had always been so
        self.ring[self.head] = values
        self.head = (self.head + 1) % HISTORY
        self.count += 1
        self.ts = int(ts)
        on = values[list(SUBS)] > ON_WH
        same = (self.runs > 0) == on
        runs = np.where(same & (self.runs != 0), np.abs(self.runs) + 1, 1.0)
        self.runs = np.where(on, 1.0, -1.0) * np.minimum(runs, MAX_RUN)

    def history(self) -> np.ndarray:
        """The last hour, oldest first (HISTORY x 7)."""
        return np.roll(self.ring, -self.head, axis=0)

    def features(self) -> np.ndarray:
        """The features of the newest reading (float64, :data:`FEATURES` order)."""
        h = self.history()
        gap = h[:, GAP]
        out = [gap[::-1][:LAGS]]
        stats = []
        for w in WINDOWS:
            g = gap[-w:]
            stats += [g.mean(), g.std(), g.min(), g.max()]
        stats += [gap[-1] - gap[-2], gap[-1] - gap[-6]]
        for k, col in enumerate(SUBS):
            s = h[:, col]
            stats += [s[-1], s[-2], s[-3], s[-5:].mean(), s.mean(), self.runs[k]]
        unmetered = gap * (1000.0 / 60.0) - h[:, SUB1] - h[:, SUB2] - h[:, SUB3]
        stats += [h[-1, REACTIVE], h[-1, VOLTAGE], h[-1, INTENSITY], unmetered[-1], unmetered[-5:].mean()]
        minute = (self.ts // 60) % 1440
        angle = 2.0 * math.pi * minute / 1440.0
        weekday = (self.ts // 86400 + 3) % 7  # 1970-01-01 was a Thursday: Monday is 0
        stats += [math.sin(angle), math.cos(angle), float(minute), float(weekday), float(weekday >= 5)]
        out.append(np.asarray(stats))
        return np.concatenate(out)


def stream_features(ts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The features of every row of a stream (rows x :data:`FEATURES`), as a live house would compute them."""
    f = Featurizer()
    out = np.empty((len(ts), len(FEATURES)))
    for i in range(len(ts)):
        f.push(int(ts[i]), values[i])
        out[i] = f.features()
    return out
