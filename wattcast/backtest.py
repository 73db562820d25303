"""``wattcast backtest``: the models on many 1 % windows of the data set, each scored against persistence.

One window per seed (the notebook's split: a contiguous block of ``--fraction`` of the
cleaned rows, its last 20 % the validation part).  Every model is scored on each
window's validation part with the streaming protocol of ``wattcast evaluate`` (the same
scoring rule as the live collector).  Skill = 1 - MSE / MSE of persistence on the same
window.  Printed as a table (per window, then mean and minimum skill and windows won per
model) and written as JSON and a plot.

Models that learn only from the stream (``persistence``, ``linear``) need nothing per
window.  ``rls`` starts from streaming each window's training split, ``gbm`` is trained on it and ``gbm-history`` on the
200,000 readings before each window's validation start, as ``wattcast train`` does for
the shipped ones; the boosters are cached in ``<out>/cache`` (keyed by data file, window,
parameters and features), so a second backtest of the same windows trains nothing.
The LSTMs (``--models lstm lstm-augmented``, TensorFlow) are trained per window with the
course's recipe (``--lstm-epochs`` caps the epochs) and cached as artifacts in ``<out>/cache``:
about a minute of CPU per window and model, so they are not in the default set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattcast.data import DEFAULT_FRACTION, DataError, Split, read_meter_file, split_frame
from wattcast.evaluation import evaluate
from wattcast.forecasters import Model, load_model

if TYPE_CHECKING:
    import pandas as pd

#: models that learn only from the stream they forecast: nothing to train per window
STREAM_MODELS = ("persistence", "linear")
#: models trained per window (cached)
WINDOW_MODELS = ("gbm", "gbm-history", "rls", "lstm", "lstm-augmented")
BACKTEST_MODELS = STREAM_MODELS + WINDOW_MODELS
#: the seeds the project tunes on (issue 12); judge a model on others
TUNING_SEEDS = (1234, 2, 3, 6)


def backtest(
    path: Path,
    seeds: list[int],
    models: list[str],
    fraction: float,
    mu: float,
    progress: Callable[[str], None],
    cache: Path,
    lstm_epochs: int | None = None,
) -> dict[str, Any]:
    """Score ``models`` on the window of every seed; per window MSE and skill, and the summary."""
    df = read_meter_file(path)  # once: each window is a slice of it
    loaded = {name: load_model(name, None, mu=mu) for name in models if name in STREAM_MODELS}
    windows = []
    for k, seed in enumerate(seeds, 1):
        split = split_frame(df, fraction, seed, str(path))
        for name in models:
            if name in WINDOW_MODELS:
                progress(f"backtest: window {k}/{len(seeds)} (seed {seed}): {name}")
                loaded[name] = window_model(name, df, split, path, cache, lstm_epochs)
        scores = {name: evaluate(loaded[name], split.val) for name in models}
        base = scores["persistence"].mse
        windows.append(
            {
                "seed": seed,
                "val_window": split.info["val_window"],
                "n": scores["persistence"].n,
                "mse": {name: s.mse for name, s in scores.items()},
                "skill": {name: (1.0 - s.mse / base) if base > 0 else 0.0 for name, s in scores.items()},
            }
        )
        progress(f"backtest: window {k}/{len(seeds)} (seed {seed}) done")
    summary = {
        name: {
            "mean_skill": statistics.fmean(w["skill"][name] for w in windows),
            "min_skill": min(w["skill"][name] for w in windows),
            "windows_won": sum(1 for w in windows if w["mse"][name] < w["mse"]["persistence"]),
            "mean_mse": statistics.fmean(w["mse"][name] for w in windows),
        }
        for name in models
    }
    return {"source": str(path), "fraction": fraction, "seeds": seeds, "windows": windows, "summary": summary}


def window_model(name: str, df: pd.DataFrame, split: Split, path: Path, cache: Path, lstm_epochs: int | None) -> Model:
    """``name`` trained for this window (its training split, or the history before its validation start), cached."""
    if name == "rls":  # streaming the training split: a few seconds, nothing to cache
        from wattcast.rls_training import trained_rls

        return trained_rls(split)
    from wattcast.forecasters.features import FEATURES
    from wattcast.forecasters.gbm import GbmModel, import_lightgbm
    from wattcast.gbm_training import PARAMS, ROUNDS, fit, history_frame

    stat = path.stat()
    recipe = [name, str(path.resolve()), stat.st_size, stat.st_mtime_ns, split.info["start_index"], split.info["val_rows"]]
    if name.startswith("lstm"):
        return _window_lstm(name, split, cache, recipe, lstm_epochs)
    key = hashlib.sha256(json.dumps([recipe, PARAMS, ROUNDS, FEATURES]).encode()).hexdigest()[:16]
    file = cache / f"{name}-seed{split.info['seed']}-{key}.txt"
    lightgbm = import_lightgbm()
    if file.is_file():
        booster = lightgbm.Booster(model_file=str(file))
    else:
        frame = split.train if name == "gbm" else history_frame(df, split)
        booster, _ = fit(frame)
        cache.mkdir(parents=True, exist_ok=True)
        booster.save_model(str(file.with_suffix(".tmp")))
        file.with_suffix(".tmp").replace(file)
    return GbmModel.of_booster(booster, name, f"{name}-backtest-{key}")


def _window_lstm(name: str, split: Split, cache: Path, recipe: list, epochs: int | None) -> Model:
    """The course's LSTM ``name`` trained on this window's training split (TensorFlow), cached as an artifact."""
    from wattcast.forecasters.lstm import LstmModel

    try:
        from wattcast.training import SPECS, TrainOptions, train
    except ImportError as exc:
        raise DataError(
            f"the LSTMs train per window with TensorFlow ({exc.name} is missing): pip install 'wattcast[train]'"
        ) from None
    key = hashlib.sha256(json.dumps([recipe, repr(SPECS[name]), epochs]).encode()).hexdigest()[:16]
    folder = cache / f"{name}-seed{split.info['seed']}-{key}"
    if not (folder / name / "metadata.json").is_file():
        train(name, split, folder, TrainOptions(seed=1234, epochs=epochs, log=lambda line: None))
    return LstmModel(folder / name)


def table(result: dict[str, Any]) -> str:
    models = list(result["summary"])
    lines = [f"{'seed':>6}  {'validation window':<41}" + "".join(f"{m:>14}" for m in models) + "   (MSE kW², skill)"]
    for w in result["windows"]:
        cells = "".join(f" {w['mse'][m]:>7.4f} {w['skill'][m]:>+5.0%}" for m in models)
        lines.append(f"{w['seed']:>6}  {w['val_window'][0] + ' .. ' + w['val_window'][1]:<41}{cells}")
    n = len(result["windows"])
    for label, key, fmt in (("mean skill", "mean_skill", "{:>+14.1%}"), ("min skill", "min_skill", "{:>+14.1%}")):
        lines.append(f"{label:>49}" + "".join(fmt.format(result["summary"][m][key]) for m in models))
    lines.append(f"{'windows won':>49}" + "".join(f"{result['summary'][m]['windows_won']:>11}/{n:<2}" for m in models))
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in result["summary"] if m != "persistence"]
    seeds = [str(w["seed"]) for w in result["windows"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(seeds) * max(1, len(models))), 4))
    width = 0.8 / max(1, len(models))
    for k, m in enumerate(models):
        xs = [i + k * width for i in range(len(seeds))]
        ax.bar(xs, [100 * w["skill"][m] for w in result["windows"]], width, label=m)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(seeds))], seeds)
    ax.set_xlabel("window (seed)")
    ax.set_ylabel("skill against persistence (%)")
    ax.set_title("MSE skill per window: above 0 beats persistence")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def default_data() -> Path | None:
    from wattcast.download import ARCHIVE_NAME, default_cache_dir

    path = default_cache_dir() / ARCHIVE_NAME
    return path if path.is_file() else None


def add_backtest_args(p: argparse.ArgumentParser, data_env: str | None) -> None:
    p.add_argument(
        "--data",
        default=data_env,
        help="the full UCI data set (default: $WATTCAST_DATA, else the one 'wattcast data download' fetched)",
    )
    p.add_argument(
        "--seeds", nargs="+", type=int, default=None, help=f"windows by seed (default {' '.join(map(str, TUNING_SEEDS))})"
    )
    p.add_argument("--windows", type=int, default=None, help="windows of seeds 1 .. N instead of --seeds")
    p.add_argument("--fraction", type=float, default=DEFAULT_FRACTION, help="window size as a share of the rows")
    p.add_argument(
        "--models",
        nargs="+",
        choices=BACKTEST_MODELS,
        default=["persistence", "linear", "gbm", "rls"],
        metavar="MODEL",
        help=f"models ({', '.join(BACKTEST_MODELS)}; default: persistence linear gbm rls; gbm-history trains "
        "on 200,000 readings per window: about 30 CPU s each; the LSTMs need TensorFlow, ~1 min each)",
    )
    p.add_argument("--mu", type=float, default=0.9, help="forgetting factor of the linear model")
    p.add_argument(
        "--lstm-epochs",
        type=int,
        default=None,
        help="the LSTMs: at most this many epochs per window (default: the course's 100)",
    )
    p.add_argument("--out", default="backtest", help="folder for backtest.json and backtest.png (default %(default)s)")


def backtest_command(args: argparse.Namespace) -> int:
    path = Path(args.data) if args.data else default_data()
    if path is None:
        raise DataError("backtest needs the full data set: wattcast data download, or --data FILE")
    if args.windows is not None and args.windows < 1:
        raise ValueError(f"--windows must be at least 1, got {args.windows}")
    seeds = list(range(1, args.windows + 1)) if args.windows else (args.seeds or list(TUNING_SEEDS))
    models = ["persistence", *[m for m in args.models if m != "persistence"]]
    tty = sys.stderr.isatty()

    def progress(line: str) -> None:
        print(("\r" + line + " " * 8) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    out = Path(args.out)
    result = backtest(path, seeds, models, args.fraction, args.mu, progress, out / "cache", args.lstm_epochs)
    if tty:
        print(file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    (out / "backtest.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "backtest.png")
    print(table(result))
    print(f"wrote {out / 'backtest.json'} and {out / 'backtest.png'}", file=sys.stderr)
    return 0
