"""The online rls model (issue 12): learns each pair when its target minute arrives, starts from its artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wattcast.contract import Reading
from wattcast.data import load_split, to_readings
from wattcast.evaluation import evaluate
from wattcast.forecasters import load_model
from wattcast.forecasters.rls import RlsModel


def reading(i: int, minute: int, gap: float) -> Reading:
    return Reading("h000", i, 1_200_000_000 + 60 * minute, gap, 0.1, 240.0, 4.0, 0.0, 1.0, 17.0)


def test_a_pair_is_learnt_when_the_reading_at_its_target_minute_arrives():
    f = RlsModel().new_forecaster()
    for i in range(5):  # minutes 0-4: no target has come yet
        f.learn_one(reading(i, i, 1.0 + i))
    assert not f.w.any()
    f.learn_one(reading(5, 5, 2.0))  # minute 5 is the target of minute 0
    assert f.w.any()
    w = f.w.copy()
    f.learn_one(reading(6, 20, 3.0))  # a gap: minute 20 is no reading's target
    assert np.array_equal(f.w, w)


def test_every_house_starts_from_the_artifact_and_goes_on_learning():
    model = load_model("rls")
    assert model.metadata["lam"] == model.lam == 0.9999
    f = model.new_forecaster()
    assert np.array_equal(f.w, model.w0)
    for r in to_readings(load_split().val.iloc[:50]):
        f.learn_one(r)
    assert not np.array_equal(f.w, model.w0)
    assert np.array_equal(model.new_forecaster().w, model.w0)  # the model itself is not changed


def test_the_shipped_artifact_scores_as_recorded_and_beats_persistence():
    split = load_split()
    model = load_model("rls")
    scores = evaluate(model, split.val)
    assert scores.mse == pytest.approx(model.metadata["validation"]["mse"], rel=1e-9)
    assert scores.mse < evaluate(load_model("persistence"), split.val).mse


def test_a_house_checkpoint_is_measured():
    """P is 77 x 77, symmetric, kept as its upper triangle: about 78 kB of JSON a house (the README says so)."""
    f = load_model("rls").new_forecaster()
    for r in to_readings(load_split().val.iloc[:100]):
        f.learn_one(r)
    state = f.state()
    assert 50_000 < len(json.dumps(state, allow_nan=False)) < 100_000
    again = load_model("rls").new_forecaster()
    again.restore(json.loads(json.dumps(state)))
    assert np.array_equal(again.p, f.p)  # the whole matrix back, exactly
