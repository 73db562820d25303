"""The forecaster contract every model implements.

A :class:`Model` is shared by all houses (weights, parameters); a
:class:`Forecaster` is one house's online state.  For every reading::

    f.learn_one(reading)        # update the house's state (O(1) or O(window))
    q = f.query()               # the input a forecast needs now, or None (too few readings)
    y = model.predict([q, ...]) # batched: one call for many houses / readings

``forecast()`` is the one-house shortcut.  Queries are immutable snapshots, so a
node may collect queries of many consecutive readings and houses and predict them
in one batch: the result is the same as predicting one at a time (for the float32
LSTMs up to rounding, about 1e-7 relative).

``state()`` / ``restore()`` save and load a house's state as plain JSON values, so
a predictor that restarts goes on exactly where it stopped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from wattcast.contract import HORIZON_S, Reading, check_float, check_int


class Forecaster(ABC):
    """One house's online state for one model."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.seen = 0

    @abstractmethod
    def learn_one(self, reading: Reading) -> None:
        """Take the next reading of this house (readings arrive in order)."""

    @abstractmethod
    def query(self) -> Any | None:
        """The input of a forecast for ``horizon_s`` after the newest reading, or None if too early."""

    def forecast(self) -> float | None:
        q = self.query()
        return None if q is None else float(self.model.predict([q])[0])

    def state(self) -> dict[str, Any]:
        """Everything this house's forecaster has learned, as JSON values (arrays as lists).

        The default covers forecasters whose attributes are numbers, None and NumPy
        arrays; JSON keeps floats exact, so a restored forecaster forecasts the same.
        """
        out = {}
        for name, value in vars(self).items():
            if name != "model":
                out[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    def restore(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state` gave; ValueError if it does not fit this forecaster.

        A state comes from a file: every value must have the type of the fresh
        forecaster's (an int stays an int, a float may be written as an integer, null
        only where the fresh value is null), numbers must be finite, arrays the shape.
        Nothing is changed unless all of it fits.
        """
        fresh = vars(self)
        if not isinstance(state, dict) or set(state) != set(fresh) - {"model"}:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state of {keys} does not fit a {type(self).__name__}")
        restored = {name: _restored_value(name, value, fresh[name]) for name, value in state.items()}
        for name, value in restored.items():
            setattr(self, name, value)


def _restored_value(name: str, value: Any, fresh: Any) -> Any:
    """``value`` from a saved state, checked against the fresh forecaster's ``fresh``."""
    if isinstance(fresh, np.ndarray):
        try:
            array = np.asarray(value, dtype=fresh.dtype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{name} is not an array of numbers: {exc}") from None
        if array.shape != fresh.shape:
            raise ValueError(f"{name} of shape {array.shape}, expected {fresh.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} holds a value that is not finite")
        return array
    if value is None:
        if fresh is not None:
            raise ValueError(f"{name} must be a number, got null")
        return None
    if isinstance(fresh, int) and not isinstance(fresh, bool):  # a count
        return check_int(name, value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = check_int(name, value, -(2**53))
        return float(value) if isinstance(fresh, float) else value
    return check_float(name, value)


class Model(ABC):
    """A forecasting model: parameters shared by every house, batched prediction."""

    name: str
    version: str
    horizon_s: int = HORIZON_S
    #: forecasts start once this many readings have been seen (2, as in the course)
    min_readings: int = 2
    #: the measurements of a reading this model learns from (all but global active power are
    #: optional in the contract: a reading that lacks one is not for this model)
    needs: tuple[str, ...] = ("global_active_power",)

    def lacks(self, reading: Reading) -> list[str]:
        """The measurements this model needs that ``reading`` does not have (empty: it can learn from it)."""
        return [f for f in self.needs if getattr(reading, f) is None]

    @abstractmethod
    def new_forecaster(self) -> Forecaster: ...

    @abstractmethod
    def predict(self, queries: Sequence[Any]) -> np.ndarray:
        """Forecasts (kW) for a batch of queries, as a float64 array of the same length."""

    def describe(self) -> dict[str, Any]:
        """Facts for reports: parameters, size on disk, data window..."""
        return {"name": self.name, "version": self.version, "parameters": 0, "size_bytes": 0}


class ScalarModel(Model):
    """For models whose query already is the forecast (cheap closed-form models)."""

    def predict(self, queries: Sequence[Any]) -> np.ndarray:
        return np.asarray(queries, dtype=np.float64).reshape(len(queries))
