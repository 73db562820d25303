"""Gradient boosting (LightGBM) on the features of all seven measurements: the 5-minute change of GAP.

An artifact directory holds ``model.txt`` (LightGBM's own text format) and
``metadata.json`` (data window, features, parameters, library versions, validation
scores; written by :mod:`wattcast.gbm_training`).  The forecast is the newest GAP plus
the predicted change.  LightGBM is imported when an artifact is loaded, so the rest of
wattcast does not need it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from wattcast.contract import HORIZON_S, READING_FIELDS, Reading
from wattcast.forecasters.base import Forecaster, Model
from wattcast.forecasters.features import FEATURES, Featurizer

#: LightGBM's optional integrations, which it imports when they are installed: a predictor only
#: needs its Booster on NumPy arrays.  Measured: importing lightgbm costs 1.4 CPU s and 166 MB of
#: RSS with them (sklearn alone ~0.9 s), 0.4 s and 75 MB without.
OPTIONAL_INTEGRATIONS = ("sklearn", "pandas", "dask", "pyarrow", "matplotlib", "graphviz", "cffi")


def import_lightgbm() -> ModuleType:
    """``lightgbm``, imported without the integrations this process has not imported yet.

    They are hidden only while lightgbm is imported (an entry of None in ``sys.modules``
    makes an import fail), so the process can import them itself afterwards.
    """
    if "lightgbm" in sys.modules:
        return sys.modules["lightgbm"]
    hidden = [m for m in OPTIONAL_INTEGRATIONS if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]
    try:
        import lightgbm
    finally:
        for m in hidden:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
    return lightgbm


class GbmForecaster(Forecaster, Featurizer):
    """One house: its featurizer's state (plain arrays and numbers: checkpointed as they are)."""

    model: GbmModel

    def __init__(self, model: GbmModel) -> None:
        Forecaster.__init__(self, model)
        Featurizer.__init__(self)

    def learn_one(self, reading: Reading) -> None:
        self.push(reading.ts, np.array([getattr(reading, f) for f in READING_FIELDS], np.float64))
        self.seen += 1

    def query(self) -> np.ndarray | None:
        return self.features() if self.seen >= self.model.min_readings else None


class GbmModel(Model):
    needs = READING_FIELDS

    def __init__(self, directory: Path) -> None:
        from wattcast.forecasters.lstm import ArtifactError

        directory = Path(directory)
        try:
            lightgbm = import_lightgbm()
        except ImportError:
            raise ArtifactError(f"{directory.name} needs LightGBM: pip install lightgbm") from None
        except OSError as exc:  # the wheel is there, its OpenMP library is not
            raise ArtifactError(
                f"{directory.name} needs LightGBM, which cannot load ({str(exc).splitlines()[0]}): apt-get install libgomp1"
            ) from None
        try:
            self.metadata: dict[str, Any] = json.loads((directory / "metadata.json").read_text())
            self.booster = lightgbm.Booster(model_file=str(directory / "model.txt"))
        except (OSError, ValueError, lightgbm.basic.LightGBMError) as exc:
            raise ArtifactError(f"model artifact {directory} is unreadable: {str(exc).splitlines()[0]}") from None
        if self.metadata.get("features") != FEATURES or self.booster.num_feature() != len(FEATURES):
            raise ArtifactError(f"{directory}: trained on other features than this wattcast computes (retrain it)")
        self.directory: Path | None = directory
        self.name = self.metadata["name"]
        self.version = self.metadata["version"]
        self.horizon_s = int(self.metadata["horizon_s"])

    @classmethod
    def of_booster(cls, booster: Any, name: str, version: str) -> GbmModel:
        """A model of a booster just trained (the backtest's per-window models): no artifact on disk."""
        model = cls.__new__(cls)
        model.booster, model.name, model.version, model.directory = booster, name, version, None
        model.metadata = {"name": name, "version": version, "features": FEATURES, "horizon_s": HORIZON_S}
        return model

    def new_forecaster(self) -> GbmForecaster:
        return GbmForecaster(self)

    def predict(self, queries: Sequence[np.ndarray]) -> np.ndarray:
        if len(queries) == 0:
            return np.empty(0)
        x = np.stack(queries)
        change = self.booster.predict(x, num_threads=1)
        return x[:, 0] + np.asarray(change, np.float64)  # feature 0: the newest GAP

    def describe(self) -> dict[str, Any]:
        files = self.directory.iterdir() if self.directory is not None else ()
        size = sum(p.stat().st_size for p in files if p.is_file())
        return {
            "name": self.name,
            "version": self.version,
            "parameters": int(self.metadata.get("parameters", 0)),
            "size_bytes": size,
            "data_window": self.metadata.get("data_window"),
        }
