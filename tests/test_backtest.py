"""wattcast backtest: many windows, each scored as `wattcast evaluate` scores one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from wattcast.data import load_split, sample_path
from wattcast.evaluation import evaluate
from wattcast.forecasters import load_model


def run(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wattcast", "backtest", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_every_window_is_scored_as_evaluate_scores_it(tmp_path):
    sample = str(sample_path())
    out = run("--data", sample, "--fraction", "0.3", "--seeds", "1", "2", "--out", str(tmp_path / "bt"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "bt" / "backtest.json").read_text())
    assert (tmp_path / "bt" / "backtest.png").stat().st_size > 10_000
    assert [w["seed"] for w in result["windows"]] == [1, 2]
    for w in result["windows"]:
        val = load_split(sample, 0.3, w["seed"]).val
        for name in ("persistence", "linear"):
            assert w["mse"][name] == pytest.approx(evaluate(load_model(name), val).mse, rel=1e-12)
        assert w["skill"]["persistence"] == 0.0
        assert w["skill"]["linear"] == pytest.approx(1 - w["mse"]["linear"] / w["mse"]["persistence"])
    linear = result["summary"]["linear"]
    assert linear["windows_won"] == sum(w["skill"]["linear"] > 0 for w in result["windows"])
    assert linear["min_skill"] == min(w["skill"]["linear"] for w in result["windows"])
    assert len(out.stdout.strip().splitlines()) == 1 + 2 + 3  # header, windows, mean/min/won


def test_without_the_full_data_set_it_says_how_to_get_it(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "WATTCAST_DATA": ""}
    out = run("--out", str(tmp_path / "bt"), cwd=tmp_path, env=env)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and "wattcast data download" in lines[0], out.stderr
    bad = run("--data", str(sample_path()), "--windows", "0", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("wattcast: error: --windows")


def test_gbm_is_trained_on_each_windows_training_split_and_cached(tmp_path):
    pytest.importorskip("lightgbm")
    from wattcast.forecasters.gbm import GbmModel
    from wattcast.gbm_training import fit

    sample = str(sample_path())
    args = ("--data", sample, "--fraction", "0.3", "--seeds", "1", "2", "--models", "gbm", "--out", str(tmp_path / "bt"))
    out = run(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "bt" / "backtest.json").read_text())
    cached = sorted((tmp_path / "bt" / "cache").glob("gbm-seed*.txt"))
    assert [p.name.split("-")[1] for p in cached] == ["seed1", "seed2"]
    for w in result["windows"]:
        split = load_split(sample, 0.3, w["seed"])
        booster, _ = fit(split.train)  # what the window's own training split gives
        assert w["mse"]["gbm"] == pytest.approx(evaluate(GbmModel.of_booster(booster, "gbm", "x"), split.val).mse, rel=1e-12)
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = run(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # nothing trained again
    assert json.loads((tmp_path / "bt" / "backtest.json").read_text())["windows"] == result["windows"]


@pytest.mark.slow
def test_the_lstms_are_trained_per_window_when_asked(tmp_path):
    pytest.importorskip("tensorflow")
    sample = str(sample_path())
    out = run(
        "--data", sample, "--fraction", "0.2", "--seeds", "1", "--models", "lstm", "--lstm-epochs", "1",
        "--out", str(tmp_path / "bt"), cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "bt" / "backtest.json").read_text())
    (artifact,) = (tmp_path / "bt" / "cache").glob("lstm-seed1-*/lstm")
    meta = json.loads((artifact / "metadata.json").read_text())
    assert meta["data_window"]["seed"] == 1 and meta["training"]["epochs_run"] == 1
    # the window's score is the artifact trained on that window, scored like evaluate
    val = load_split(sample, 0.2, 1).val
    from wattcast.forecasters.lstm import LstmModel

    assert result["windows"][0]["mse"]["lstm"] == pytest.approx(evaluate(LstmModel(artifact), val).mse, rel=1e-12)
