"""The gradient-boosting models (issue 12): live features equal offline ones, artifacts say what they are."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from wattcast.contract import READING_FIELDS
from wattcast.data import load_split, to_readings
from wattcast.evaluation import evaluate
from wattcast.forecasters import ArtifactError, default_models_dir, load_model
from wattcast.forecasters.features import FEATURES, HISTORY, stream_features

pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def split():
    return load_split()


def pandas_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Some of the features, computed independently with pandas (valid once an hour of readings has come)."""
    gap = frame["global_active_power"]
    out = pd.DataFrame(index=frame.index)
    for k in (0, 1, 7, 29):
        out[f"gap_lag{k}"] = gap.shift(k)
    for w in (5, 15, 30, 60):
        roll = gap.rolling(w)
        out[f"gap_mean{w}"], out[f"gap_std{w}"] = roll.mean(), roll.std(ddof=0)
        out[f"gap_min{w}"], out[f"gap_max{w}"] = roll.min(), roll.max()
    out["gap_diff5"] = gap - gap.shift(5)
    for k in (1, 2, 3):
        sub = frame[f"sub_metering_{k}"]
        out[f"sub{k}_lag2"] = sub.shift(2)
        out[f"sub{k}_mean5"], out[f"sub{k}_mean60"] = sub.rolling(5).mean(), sub.rolling(60).mean()
    unmetered = gap * 1000 / 60 - frame["sub_metering_1"] - frame["sub_metering_2"] - frame["sub_metering_3"]
    out["unmetered"], out["unmetered_mean5"] = unmetered, unmetered.rolling(5).mean()
    stamp = frame["datetime"]
    out["minute_of_day"] = stamp.dt.hour * 60 + stamp.dt.minute
    out["weekday"] = stamp.dt.day_of_week
    out["weekend"] = (stamp.dt.day_of_week >= 5).astype(float)
    return out


def test_the_features_a_house_computes_live_equal_pandas_over_the_same_readings(split):
    frame = split.train.iloc[3000:3600].reset_index(drop=True)
    live = stream_features(frame["ts"].to_numpy(), frame[list(READING_FIELDS)].to_numpy())
    expected = pandas_features(frame).iloc[HISTORY:]
    got = pd.DataFrame(live, columns=FEATURES).iloc[HISTORY:]
    for name in expected.columns:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-9, atol=1e-9, err_msg=name)


def test_before_an_hour_has_come_the_first_reading_pads_the_history(split):
    frame = split.train.iloc[:3]
    live = stream_features(frame["ts"].to_numpy(), frame[list(READING_FIELDS)].to_numpy())
    first = frame["global_active_power"].iloc[0]
    lags = live[1, : FEATURES.index("gap_lag29") + 1]
    assert lags[0] == frame["global_active_power"].iloc[1] and (lags[1:] == first).all()


def test_sub_meter_runs_count_readings_on_and_off(split):
    from wattcast.forecasters.features import Featurizer

    f = Featurizer()
    values = np.zeros(7)
    for sub3 in (0, 0, 18, 18, 18, 0):
        values[6] = sub3
        f.push(1_200_000_000, values)
    assert f.runs[2] == -1 and f.runs[0] == -6  # just off; sub-meter 1 off all along


def test_a_predictor_checkpoint_of_a_gbm_house_stays_small(split):
    """The featurizer's hour of readings is the whole state: a few kB of JSON per house."""
    model = load_model("gbm")
    f = model.new_forecaster()
    for r in to_readings(split.val.iloc[:200]):
        f.learn_one(r)
    size = len(json.dumps(f.state(), allow_nan=False))
    assert size < 12_000, size


def test_the_shipped_artifacts_meet_their_targets_and_say_what_they_were_trained_on(split):
    for name, limit in (("gbm", 0.29), ("gbm-history", 0.27)):
        model = load_model(name)
        meta = model.metadata
        assert meta["features"] == FEATURES
        assert {"lightgbm", "numpy", "wattcast"} <= set(meta["versions"])
        assert meta["training"]["params"]["num_leaves"] == 15 and meta["training"]["rounds"] == 150
        scores = evaluate(model, split.val)
        assert scores.n == 4093 and scores.mse <= limit, (name, scores.mse)
        assert scores.mse == pytest.approx(meta["validation"]["mse"], rel=1e-9)
    history = load_model("gbm-history").metadata["training"]
    # never trained on the validation split: its window ends before the validation start
    assert history["window"][1] < split.info["val_window"][0]


def test_an_artifact_of_other_features_is_refused(tmp_path):
    target = tmp_path / "gbm"
    shutil.copytree(default_models_dir() / "gbm", target)
    meta = json.loads((target / "metadata.json").read_text())
    meta["features"] = meta["features"][:-1]
    (target / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="other features"):
        load_model("gbm", tmp_path)


def test_train_writes_an_artifact_that_forecasts_like_its_validation_score(tmp_path, split):
    from wattcast.gbm_training import train_gbm

    small = load_split(fraction=0.3, seed=2)
    meta = train_gbm("gbm", small, tmp_path, log=lambda line: None)
    again = evaluate(load_model("gbm", tmp_path), small.val)
    assert again.mse == pytest.approx(meta["validation"]["mse"], rel=1e-12)
    assert meta["data_window"]["seed"] == 2 and meta["training"]["rows"] > 0


def test_a_gbm_predictor_loads_lightgbm_without_its_heavy_integrations():
    """A predictor pays for LightGBM's Booster only; the process can still import them itself later."""
    import subprocess
    import sys

    code = (
        "import sys; from wattcast.forecasters import load_model; load_model('gbm'); "
        "print(sorted(m for m in ('sklearn', 'pandas') if m in sys.modules)); import pandas; print('pandas ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "pandas ok"], r.stdout
