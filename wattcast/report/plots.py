"""The report's figures (matplotlib, PNG), drawn from one run of the store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from wattcast.report.data import ReportData
from wattcast.scoring import rolling_mse
from wattcast.store import RunReader

DPI = 100
#: file name -> (width, height) in inches; the PNG is width*DPI x height*DPI pixels
FIGURES: dict[str, tuple[float, float]] = {
    "predicted_vs_actual.png": (12.0, 9.0),
    "predicted_vs_actual_last500.png": (12.0, 9.0),
    "rolling_mse.png": (12.0, 4.5),
    "error_distribution.png": (12.0, 6.0),
    "skill_by_hour.png": (12.0, 4.5),
    "loss_curves.png": (12.0, 4.0),
    "accuracy_vs_cost.png": (12.0, 4.5),
}
CLOSE_UP_MINUTES = 500
COLORS = {
    "lstm": "tab:blue",
    "lstm-augmented": "tab:purple",
    "gbm": "tab:red",
    "gbm-history": "tab:brown",
    "rls": "tab:olive",
    "linear": "tab:orange",
    "persistence": "tab:green",
}


def figure(name: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGURES[name], dpi=DPI, layout="constrained")
    return fig


def save(fig, out: Path, name: str) -> Path:
    path = out / name
    fig.savefig(path, dpi=DPI, format="png")
    return path


def dt(ts: np.ndarray) -> np.ndarray:
    return np.asarray(ts, dtype=np.int64).astype("datetime64[s]")


def date_axis(ax) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def plot_predicted(reader: RunReader, data: ReportData, out: Path, name: str, last_minutes: int | None) -> Path:
    actual, predicted = reader.series(data.plot_house, data.models)
    fig = figure(name)
    axes = fig.subplots(len(data.models), 1, sharex=True, squeeze=False)[:, 0]
    lo: float | None = None
    hi: float = 0.0
    if last_minutes is not None and len(actual):
        hi = float(actual[-1, 0])
        lo = hi - last_minutes * 60
    span = f"last {last_minutes} minutes" if last_minutes else "whole replay"
    for ax, model in zip(axes, data.models, strict=True):
        a, p = actual, predicted[model]
        if lo is not None:
            a = a[a[:, 0] >= lo]
            p = p[(p[:, 0] >= lo) & (p[:, 0] <= hi + 300)]
        width = 0.6 if last_minutes is None else 1.0
        ax.plot(dt(a[:, 0]), a[:, 1], color="0.35", lw=width, label="actual")
        ax.plot(
            dt(p[:, 0]),
            p[:, 1],
            color=COLORS.get(model, "tab:red"),
            lw=width,
            alpha=0.85,
            label=f"{model} forecast (5 min ahead)",
        )
        ax.set_ylabel("GAP (kW)")
        ax.set_title(model, loc="left", fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
        date_axis(ax)
    axes[-1].set_xlabel("meter time (target of the forecast)")
    fig.suptitle(f"Forecast vs actual global active power, house {data.plot_house}, {span}")
    return save(fig, out, name)


def plot_rolling(reader: RunReader, data: ReportData, out: Path) -> Path:
    name = "rolling_mse.png"
    fig = figure(name)
    ax = fig.subplots()
    by_model = reader.errors(data.plot_house)
    for model in data.models:
        m = by_model.get(model)
        if m is None or not len(m):
            continue
        r = rolling_mse(m[:, 0], m[:, 1], data.window_s)
        ax.plot(
            dt(m[:, 0]), r, color=COLORS.get(model), lw=1.2, label=f"{model} (cumulative MSE {np.mean(m[:, 1] ** 2):.4f})"
        )
    ax.set_ylabel("rolling MSE (kW²)")
    ax.set_xlabel("meter time (target of the forecast)")
    ax.set_title(f"Rolling MSE over {data.window_s // 60} minutes of event time, house {data.plot_house}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    date_axis(ax)
    return save(fig, out, name)


def plot_errors(reader: RunReader, data: ReportData, out: Path) -> Path:
    name = "error_distribution.png"
    fig = figure(name)
    by_model = reader.errors()
    allerr = np.concatenate([v[:, 1] for v in by_model.values()]) if by_model else np.zeros(1)
    lo, hi = np.percentile(allerr, [0.5, 99.5]) if allerr.size else (-1.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 61)
    ncols = 2 if len(data.models) > 1 else 1
    nrows = math.ceil(len(data.models) / ncols)
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False).ravel()
    for ax, model in zip(axes, data.models, strict=False):
        e = by_model.get(model, np.zeros((0, 2)))[:, 1]
        if e.size:
            outside = int(np.sum((e < lo) | (e > hi)))
            ax.hist(np.clip(e, lo, hi), bins=bins, color=COLORS.get(model), alpha=0.8)
            ax.axvline(0.0, color="0.2", lw=0.8)
            ax.axvline(float(e.mean()), color="k", lw=1, ls="--", label=f"mean {e.mean():+.3f} kW")
            ax.legend(
                fontsize=8,
                loc="upper right",
                title=f"n {e.size}, MAE {np.abs(e).mean():.3f} kW" + (f", {outside} clipped" if outside else ""),
                title_fontsize=8,
            )
        ax.set_title(model, loc="left", fontsize=10)
        ax.set_ylabel("matched forecasts")
        ax.grid(alpha=0.3)
    for ax in axes[len(data.models) :]:
        ax.set_visible(False)
    for ax in axes[-ncols:]:
        ax.set_xlabel("forecast − actual (kW)")
    houses = f"all {len(data.houses)} houses" if len(data.houses) > 1 else f"house {data.plot_house}"
    fig.suptitle(f"Error distribution per model ({houses}; edges hold the 1% beyond the 0.5-99.5 percentiles)")
    return save(fig, out, name)


def skill_and_hours(by_model: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Per model: skill against persistence (1 - MSE / MSE of persistence over the same run; absent without
    persistence) and the MSE of the forecasts whose target falls in each hour of the day (NaN: none)."""
    mse = {m: float(np.mean(e[:, 1] ** 2)) for m, e in by_model.items() if len(e)}
    base = mse.get("persistence")
    skill = {m: 1.0 - v / base for m, v in mse.items()} if base else {}
    hours: dict[str, np.ndarray] = {}
    for m, e in by_model.items():
        hour = (e[:, 0].astype(np.int64) // 3600) % 24
        sums = np.bincount(hour, weights=e[:, 1] ** 2, minlength=24)
        counts = np.bincount(hour, minlength=24)
        hours[m] = np.divide(sums, counts, out=np.full(24, np.nan), where=counts > 0)
    return skill, hours


def plot_skill_by_hour(reader: RunReader, data: ReportData, out: Path) -> Path:
    name = "skill_by_hour.png"
    fig = figure(name)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1, 2])
    skill, hours = skill_and_hours(reader.errors())
    models = [m for m in data.models if m in hours]
    shown = [m for m in models if m in skill and m != "persistence"]
    if shown:
        bars = ax1.barh(shown, [100 * skill[m] for m in shown], color=[COLORS.get(m, "0.5") for m in shown])
        ax1.bar_label(bars, labels=[f"{100 * skill[m]:+.1f} %" for m in shown], fontsize=8, padding=3)
        ax1.axvline(0.0, color="0.2", lw=0.8)
        ax1.invert_yaxis()
        values = [100 * skill[m] for m in shown]
        lo, hi = min(0.0, *values), max(0.0, *values)
        pad = 0.35 * (hi - lo or 1.0)  # room for the labels on either side
        ax1.set_xlim(lo - (pad if lo < 0 else 0.1 * pad), hi + (pad if hi > 0 else 0.1 * pad))
    else:
        ax1.text(
            0.5, 0.5, "no persistence in this run:\nno skill to show", ha="center", va="center", transform=ax1.transAxes
        )
    ax1.set_xlabel("skill against persistence (%), 1 - MSE / MSE of persistence")
    ax1.set_title("Skill (right of 0 beats persistence)", loc="left", fontsize=10)
    for m in models:
        ax2.plot(np.arange(24), hours[m], marker="o", ms=3, color=COLORS.get(m), label=m)
    ax2.set_xticks(range(0, 24, 2))
    ax2.set_xlabel("hour of the day of the target (meter clock)")
    ax2.set_ylabel("MSE (kW²)")
    ax2.set_title("Error by hour of the day", loc="left", fontsize=10)
    ax2.legend(fontsize=8, ncols=2)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    houses = f"all {len(data.houses)} houses" if len(data.houses) > 1 else f"house {data.plot_house}"
    fig.suptitle(f"Which model, and when it errs ({houses})")
    return save(fig, out, name)


def plot_loss(data: ReportData, out: Path) -> Path | None:
    if not data.loss:
        return None
    name = "loss_curves.png"
    fig = figure(name)
    axes = fig.subplots(1, len(data.loss), squeeze=False)[0]
    for ax, (model, info) in zip(axes, data.loss.items(), strict=True):
        h = info["history"]
        epochs = np.arange(1, len(h["loss"]) + 1)
        ax.plot(epochs, h["loss"], color=COLORS.get(model), label="training loss")
        if h.get("val_loss"):
            ax.plot(epochs[: len(h["val_loss"])], h["val_loss"], color="0.3", ls="--", label="validation loss")
        best = info.get("best_epoch")
        if best:
            ax.axvline(best, color="tab:red", lw=0.8, ls=":", label=f"best epoch {best} (weights kept)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("MSE (min-max scaled target)²" if info["scaled"] else "MSE (kW²)")
        ax.set_title(f"{model} ({info['version']})", loc="left", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Training loss of the LSTM models (from the artifacts' metadata)")
    return save(fig, out, name)


def plot_cost(data: ReportData, out: Path) -> Path:
    name = "accuracy_vs_cost.png"
    fig = figure(name)
    ax1, ax2 = fig.subplots(1, 2)
    for model in data.models:
        row = next(r for r in data.aggregate if r.model == model)
        cost = data.costs[model]
        if row.mse is None:
            continue
        color = COLORS.get(model)
        if cost.parameters is not None:
            ax1.scatter([cost.parameters], [row.mse], s=60, color=color, label=model)
            ax1.annotate(model, (cost.parameters, row.mse), textcoords="offset points", xytext=(6, 4), fontsize=8)
        if cost.latency_p50_ms is not None:
            ax2.errorbar(
                [cost.latency_p50_ms],
                [row.mse],
                fmt="o",
                color=color,
                label=model,
                xerr=[[0], [max(0.0, (cost.latency_p99_ms or cost.latency_p50_ms) - cost.latency_p50_ms)]],
            )
            ax2.annotate(model, (cost.latency_p50_ms, row.mse), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax1.set_xscale("symlog", linthresh=1)
    ax1.set_xlabel("parameters (symlog)")
    ax1.set_ylabel("MSE (kW²), all houses" if len(data.houses) > 1 else "MSE (kW²)")
    ax1.set_title("Accuracy vs model size (lower left is better)", loc="left", fontsize=10)
    ax2.set_xlabel("inference latency p50 (ms), bar to p99")
    ax2.set_ylabel("MSE (kW²)")
    ax2.set_title("Accuracy vs latency, reading sent -> forecast stored", loc="left", fontsize=10)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy and cost of each model, as measured in the run")
    return save(fig, out, name)
