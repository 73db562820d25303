"""The open model registry (issue 12, part 1): a user's own model and an outside predictor, scored in one run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO

from wattcast.data import load_split
from wattcast.evaluation import evaluate
from wattcast.forecasters import load_model
from wattcast.forecasters.registry import load_spec, registered

OWN_MODEL = """
from wattcast.forecasters.base import Forecaster, ScalarModel


class Mean(Forecaster):
    def __init__(self, model):
        super().__init__(model)
        self.total = 0.0

    def learn_one(self, reading):
        self.total += reading.global_active_power
        self.seen += 1

    def query(self):
        return self.total / self.seen if self.seen >= self.model.min_readings else None


class MeanModel(ScalarModel):
    name = "running-mean"
    version = "running-mean-1"

    def new_forecaster(self):
        return Mean(self)


def make():
    return MeanModel()


def broken():
    return 42
"""


@pytest.fixture
def own_model(tmp_path) -> Path:
    path = tmp_path / "my_model.py"
    path.write_text(OWN_MODEL)
    return path


def test_a_model_of_your_own_loads_from_a_file_or_module_and_errors_say_whose(own_model, monkeypatch):
    model = load_spec(f"{own_model}:make")
    assert model.name == "running-mean"
    monkeypatch.syspath_prepend(str(own_model.parent))
    assert load_model("my_model:make").name == "running-mean"  # a module on the path
    for spec, said in (
        (f"{own_model}:nope", "has no factory 'nope'"),
        (f"{own_model}:broken", "returned a int, not a wattcast Model"),
        ("no_such_module_x:make", "cannot import no_such_module_x"),
        ("arima", "unknown model 'arima'"),
    ):
        with pytest.raises(ValueError, match=said):
            load_model(spec)
    assert registered()[:7] == ["lstm", "lstm-augmented", "gbm", "gbm-history", "rls", "linear", "persistence"]


def test_evaluate_scores_a_model_of_your_own_beside_the_built_in_ones(own_model, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "wattcast", "evaluate", "--models", "persistence", f"{own_model}:make", "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["models"]
    assert got["running-mean"]["mse"] == evaluate(load_spec(f"{own_model}:make"), load_split().val).mse
    assert set(got) == {"persistence", "running-mean"}


@pytest.mark.integration
def test_your_own_model_and_an_outside_paho_predictor_are_scored_in_one_run(own_model, tmp_path):
    from wattcast.broker import available_kind

    if available_kind("mosquitto") is None:
        pytest.skip("needs the mosquitto binary (apt-get install mosquitto)")
    store = tmp_path / "run" / "wattcast.db"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    run = subprocess.Popen(
        [sys.executable, "-m", "wattcast", "run", "--models", "persistence", f"{own_model}:make",
         "--external-model", "outside", "--limit", "300", "--store", str(store), "--json", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    login = store.parent / "broker" / "predictor-outside.env"
    outside = None
    try:
        deadline = time.monotonic() + 120
        while not login.is_file() or "WATTCAST_MQTT_PASSWORD" not in login.read_text():
            assert run.poll() is None, run.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the run wrote no login for the outside predictor"
            time.sleep(0.05)
        values = dict(line.split("=", 1) for line in login.read_text().split())
        outside = subprocess.Popen(
            [sys.executable, str(REPO / "docs" / "examples" / "outside_predictor.py"), "outside"],
            env={**env, **values}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        out, err = run.communicate(timeout=300)
    finally:
        for proc in (run, outside):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert run.returncode == 0, err[-3000:]
    models = json.loads(out)["models"]
    assert set(models) == {"persistence", "running-mean", "outside"}
    # the outside predictor forecasts the newest reading: exactly what persistence scores
    assert models["outside"]["n"] == models["persistence"]["n"] == 294
    assert models["outside"]["mse"] == pytest.approx(models["persistence"]["mse"], rel=1e-12)
    mean = evaluate(load_spec(f"{own_model}:make"), load_split().val.iloc[:300])
    assert models["running-mean"]["n"] == mean.n and models["running-mean"]["mse"] == pytest.approx(mean.mse, rel=1e-9)


def test_without_a_loadable_lightgbm_the_default_run_leaves_the_gbm_models_out_and_says_so(monkeypatch):
    from wattcast.contract import MODELS
    from wattcast.runner import pipeline
    from wattcast.runner.options import RunOptions

    monkeypatch.setattr(pipeline, "_lightgbm_loads", lambda: False)
    notes: list[str] = []
    args = pipeline._resolve_models(RunOptions(), notes)
    assert args.models == [m for m in MODELS if m not in ("gbm", "gbm-history")]
    assert notes == ["gbm, gbm-history: LightGBM cannot load here (apt-get install libgomp1): not run"]
    asked = pipeline._resolve_models(RunOptions(models=["gbm", "persistence"]), notes := [])
    assert asked.models == ["gbm", "persistence"] and notes == []  # asked for: its predictor says why it fails
