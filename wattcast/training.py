"""Train the course's LSTM models and write their artifacts (needs TensorFlow).

Artifact folder ``models/<name>/``:

* ``model.keras``   the trained Keras model (best validation loss, like the notebook's checkpoint)
* ``weights.npz``   the same weights for the NumPy runtime of the predictor nodes
* ``metadata.json`` features, sequence length, horizon, scaler, data window and seed,
  parameters, library versions, training history and validation scores
* ``loss.png``      the training / validation loss curves
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from wattcast.artifacts import stamp, versions, write_with_validation
from wattcast.data import Split
from wattcast.forecasters.lstm import LstmModel, LstmNet

SEQ_LENGTH = 30
HORIZON_STEPS = 5


@dataclass(frozen=True)
class LstmSpec:
    """Architecture and training recipe of one of the course's LSTM models."""

    name: str
    features: tuple[str, ...]
    units: tuple[int, ...]
    learning_rate: float
    scaled: bool
    dropout: float = 0.2
    batch_size: int = 500
    epochs: int = 100
    patience: int = 10
    validation_split: float = 0.05
    seq_length: int = SEQ_LENGTH
    horizon_steps: int = HORIZON_STEPS


SPECS = {
    "lstm": LstmSpec("lstm", ("global_active_power",), (5, 3), 0.01, scaled=False),
    "lstm-augmented": LstmSpec(
        "lstm-augmented", ("global_active_power", "voltage", "global_intensity"), (50, 25, 10), 0.001, scaled=True
    ),
}


def training_windows(values: np.ndarray, seq_length: int, horizon_steps: int, target: np.ndarray | None = None):
    """The notebook's windows: rows ``i .. i+seq_length-1`` -> target row ``i+seq_length+horizon_steps-1``.

    Like the notebook, ``len(values) - seq_length - horizon_steps`` windows.
    """
    values = np.asarray(values, np.float32)
    if values.ndim == 1:
        values = values[:, None]
    target = values[:, 0] if target is None else np.asarray(target, np.float32)
    count = len(values) - seq_length - horizon_steps
    if count <= 0:
        raise ValueError(f"{len(values)} rows are too few for windows of {seq_length} + {horizon_steps}")
    windows = np.lib.stride_tricks.sliding_window_view(values, seq_length, axis=0)[:count]
    x = np.ascontiguousarray(windows.transpose(0, 2, 1))
    y = target[seq_length + horizon_steps - 1 : seq_length + horizon_steps - 1 + count].copy()
    return x, y


@dataclass
class TrainOptions:
    seed: int = 1234
    epochs: int | None = None  # None: the spec's 100
    units: tuple[int, ...] | None = None  # None: the spec's (tests use tiny models)
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))


def build_model(spec: LstmSpec, units: tuple[int, ...]):
    import keras

    layers: list = [keras.Input((spec.seq_length, len(spec.features)))]
    for k, u in enumerate(units):
        layers += [keras.layers.LSTM(u, return_sequences=k < len(units) - 1), keras.layers.Dropout(spec.dropout)]
    layers += [keras.layers.Dense(1), keras.layers.Activation("linear")]
    model = keras.Sequential(layers)
    model.compile(loss="mean_squared_error", optimizer=keras.optimizers.Adam(spec.learning_rate), metrics=["mse"])
    return model


def export_net(model) -> LstmNet:
    """The Keras model's weights as the NumPy runtime's network."""
    import keras

    lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    return LstmNet([tuple(layer.get_weights()) for layer in lstms], tuple(dense.get_weights()))


def train(name: str, split: Split, out_dir: Path, options: TrainOptions | None = None) -> dict:
    """Train model ``name`` on ``split`` and write its artifact to ``out_dir/name``; returns the metadata."""
    import keras
    import tensorflow as tf

    opts = options or TrainOptions()
    spec = SPECS[name]
    units = tuple(opts.units or spec.units)
    epochs = opts.epochs or spec.epochs
    keras.utils.set_random_seed(opts.seed)
    tf.config.experimental.enable_op_determinism()

    feats = split.train[list(spec.features)].to_numpy(np.float64)
    scaler = None
    if spec.scaled:
        lo, hi = feats.min(axis=0), feats.max(axis=0)
        scaler = {"kind": "minmax", "fit_on": "train", "data_min": lo.tolist(), "data_max": hi.tolist()}
        feats = (feats - lo) / np.where(hi > lo, hi - lo, 1.0)
    x, y = training_windows(feats, spec.seq_length, spec.horizon_steps)
    opts.log(
        f"{name}: {len(x)} training windows {x.shape[1:]} from {len(split.train)} rows; units {units}, "
        f"up to {epochs} epochs, seed {opts.seed}"
    )

    model = build_model(spec, units)

    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            opts.log(
                f"{name}: epoch {epoch + 1}/{epochs}  loss {logs.get('loss', float('nan')):.5f}  "
                f"val_loss {logs.get('val_loss', float('nan')):.5f}"
            )

    started = time.perf_counter()
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=spec.batch_size,
        validation_split=spec.validation_split,
        verbose=0,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_loss", min_delta=0, patience=spec.patience, mode="min", restore_best_weights=True
            ),
            Progress(),
        ],
    )
    train_seconds = time.perf_counter() - started
    val_loss = history.history["val_loss"]
    best_epoch = int(np.argmin(val_loss)) + 1

    target = out_dir / name
    target.mkdir(parents=True, exist_ok=True)
    model.save(target / "model.keras")
    net = export_net(model)
    net.save_npz(target / "weights.npz")
    meta = {
        "name": name,
        **stamp(name, target / "weights.npz"),
        "target": "global_active_power",
        "features": list(spec.features),
        "seq_length": spec.seq_length,
        "horizon_steps": spec.horizon_steps,
        "padding": "pre",
        "scaler": scaler,
        "architecture": {"lstm_units": list(units), "dropout": spec.dropout, "dense": 1, "parameters": net.parameters},
        "training": {
            **{k: v for k, v in asdict(spec).items() if k not in ("name", "features", "units", "scaled")},
            "epochs": epochs,
            "optimizer": "adam",
            "loss": "mean_squared_error",
            "early_stopping": {"monitor": "val_loss", "patience": spec.patience, "restore_best_weights": True},
            "epochs_run": len(val_loss),
            "best_epoch": best_epoch,
            "windows": len(x),
            "seed": opts.seed,
            "seconds": round(train_seconds, 1),
        },
        "data_window": split.info,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "versions": versions(tensorflow=tf.__version__, keras=keras.__version__),
    }
    # Validation scores through the runtime the nodes use (NumPy forward pass).
    scores = write_with_validation(target, meta, LstmModel, split.val)
    plot_loss(meta, target / "loss.png")
    opts.log(
        f"{name}: best epoch {best_epoch}/{len(val_loss)}, validation MSE {scores.mse:.4f} (n={scores.n}); wrote {target}"
    )
    return meta


def plot_loss(meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = meta["history"]
    fig, ax = plt.subplots(figsize=(8, 5))
    epochs = np.arange(1, len(hist["loss"]) + 1)
    ax.plot(epochs, hist["loss"], label="training")
    ax.plot(epochs, hist["val_loss"], label="validation (5 % held out)")
    ax.axvline(meta["training"]["best_epoch"], color="grey", ls=":", label="best epoch (kept)")
    unit = "scaled GAP²" if meta.get("scaler") else "kW²"
    ax.set(title=f"{meta['name']}: training loss (MSE)", xlabel="epoch", ylabel=f"MSE ({unit})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
