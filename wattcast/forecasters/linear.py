"""The course's online weighted linear regression.

At every reading: the weighted least-squares line through (unix seconds, GAP) of
all readings so far, weight ``mu**k`` for the reading k places before the newest
(newest weight 1); the forecast is the line at newest timestamp + horizon.

The weighted sums are updated recursively in O(1) per reading.  They are kept in
coordinates relative to the newest timestamp, so no sum ever holds a squared unix
time (which would lose every significant digit of the slope).
"""

from __future__ import annotations

from wattcast.contract import Reading
from wattcast.forecasters.base import Forecaster, ScalarModel


class LinearForecaster(Forecaster):
    model: LinearModel

    def __init__(self, model: LinearModel) -> None:
        super().__init__(model)
        self.s0 = self.s1 = self.s2 = self.sy = self.sxy = 0.0
        self.t: int | None = None

    def learn_one(self, reading: Reading) -> None:
        mu = self.model.mu
        y = reading.global_active_power
        d = 0.0 if self.t is None else float(reading.ts - self.t)
        s0, s1, s2, sy, sxy = self.s0, self.s1, self.s2, self.sy, self.sxy
        # Move the origin to the new reading's time (x -> x - d), decay, add (0, y).
        self.s2 = mu * (s2 - 2.0 * d * s1 + d * d * s0)
        self.s1 = mu * (s1 - d * s0)
        self.sxy = mu * (sxy - d * sy)
        self.s0 = mu * s0 + 1.0
        self.sy = mu * sy + y
        self.t = reading.ts
        self.seen += 1

    def query(self) -> float | None:
        if self.seen < self.model.min_readings:
            return None
        det = self.s0 * self.s2 - self.s1 * self.s1
        if det <= 1e-12 * self.s0 * self.s2:
            # All readings share one timestamp: no slope; use the weighted mean.
            return self.sy / self.s0
        slope = (self.s0 * self.sxy - self.s1 * self.sy) / det
        intercept = (self.sy - slope * self.s1) / self.s0
        return intercept + slope * self.model.horizon_s


class LinearModel(ScalarModel):
    name = "linear"

    def __init__(self, mu: float = 0.9) -> None:
        if not 0.0 < mu <= 1.0:
            raise ValueError(f"mu must be in (0, 1], got {mu}")
        self.mu = float(mu)
        self.version = f"linear-mu{mu:g}"

    def new_forecaster(self) -> LinearForecaster:
        return LinearForecaster(self)

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "parameters": 2, "size_bytes": 0, "mu": self.mu}
