"""Training windows, the shipped artifacts, the NumPy runtime against Keras, and a tiny training run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from wattcast.data import Split
from wattcast.evaluation import evaluate
from wattcast.forecasters import default_models_dir
from wattcast.forecasters.lstm import ArtifactError, LstmModel, LstmNet
from wattcast.training import SPECS, TrainOptions, training_windows

# Keras 3 on NumPy 2 warns about __array__(copy=...) inside its own code; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

HAS_TF = importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("keras") is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason="TensorFlow/Keras are not installed (pip install 'wattcast[train]')")
MODELS_DIR = default_models_dir()


def artifact(name: str) -> Path:
    directory = MODELS_DIR / name
    missing = [f for f in ("metadata.json", "weights.npz", "model.keras") if not (directory / f).is_file()]
    if missing:
        pytest.skip(f"no complete artifact in {directory} (missing {', '.join(missing)})")
    return directory


# --------------------------------------------------------------------- training windows


def test_windows_of_a_ramp():
    values = np.arange(100, dtype=np.float64)
    x, y = training_windows(values, 30, 5)
    assert x.shape == (65, 30, 1) and y.shape == (65,)  # the notebook's len - 30 - 5
    assert x.dtype == np.float32 and y.dtype == np.float32
    for i in range(65):
        np.testing.assert_array_equal(x[i, :, 0], values[i : i + 30])
        assert y[i] == values[i + 34]
    assert x.flags.c_contiguous


def test_windows_of_several_features():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(80, 3))
    x, y = training_windows(values, 30, 5)
    assert x.shape == (45, 30, 3)
    np.testing.assert_array_equal(x[7], values[7:37].astype(np.float32))
    np.testing.assert_array_equal(y, values[34:79, 0].astype(np.float32))
    target = rng.normal(size=80)
    _, y2 = training_windows(values, 30, 5, target=target)
    np.testing.assert_array_equal(y2, target[34:79].astype(np.float32))


def test_windows_need_enough_rows():
    with pytest.raises(ValueError, match="too few"):
        training_windows(np.zeros(35), 30, 5)
    assert training_windows(np.zeros(36), 30, 5)[0].shape == (1, 30, 1)


@pytest.mark.parametrize(("name", "features"), [("lstm", 1), ("lstm-augmented", 3)])
def test_windows_of_the_sample_split(split, name, features):
    spec = SPECS[name]
    assert len(spec.features) == features
    values = split.train[list(spec.features)].to_numpy()
    x, y = training_windows(values, spec.seq_length, spec.horizon_steps)
    assert x.shape == (16_358, 30, features) and y.shape == (16_358,)
    gap = split.train["global_active_power"].to_numpy()
    assert y[0] == np.float32(gap[34]) and y[-1] == np.float32(gap[16_391])


def test_specs_are_the_courses():
    assert SPECS["lstm"].units == (5, 3) and SPECS["lstm"].learning_rate == 0.01 and not SPECS["lstm"].scaled
    aug = SPECS["lstm-augmented"]
    assert aug.units == (50, 25, 10) and aug.learning_rate == 0.001 and aug.scaled
    assert aug.features == ("global_active_power", "voltage", "global_intensity")
    for spec in SPECS.values():
        assert (spec.batch_size, spec.epochs, spec.patience, spec.validation_split) == (500, 100, 10, 0.05)
        assert (spec.seq_length, spec.horizon_steps, spec.dropout) == (30, 5, 0.2)


# ---------------------------------------------------------------------- shipped artifacts


@pytest.mark.parametrize(("name", "parameters"), [("lstm", 252), ("lstm-augmented", 19_851)])
def test_artifact_round_trip(split, name, parameters):
    directory = artifact(name)
    model = LstmModel(directory)
    meta = json.loads((directory / "metadata.json").read_text())
    assert model.name == name and model.version == meta["version"]
    assert model.net.parameters == meta["architecture"]["parameters"] == parameters
    assert meta["data_window"]["block"] == split.info["block"]
    assert meta["data_window"]["val_window"] == split.info["val_window"]
    scores = evaluate(model, split.val)
    assert scores.n == meta["validation"]["n"] == 4093
    # float32 inference: a runtime that orders its sums differently moves the MSE by ~1e-8
    # relative (the live pipeline's parity bar is 1e-6)
    assert scores.mse == pytest.approx(meta["validation"]["mse"], rel=1e-7)
    assert scores.mae == pytest.approx(meta["validation"]["mae"], rel=1e-7)


def test_artifact_errors(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        LstmModel(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ArtifactError):
        LstmModel(tmp_path)


@pytest.fixture(scope="module")
def keras():
    if not HAS_TF:
        pytest.skip("TensorFlow/Keras are not installed (pip install 'wattcast[train]')")
    import keras

    return keras


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm", "lstm-augmented"])
def test_numpy_runtime_matches_keras(keras, name):
    directory = artifact(name)
    net = LstmNet.from_npz(directory / "weights.npz")
    reference = keras.saving.load_model(directory / "model.keras", compile=False)
    features = len(json.loads((directory / "metadata.json").read_text())["features"])
    rng = np.random.default_rng(42)
    scale = 5.0 if name == "lstm" else 1.0  # raw kW / min-max scaled inputs
    x = rng.uniform(0, scale, (64, 30, features)).astype(np.float32)
    x[:8, :25] = 0.0  # 'pre'-padded windows, as at the start of a stream
    expected = np.asarray(reference(x, training=False))[:, 0]
    np.testing.assert_allclose(net(x), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- a tiny training run


def tiny_split(split: Split) -> Split:
    train, val = split.train.iloc[:1500].reset_index(drop=True), split.val.iloc[:300].reset_index(drop=True)
    info = {**split.info, "train_rows": len(train), "val_rows": len(val), "note": "test: a tiny part of the sample"}
    return Split(train, val, info)


@pytest.fixture(scope="module")
def tiny_runs(keras, split, tmp_path_factory):
    """The same tiny model trained twice with seed 7, and once with seed 8."""
    from wattcast.training import train

    small = tiny_split(split)
    runs = []
    for k, seed in enumerate((7, 7, 8)):
        out = tmp_path_factory.mktemp(f"run{k}")
        log: list[str] = []
        meta = train("lstm", small, out, TrainOptions(seed=seed, epochs=2, units=(2,), log=log.append))
        runs.append((out / "lstm", meta, log))
    return small, runs


@pytest.mark.slow
def test_tiny_training_writes_the_artifact(tiny_runs):
    small, runs = tiny_runs
    directory, meta, log = runs[0]
    assert sorted(p.name for p in directory.iterdir()) == ["loss.png", "metadata.json", "model.keras", "weights.npz"]
    assert (directory / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((directory / "metadata.json").read_text())
    assert on_disk == meta
    assert meta["name"] == "lstm" and meta["version"].startswith("lstm-")
    assert meta["architecture"]["lstm_units"] == [2]  # units=(2,): one LSTM layer of 2 units
    assert meta["architecture"]["parameters"] == 4 * (1 * 2 + 2 * 2 + 2) + 2 + 1 == 35
    assert {"wattcast", "python", "tensorflow", "keras", "numpy"} <= set(meta["versions"])
    assert meta["training"]["seed"] == 7
    assert meta["training"]["epochs"] == 2 and meta["training"]["epochs_run"] == 2
    assert meta["training"]["windows"] == 1500 - 35
    assert meta["data_window"] == small.info
    assert set(meta["history"]) >= {"loss", "val_loss"} and len(meta["history"]["loss"]) == 2
    assert meta["validation"]["n"] == 300 - 6
    assert np.isfinite(meta["validation"]["mse"])
    model = LstmModel(directory)
    assert evaluate(model, small.val).mse == pytest.approx(meta["validation"]["mse"], rel=1e-12)
    assert any("epoch 2/2" in line for line in log)


@pytest.mark.slow
def test_tiny_model_numpy_matches_keras(keras, tiny_runs):
    directory = tiny_runs[1][0][0]
    reference = keras.saving.load_model(directory / "model.keras", compile=False)
    x = np.random.default_rng(1).uniform(0, 5, (32, 30, 1)).astype(np.float32)
    expected = np.asarray(reference(x, training=False))[:, 0]
    net = LstmNet.from_npz(directory / "weights.npz")
    np.testing.assert_allclose(net(x), expected, rtol=1e-5, atol=1e-5)  # layer after layer (a big batch)
    np.testing.assert_allclose(net(x[:3]), expected[:3], rtol=1e-5, atol=1e-5)  # the wavefront (a small one)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.slow
def test_same_seed_same_model(tiny_runs):
    small, ((dir_a, meta_a, _), (dir_b, meta_b, _), (dir_c, _, _)) = tiny_runs
    a, b, c = (_arrays(d / "weights.npz") for d in (dir_a, dir_b, dir_c))
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)  # bit-identical weights
    assert meta_a["history"] == meta_b["history"]
    assert meta_a["validation"]["mse"] == meta_b["validation"]["mse"]
    assert not all(np.array_equal(a[k], c[k]) for k in a)  # another seed, another model
    # np.savez writes its members with the zip's fixed 1980 date, so the file itself is identical, and with it
    # the version's digest (model.keras is not: Keras records when it was saved)
    assert (dir_a / "weights.npz").read_bytes() == (dir_b / "weights.npz").read_bytes()
    assert meta_a["version"].rsplit("-", 1)[1] == meta_b["version"].rsplit("-", 1)[1]
