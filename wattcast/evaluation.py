"""Offline evaluation: the validation split streamed through each forecaster.

The same forecaster code the predictor nodes run, reading by reading: after
reading ``i`` (from the ``min_readings``-th on) the forecast targets reading
``i + horizon - 1``; every window whose target lies inside the split counts
(4,093 on the default split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from wattcast.data import to_readings
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


def stream_forecasts(model: Model, val: pd.DataFrame, house: str = "h000") -> tuple[np.ndarray, np.ndarray]:
    """(forecasts, targets) of ``model`` over ``val`` replayed as a stream, batched like a node."""
    steps = model.horizon_s // 60
    readings = to_readings(val, house)
    forecaster = model.new_forecaster()
    queries, targets = [], []
    gap = val["global_active_power"].to_numpy(np.float64)
    for i, reading in enumerate(readings):
        forecaster.learn_one(reading)
        target = i + steps
        if target >= len(readings):
            break
        q = forecaster.query()
        if q is not None:
            queries.append(q)
            targets.append(gap[target])
    preds = np.concatenate([model.predict(queries[k : k + 1024]) for k in range(0, len(queries), 1024)]) \
        if queries else np.empty(0)
    return preds, np.asarray(targets)


def evaluate(model: Model, val: pd.DataFrame) -> Scores:
    preds, targets = stream_forecasts(model, val)
    return Scores.of(targets, preds)
