"""LSTM forecasters, run from exported weights with NumPy.

Training uses Keras (``wattcast.training``); the artifact also holds the weights
as ``weights.npz`` so that a predictor node needs no TensorFlow: the forward pass
below is the Keras LSTM (gates i, f, c, o; sigmoid / tanh) in float32, batched
over any number of windows.  ``tests/test_training.py`` checks it against Keras.

Semantics follow the course: the input is the newest ``seq_length`` readings of
the model's features (min-max scaled if the artifact has a scaler), zero-padded at
the front ('pre') while fewer readings exist.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wattcast.contract import Reading
from wattcast.forecasters.base import Forecaster, Model


class ArtifactError(ValueError):
    """A model artifact that is missing or does not hold what it should."""


def _gates_last(w: np.ndarray, units: int) -> np.ndarray:
    """Keras gate order (i, f, c, o) -> (i, f, o, c), the sigmoid gates' columns halved.

    sigmoid(x) = (1 + tanh(x / 2)) / 2: with the i, f, o columns of the kernel,
    recurrent kernel and bias halved, one tanh over all four gates gives tanh(x / 2)
    for the sigmoid gates and tanh(x) for the cell gate.
    """
    i, f, c, o = (w[..., k * units : (k + 1) * units] for k in range(4))
    return np.ascontiguousarray(np.concatenate([i * 0.5, f * 0.5, o * 0.5, c], axis=-1), dtype=np.float32)


class LstmNet:
    """Stacked LSTM layers + Dense(1): the inference half of a Keras Sequential model."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray, np.ndarray]], dense: tuple) -> None:
        self.layers = [(k.astype(np.float32), r.astype(np.float32), b.astype(np.float32)) for k, r, b in layers]
        self.dense = (dense[0].astype(np.float32), dense[1].astype(np.float32))
        # The same weights reordered and scaled for one tanh call per step (see _gates_last).
        self._runtime = [tuple(_gates_last(w, r.shape[0]) for w in (k, r, b)) for k, r, b in self.layers]

    @classmethod
    def from_npz(cls, path: Path) -> LstmNet:
        with np.load(path) as z:
            n = int(z["n_lstm"])
            layers = [(z[f"lstm{i}_kernel"], z[f"lstm{i}_recurrent"], z[f"lstm{i}_bias"]) for i in range(n)]
            return cls(layers, (z["dense_kernel"], z["dense_bias"]))

    def save_npz(self, path: Path) -> None:
        arrays: dict[str, Any] = {"n_lstm": np.int64(len(self.layers))}
        for i, (k, r, b) in enumerate(self.layers):
            arrays |= {f"lstm{i}_kernel": k, f"lstm{i}_recurrent": r, f"lstm{i}_bias": b}
        arrays |= {"dense_kernel": self.dense[0], "dense_bias": self.dense[1]}
        np.savez(path, **arrays)

    @property
    def parameters(self) -> int:
        return sum(k.size + r.size + b.size for k, r, b in self.layers) + self.dense[0].size + self.dense[1].size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x: (batch, steps, features) -> (batch,)

        A predictor calls this with a handful of windows per reading, so the cost is
        NumPy's per-call overhead, not arithmetic: every step works in preallocated
        buffers through views made once (10 ufunc calls per step and layer).
        """
        seq = np.asarray(x, dtype=np.float32)
        batch, steps, _ = seq.shape
        last = len(self._runtime) - 1
        for n, (kernel, recurrent, bias) in enumerate(self._runtime):
            units = recurrent.shape[0]
            # all input projections at once, time first: xw[t] is contiguous
            xw = np.ascontiguousarray((seq @ kernel + bias).transpose(1, 0, 2))
            out = np.empty((steps, batch, units), np.float32) if n < last else None
            z = np.empty((batch, 4 * units), np.float32)
            sig, i, f, o, g = (
                z[:, : 3 * units],
                z[:, :units],
                z[:, units : 2 * units],
                z[:, 2 * units : 3 * units],
                z[:, 3 * units :],
            )
            h = np.zeros((batch, units), np.float32)
            c = np.zeros((batch, units), np.float32)
            tmp = np.empty((batch, units), np.float32)
            for t in range(steps):
                np.matmul(h, recurrent, out=z)
                z += xw[t]
                np.tanh(z, out=z)
                sig += 1.0  # (1 + tanh(x / 2)) / 2 = sigmoid(x)
                sig *= 0.5
                c *= f
                np.multiply(i, g, out=tmp)
                c += tmp
                np.tanh(c, out=tmp)
                np.multiply(o, tmp, out=h)
                if out is not None:
                    out[t] = h
            if out is not None:
                seq = out.transpose(1, 0, 2)
        return (h @ self.dense[0] + self.dense[1])[:, 0]


class LstmForecaster(Forecaster):
    model: LstmModel

    def __init__(self, model: LstmModel) -> None:
        super().__init__(model)
        self.window = np.zeros((model.seq_length, len(model.features)), np.float32)

    def learn_one(self, reading: Reading) -> None:
        row = np.array([getattr(reading, f) for f in self.model.features], np.float64)
        row = (row - self.model.scale_min) * self.model.scale_factor
        self.window[:-1] = self.window[1:]
        self.window[-1] = row
        self.seen += 1

    def query(self) -> np.ndarray | None:
        return self.window.copy() if self.seen >= self.model.min_readings else None


class LstmModel(Model):
    """An LSTM artifact directory: metadata.json + weights.npz (+ model.keras, loss.png)."""

    def __init__(self, directory: Path) -> None:
        directory = Path(directory)
        meta_path = directory / "metadata.json"
        try:
            self.metadata: dict[str, Any] = json.loads(meta_path.read_text())
            self.net = LstmNet.from_npz(directory / "weights.npz")
        except FileNotFoundError as exc:
            raise ArtifactError(f"model artifact incomplete: {exc.filename} not found") from None
        except (ValueError, KeyError) as exc:
            raise ArtifactError(f"model artifact {directory} is unreadable: {exc}") from None
        m = self.metadata
        self.directory = directory
        self.name = m["name"]
        self.version = m["version"]
        self.features: list[str] = m["features"]
        self.seq_length: int = m["seq_length"]
        self.horizon_s = int(m["horizon_steps"]) * 60
        scaler = m.get("scaler")
        n = len(self.features)
        if scaler:
            lo, hi = np.array(scaler["data_min"], float), np.array(scaler["data_max"], float)
            span = np.where(hi > lo, hi - lo, 1.0)
            self.scale_min, self.scale_factor = lo, 1.0 / span
            self.target_min, self.target_span = float(lo[0]), float(span[0])
        else:
            self.scale_min, self.scale_factor = np.zeros(n), np.ones(n)
            self.target_min, self.target_span = 0.0, 1.0
        if m.get("target") != "global_active_power" or self.features[0] != "global_active_power":
            raise ArtifactError(f"{directory}: the first feature and the target must be global_active_power")

    def new_forecaster(self) -> LstmForecaster:
        return LstmForecaster(self)

    def predict(self, queries: Sequence[np.ndarray]) -> np.ndarray:
        if len(queries) == 0:
            return np.empty(0)
        y = self.net(np.stack(queries)).astype(np.float64)
        return y * self.target_span + self.target_min

    def describe(self) -> dict[str, Any]:
        size = sum(p.stat().st_size for p in self.directory.iterdir() if p.suffix in (".keras", ".npz"))
        m = self.metadata
        return {
            "name": self.name,
            "version": self.version,
            "parameters": self.net.parameters,
            "size_bytes": size,
            "weights_bytes": (self.directory / "weights.npz").stat().st_size,
            "data_window": m.get("data_window"),
            "validation": m.get("validation"),
        }
