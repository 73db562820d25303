"""Train the gradient-boosting models (LightGBM) and write their artifacts.

* ``gbm``: trained on the split's training rows (the window's own 80 %), like the LSTMs.
* ``gbm-history``: trained on the ``history`` readings before the validation start (200,000 by
  default: what a meter installed months ago has seen), never touching the validation split.
  It needs a data file longer than the split (the full UCI data set).

The training rows are streamed through :class:`wattcast.forecasters.features.Featurizer`,
the code the predictor runs live; the target is the change of GAP from a reading to the
reading stamped 5 minutes later (the event-time rule of :func:`wattcast.evaluation.target_index`).
Artifact ``models/<name>/``: ``model.txt`` (LightGBM) and ``metadata.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wattcast.artifacts import stamp, versions, window, write_with_validation
from wattcast.contract import HORIZON_S, READING_FIELDS
from wattcast.data import Split
from wattcast.evaluation import target_index
from wattcast.forecasters.features import FEATURES, stream_features

#: tuned on seed 1234 only (the course's window); the backtest's other windows judge it
PARAMS: dict[str, Any] = {
    "objective": "regression",
    "num_leaves": 15,
    "learning_rate": 0.05,
    "min_data_in_leaf": 100,
    "seed": 1234,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "verbose": -1,
}
ROUNDS = 150
HISTORY_ROWS = 200_000
GBM_MODELS = ("gbm", "gbm-history")


def training_rows(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(features, 5-minute change of GAP) of every row of ``frame`` whose target minute it holds."""
    ts = frame["ts"].to_numpy(np.int64)
    values = frame[list(READING_FIELDS)].to_numpy(np.float64)
    x = stream_features(ts, values)
    j = target_index(ts, HORIZON_S)
    has = j >= 0
    gap = values[:, 0]
    return x[has], gap[j[has]] - gap[has]


def fit(frame: pd.DataFrame) -> tuple[Any, int]:
    """A LightGBM booster trained on the readings of ``frame`` (:data:`PARAMS`, :data:`ROUNDS`), and its row count."""
    from wattcast.forecasters.gbm import import_lightgbm

    lightgbm = import_lightgbm()
    x, y = training_rows(frame)
    return lightgbm.train(PARAMS, lightgbm.Dataset(x, y, feature_name=FEATURES), num_boost_round=ROUNDS), len(x)


def history_frame(full: pd.DataFrame, split: Split, rows: int = HISTORY_ROWS) -> pd.DataFrame:
    """The ``rows`` readings of ``full`` before the split's validation start (ValueError if there are too few)."""
    val_start = int(split.val["ts"].iloc[0])
    before = full[full["ts"] < val_start]
    if len(before) < rows:
        raise ValueError(
            f"gbm-history trains on the {rows:,} readings before the validation start; the data has {len(before):,} "
            "(train it on the full data set: --data household_power_consumption.zip)"
        )
    return before.iloc[-rows:].reset_index(drop=True)


def train_gbm(
    name: str,
    split: Split,
    out_dir: Path,
    train_frame: pd.DataFrame | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fit ``name`` on ``train_frame`` (default: the split's training rows), write its artifact, return the metadata."""
    from wattcast.forecasters.gbm import GbmModel, import_lightgbm

    lightgbm = import_lightgbm()

    frame = split.train if train_frame is None else train_frame
    started = time.process_time()
    booster, rows = fit(frame)
    cpu_s = time.process_time() - started
    target = out_dir / name
    target.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(target / "model.txt"))
    meta: dict[str, Any] = {
        "name": name,
        **stamp(name, target / "model.txt"),
        "target": "global_active_power change over the horizon (forecast = newest GAP + predicted change)",
        "horizon_s": HORIZON_S,
        "features": FEATURES,
        "parameters": int(sum(t["num_leaves"] * 2 - 1 for t in booster.dump_model()["tree_info"])),
        "training": {
            "params": PARAMS,
            "rounds": ROUNDS,
            "rows": rows,
            "trained_on": "the split's training rows"
            if train_frame is None
            else f"{len(frame):,} readings before validation",
            "window": window(frame),
            "cpu_seconds": round(cpu_s, 1),
        },
        "data_window": split.info,
        "feature_importance": dict(
            sorted(zip(FEATURES, booster.feature_importance("gain").round(1).tolist(), strict=True), key=lambda kv: -kv[1])[
                :15
            ]
        ),
        "versions": versions(lightgbm=lightgbm.__version__),
    }
    scores = write_with_validation(target, meta, GbmModel, split.val)
    log(f"{name}: {rows:,} training rows, {cpu_s:.1f} CPU s, validation MSE {scores.mse:.4f} (n={scores.n}); wrote {target}")
    return meta
