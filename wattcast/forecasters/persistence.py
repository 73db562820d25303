"""Persistence: the forecast is the newest reading."""

from __future__ import annotations

from wattcast.contract import Reading
from wattcast.forecasters.base import Forecaster, ScalarModel


class PersistenceForecaster(Forecaster):
    def __init__(self, model: PersistenceModel) -> None:
        super().__init__(model)
        self.last: float | None = None

    def learn_one(self, reading: Reading) -> None:
        self.last = reading.global_active_power
        self.seen += 1

    def query(self) -> float | None:
        return self.last if self.seen >= self.model.min_readings else None


class PersistenceModel(ScalarModel):
    name = "persistence"
    version = "persistence-1"

    def new_forecaster(self) -> PersistenceForecaster:
        return PersistenceForecaster(self)
