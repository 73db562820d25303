"""Forecasting models behind one contract (see :mod:`wattcast.forecasters.base`)."""

from __future__ import annotations

from pathlib import Path

from wattcast.contract import MODELS
from wattcast.forecasters.base import Forecaster, Model
from wattcast.forecasters.linear import LinearModel
from wattcast.forecasters.lstm import ArtifactError, LstmModel
from wattcast.forecasters.persistence import PersistenceModel

__all__ = ["MODELS", "ArtifactError", "Forecaster", "Model", "load_model", "default_models_dir"]


def default_models_dir() -> Path:
    """The shipped model artifacts (the repository's ``models/``, package data when installed)."""
    from wattcast.assets import models_dir

    return models_dir()


def load_model(name: str, models_dir: Path | None = None, mu: float = 0.9) -> Model:
    """The model called ``name`` (or a spec of :mod:`wattcast.forecasters.registry`); the built-ins
    with an artifact load it from ``models_dir/<name>``."""
    if name == "persistence":
        return PersistenceModel()
    if name == "linear":
        return LinearModel(mu)
    if name in ("lstm", "lstm-augmented", "gbm", "gbm-history", "rls"):
        directory = Path(models_dir or default_models_dir()) / name
        if not directory.is_dir():
            raise ArtifactError(f"no trained artifact for {name!r} in {directory} (run: wattcast train --model {name})")
        if name == "rls":
            from wattcast.forecasters.rls import RlsModel

            return RlsModel.load(directory)
        if name.startswith("gbm"):
            from wattcast.forecasters.gbm import GbmModel

            return GbmModel(directory)
        return LstmModel(directory)
    from wattcast.forecasters.registry import load_spec

    return load_spec(name)  # a plugin, or a user's own file.py:factory / module:factory
