"""Online recursive least squares on the gbm features: learns from every reading, live, NumPy only.

Each house fits a linear model of the 5-minute change of GAP on the features of
:mod:`wattcast.forecasters.features` (divided by fixed typical magnitudes, plus a bias)
with exponential forgetting ``lam`` (a memory of about ``1 / (1 - lam)`` readings, so it
follows a household that changes).  The pair of a reading is learnt when the reading at
its target minute arrives (event time, the scoring rule's pairing; a pair whose target
minute has no reading is never learnt).

Every house starts from the artifact (``models/rls/``: ``state.npz`` holds the weights and
the inverse correlation matrix P after streaming the training split, ``metadata.json``
what it was trained on) and goes on learning from its own readings.  A house's state is
its featurizer's hour, the weights, P (77 x 77, checkpointed as its upper triangle) and the
features of the last 5 minutes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from wattcast.contract import HORIZON_S, READING_FIELDS, Reading
from wattcast.forecasters.base import Forecaster, Model
from wattcast.forecasters.features import FEATURES, Featurizer

DIM = len(FEATURES) + 1  # + bias
_MAGNITUDE = {"minute_of_day": 1440.0, "weekday": 7.0, "voltage": 240.0, "unmetered": 100.0, "unmetered_mean5": 100.0}
#: typical magnitudes of the features (divided by these): keeps P well conditioned
SCALE = np.array([_MAGNITUDE.get(f, 1.0) for f in FEATURES] + [1.0])
PENDING = HORIZON_S // 60 + 1  # the newest readings whose targets have not come yet
UPPER = np.triu_indices(DIM)  # P is symmetric: a checkpoint keeps its upper triangle


class RlsForecaster(Forecaster, Featurizer):
    model: RlsModel

    def __init__(self, model: RlsModel) -> None:
        Forecaster.__init__(self, model)
        Featurizer.__init__(self)
        self.w = model.w0.copy()
        self.p = model.p0.copy()
        self.waiting_x = np.zeros((PENDING, DIM))
        self.waiting_gap = np.zeros(PENDING)
        self.waiting_ts = np.zeros(PENDING, np.int64)
        self.x = np.zeros(DIM)

    def learn_one(self, reading: Reading) -> None:
        self.push(reading.ts, np.array([getattr(reading, f) for f in READING_FIELDS], np.float64))
        self.seen += 1
        gap = reading.global_active_power
        for k in np.flatnonzero(self.waiting_ts == reading.ts - self.model.horizon_s):
            self._update(self.waiting_x[k], gap - self.waiting_gap[k])  # that reading's target is this one
        self.x = np.append(self.features(), 1.0) / SCALE
        slot = self.seen % PENDING
        self.waiting_x[slot], self.waiting_gap[slot], self.waiting_ts[slot] = self.x, gap, reading.ts

    def _update(self, x: np.ndarray, y: float) -> None:
        lam = self.model.lam
        px = self.p @ x
        gain = px / (lam + x @ px)
        self.w = self.w + gain * (y - x @ self.w)
        p = (self.p - np.outer(gain, px)) / lam
        self.p = 0.5 * (p + p.T)  # stays symmetric despite rounding

    def state(self) -> dict[str, Any]:
        """As every forecaster's, but P (symmetric) as its upper triangle: half the JSON of a checkpoint."""
        out = super().state()
        out["p"] = self.p[UPPER].tolist()
        return out

    def restore(self, state: dict[str, Any]) -> None:
        p = state.get("p") if isinstance(state, dict) else None
        if isinstance(p, list) and len(p) == len(UPPER[0]) and all(isinstance(v, int | float) for v in p):
            full = np.zeros((DIM, DIM))
            full[UPPER] = p
            full.T[UPPER] = p
            state = {**state, "p": full.tolist()}
        super().restore(state)  # checks every value (a P of another size fails as a shape)

    def query(self) -> tuple[float, float] | None:
        if self.seen < self.model.min_readings:
            return None
        change = float(np.clip(self.x @ self.w, -self.model.clip, self.model.clip))
        return float(self.ring[(self.head - 1) % len(self.ring), 0]), change


class RlsModel(Model):
    name = "rls"
    needs = READING_FIELDS

    def __init__(self, lam: float = 0.9999, delta: float = 100.0, clip: float = 10.0) -> None:
        if not 0.0 < lam <= 1.0:
            raise ValueError(f"lam must be in (0, 1], got {lam}")
        self.lam, self.delta, self.clip = float(lam), float(delta), float(clip)
        self.w0, self.p0 = np.zeros(DIM), np.eye(DIM) * self.delta
        self.version = f"rls-lam{lam:g}-cold"
        self.metadata: dict[str, Any] = {}

    @classmethod
    def load(cls, directory: Path) -> RlsModel:
        """The artifact of ``wattcast train --model rls``: every house starts from its weights."""
        from wattcast.forecasters.lstm import ArtifactError

        try:
            meta = json.loads((Path(directory) / "metadata.json").read_text())
            with np.load(Path(directory) / "state.npz") as z:
                w0, p0 = z["w"], z["p"]
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"model artifact {directory} is unreadable: {exc}") from None
        if meta.get("features") != FEATURES or w0.shape != (DIM,) or p0.shape != (DIM, DIM):
            raise ArtifactError(f"{directory}: trained on other features than this wattcast computes (retrain it)")
        model = cls(meta["lam"], meta["delta"], meta["clip"])
        model.w0, model.p0, model.version, model.metadata = w0, p0, meta["version"], meta
        return model

    def new_forecaster(self) -> RlsForecaster:
        return RlsForecaster(self)

    def predict(self, queries: Any) -> np.ndarray:
        return np.array([gap + change for gap, change in queries], np.float64).reshape(len(queries))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "parameters": DIM, "size_bytes": 0, "lam": self.lam}


def warm_start(model: RlsModel, ts: np.ndarray, values: np.ndarray) -> RlsForecaster:
    """A forecaster that has learnt from a stream (the training split): its w and P are the artifact's."""
    f = model.new_forecaster()
    for i in range(len(ts)):
        f.learn_one(Reading("h000", i, int(ts[i]), *values[i].tolist()))
    return f
