"""Offline evaluation: the validation split streamed through each forecaster.

The same forecaster code the predictor nodes run, reading by reading, and the
same scoring rule as the collector (event time, :func:`target_index`): the forecast
issued after the reading at ``ts`` targets ``ts + horizon_s`` (300 s) and is scored
against the reading stamped exactly then.  A forecast whose target minute has no
reading (a gap in the data) or lies after the last reading is not scored; the
forecaster itself sees the readings as they come, gaps and all.  On a split
without gaps that is every window whose target lies inside it (4,093 on the
default split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from wattcast.data import lacking_note, to_readings
from wattcast.forecasters import Model


@dataclass
class Scores:
    n: int
    mse: float
    rmse: float
    mae: float

    @classmethod
    def of(cls, y_true: np.ndarray, y_pred: np.ndarray) -> Scores:
        err = np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)
        mse = float(np.mean(err**2)) if err.size else math.nan
        return cls(int(err.size), mse, math.sqrt(mse), float(np.mean(np.abs(err))) if err.size else math.nan)

    def to_dict(self) -> dict:
        return {"n": self.n, "mse": self.mse, "rmse": self.rmse, "mae": self.mae}


def target_index(ts: np.ndarray, horizon_s: int) -> np.ndarray:
    """For each reading, the index of the reading at ``ts + horizon_s``, or -1 if there is none.

    The one pairing rule of wattcast: :class:`wattcast.scoring.Scoreboard` does the
    same live (a forecast's ``target_ts`` is its reading's ``ts + horizon_s``).
    """
    ts = np.asarray(ts, np.int64)
    target = ts + horizon_s
    j = np.searchsorted(ts, target)
    hit = (j < len(ts)) & (ts[np.minimum(j, len(ts) - 1)] == target) if len(ts) else np.zeros(0, bool)
    return np.where(hit, j, -1)


def stream_forecasts(model: Model, val: pd.DataFrame, house: str = "h000") -> tuple[np.ndarray, np.ndarray]:
    """(forecasts, targets) of ``model`` over ``val`` replayed as a stream, batched like a node.

    ``val`` must be in time order with unique timestamps (what :func:`wattcast.data.read_meter_file` returns).
    """
    lacking = [f for f in model.needs if val[f].isna().any()]
    if lacking:
        raise ValueError(lacking_note(model.name, lacking))
    readings = to_readings(val, house)
    targets_at = target_index(val["ts"].to_numpy(np.int64), model.horizon_s)
    forecaster = model.new_forecaster()
    queries, targets = [], []
    gap = val["global_active_power"].to_numpy(np.float64)
    for reading, j in zip(readings, targets_at.tolist(), strict=True):
        forecaster.learn_one(reading)
        if j < 0:
            continue  # its target minute has no reading: not scored (unmatched or pending live)
        q = forecaster.query()
        if q is not None:
            queries.append(q)
            targets.append(gap[j])
    preds = (
        np.concatenate([model.predict(queries[k : k + 1024]) for k in range(0, len(queries), 1024)])
        if queries
        else np.empty(0)
    )
    return preds, np.asarray(targets)


def evaluate(model: Model, val: pd.DataFrame) -> Scores:
    preds, targets = stream_forecasts(model, val)
    return Scores.of(targets, preds)
