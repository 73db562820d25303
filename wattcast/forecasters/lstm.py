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

from wattcast.contract import READING_FIELDS, Reading
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


#: Bigger batches go layer after layer: the merged recurrence multiplies by zero blocks too.
WAVEFRONT_MAX_BATCH = 8


class LstmNet:
    """Stacked LSTM layers + Dense(1): the inference half of a Keras Sequential model."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray, np.ndarray]], dense: tuple) -> None:
        self.layers = [(k.astype(np.float32), r.astype(np.float32), b.astype(np.float32)) for k, r, b in layers]
        self.dense = (dense[0].astype(np.float32), dense[1].astype(np.float32))
        # The same weights reordered and scaled for one tanh call per step (see _gates_last),
        # the layers merged into one recurrence (see _merged).
        self._runtime = [tuple(_gates_last(w, r.shape[0]) for w in (k, r, b)) for k, r, b in self.layers]
        self._input, self._recurrent, self._bias, self._offsets = _merged(self._runtime)

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
        NumPy's per-call overhead, not arithmetic.  For such small batches the stacked
        layers run as one recurrence over all their units, layer ``l`` one step behind
        layer ``l - 1`` (a wavefront: ``steps + layers - 1`` steps instead of ``steps *
        layers``; measured about half the CPU time per call for 1 to 4 windows).  Every
        step works in preallocated buffers through views made once (10 ufunc calls).
        """
        seq = np.asarray(x, dtype=np.float32)
        batch, steps, _ = seq.shape
        if batch > WAVEFRONT_MAX_BATCH:
            return self._layered(seq)
        offsets = self._offsets
        layers = len(offsets)
        units = self._recurrent.shape[0]
        # the inputs of every step: the first layer's projections, every layer's bias
        inputs = np.empty((steps + layers - 1, batch, 4 * units), np.float32)
        inputs[:] = self._bias
        inputs[:steps] += seq.transpose(1, 0, 2) @ self._input
        cell = _Cell(batch, units)
        for step in range(steps + layers - 1):
            cell.step(self._recurrent, inputs[step])
            if step < layers - 1:  # the later layers have not started: their state stays zero
                cell.h[:, offsets[step + 1] :] = 0.0
                cell.c[:, offsets[step + 1] :] = 0.0
        return (cell.h[:, offsets[-1] :] @ self.dense[0] + self.dense[1])[:, 0]

    def _layered(self, seq: np.ndarray) -> np.ndarray:
        """Layer after layer: fewer operations than the wavefront, more NumPy calls (big batches)."""
        batch, steps, _ = seq.shape
        last = len(self._runtime) - 1
        for n, (kernel, recurrent, bias) in enumerate(self._runtime):
            units = recurrent.shape[0]
            # all input projections at once, time first: xw[t] is contiguous
            xw = np.ascontiguousarray((seq @ kernel + bias).transpose(1, 0, 2))
            out = np.empty((steps, batch, units), np.float32) if n < last else None
            cell = _Cell(batch, units)
            for t in range(steps):
                cell.step(recurrent, xw[t])
                if out is not None:
                    out[t] = cell.h
            if out is not None:
                seq = out.transpose(1, 0, 2)
        return (cell.h @ self.dense[0] + self.dense[1])[:, 0]


class _Cell:
    """The state and buffers of one LSTM recurrence: a step is 10 NumPy calls in place, through
    views of the gates made once (weights in the order and scale of :func:`_gates_last`)."""

    def __init__(self, batch: int, units: int) -> None:
        self.z = z = np.empty((batch, 4 * units), np.float32)
        self.sig, self.i, self.f, self.o, self.g = (
            z[:, : 3 * units],
            z[:, :units],
            z[:, units : 2 * units],
            z[:, 2 * units : 3 * units],
            z[:, 3 * units :],
        )
        self.h = np.zeros((batch, units), np.float32)
        self.c = np.zeros((batch, units), np.float32)
        self.tmp = np.empty((batch, units), np.float32)

    def step(self, recurrent: np.ndarray, inputs: np.ndarray) -> None:
        """h, c <- one step from h, c and ``inputs`` (the input projection and bias of this step)."""
        z, c, tmp = self.z, self.c, self.tmp
        np.matmul(self.h, recurrent, out=z)
        z += inputs
        np.tanh(z, out=z)
        self.sig += 1.0  # (1 + tanh(x / 2)) / 2 = sigmoid(x)
        self.sig *= 0.5
        c *= self.f
        np.multiply(self.i, self.g, out=tmp)
        c += tmp
        np.tanh(c, out=tmp)
        np.multiply(self.o, tmp, out=self.h)


def _merged(layers: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Stacked LSTM layers as one recurrence over all their units.

    The state ``h`` holds every layer's units side by side (layer ``l`` from
    ``offsets[l]``), and each gate block of the merged weights every layer's
    columns of that gate.  The recurrent matrix carries each layer's recurrent kernel
    on its diagonal block and, above it, each later layer's input kernel: one step
    advances layer 0 to time ``t`` and layer ``l`` to time ``t - l`` from the states
    of the step before.  Returns (first layer's input kernel, merged recurrent kernel,
    merged bias, offsets), gates in the order of :func:`_gates_last`.
    """
    sizes = [r.shape[0] for _, r, _ in layers]
    offsets = [int(sum(sizes[:n])) for n in range(len(sizes))]
    total = int(sum(sizes))
    kernel0 = np.zeros((layers[0][0].shape[0], 4 * total), np.float32)
    recurrent = np.zeros((total, 4 * total), np.float32)
    bias = np.zeros(4 * total, np.float32)
    for n, ((kernel, rec, b), size, at) in enumerate(zip(layers, sizes, offsets, strict=True)):
        for gate in range(4):
            cols = slice(gate * total + at, gate * total + at + size)
            own = slice(gate * size, (gate + 1) * size)
            recurrent[at : at + size, cols] = rec[:, own]
            bias[cols] = b[own]
            if n == 0:
                kernel0[:, cols] = kernel[:, own]
            else:
                prev = offsets[n - 1]
                recurrent[prev : prev + sizes[n - 1], cols] = kernel[:, own]
    return kernel0, recurrent, bias, offsets


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
        self.needs = tuple(self.features)
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
        unknown = [f for f in self.features if f not in READING_FIELDS]
        if unknown:
            raise ArtifactError(f"{directory}: feature(s) {', '.join(unknown)} are no measurements of a reading")

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
