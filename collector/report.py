"""The offline report: accuracy and cost of every model, from the collector's store alone.

``build_report(db, out, run=None)`` reads one run of a collector SQLite store (a
finished ``wattcast run``, the compose volume, or a copy of either; opened without
writing to it; the newest run unless ``run`` names one) and writes into ``out``:

* ``report.html``: one self-contained file, every plot embedded as a base64 PNG;
* ``report.md``: the same tables, the plots referenced as the PNG files beside it;
* the plots (``FIGURES`` gives each one's size in inches, at ``DPI``):
  predicted vs actual over the whole replay and over its last 500 minutes, the
  rolling MSE of every model on one chart, the error distribution per model, the
  training loss curves of the LSTM models and accuracy against cost.

Where the numbers come from:

* n, MSE, RMSE, MAE, unmatched, pending: the ``summary`` table the collector writes
  at the end of the stream (if the run has not finished: the ``matches`` table, and
  forecasts without a match whose target is not after the house's newest reading);
  the aggregate of several houses is pooled (n-weighted);
* skill: ``1 - MSE / MSE(persistence)`` of the same house (or of the aggregate);
* inference latency: ``forecasts.received_at - forecasts.reading_sent_at`` (wall clock
  of this machine: reading published -> forecast stored), p50 / p99 per model;
* size on disk and parameters: the model's ``describe()`` (the artifact in
  ``models_dir`` for LSTMs, used only if its version is the one the run forecast with);
* node memory (``rss_kb``) and start-up time (``startup_ms``): the counters of the
  predictor node's newest status in the ``nodes`` table;
* training loss curves: the artifact's ``metadata.json`` history, if its version
  matches ``forecasts.model_version``.

Anything missing is shown as "n/a" with a note, never a failure.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from collector.store import StoreError, check_layout, run_stats, runs, select_run, view_run
from wattcast.messages import MODELS

DPI = 100
#: file name -> (width, height) in inches; the PNG is width*DPI x height*DPI pixels
FIGURES: dict[str, tuple[float, float]] = {
    "predicted_vs_actual.png": (12.0, 9.0),
    "predicted_vs_actual_last500.png": (12.0, 9.0),
    "rolling_mse.png": (12.0, 4.5),
    "error_distribution.png": (12.0, 6.0),
    "loss_curves.png": (12.0, 4.0),
    "accuracy_vs_cost.png": (12.0, 4.5),
}
CLOSE_UP_MINUTES = 500
#: a model whose MSE is within this share of the best one counts as "as accurate"
NEAR_BEST = 0.10
#: fewer matched forecasts than this per model: the ranking comes with a warning
FEW_MATCHES = 1000
LSTM_MODELS = ("lstm", "lstm-augmented")
COLORS = {"lstm": "tab:blue", "lstm-augmented": "tab:purple", "linear": "tab:orange", "persistence": "tab:green"}
ALL = "all"

# Columns of the tables: (key, heading, kind); kind picks the formatting.
ACCURACY_COLUMNS = [
    ("n", "n", "int"),
    ("mse", "MSE (kW²)", "f4"),
    ("rmse", "RMSE (kW)", "f4"),
    ("mae", "MAE (kW)", "f4"),
    ("skill", "skill vs persistence", "f3"),
    ("unmatched", "unmatched", "int"),
    ("pending", "pending", "int"),
]
COST_COLUMNS = [
    ("latency_p50_ms", "latency p50 (ms)", "f1"),
    ("latency_p99_ms", "latency p99 (ms)", "f1"),
    ("size_bytes", "size on disk", "bytes"),
    ("parameters", "parameters", "int"),
    ("rss_kb", "node memory (RSS)", "kb"),
    ("startup_ms", "node start-up (s)", "ms_as_s"),
]


# ------------------------------------------------------------------------------ data

@dataclass
class Row:
    house: str
    model: str
    n: int
    mse: float | None
    rmse: float | None
    mae: float | None
    unmatched: int | None
    pending: int | None
    skill: float | None = None

    def get(self, key: str) -> Any:
        return getattr(self, key)


@dataclass
class Cost:
    model: str
    versions: list[str] = field(default_factory=list)
    latency_n: int = 0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    size_bytes: int | None = None
    weights_bytes: int | None = None
    parameters: int | None = None
    rss_kb: int | None = None
    startup_ms: int | None = None
    node: str | None = None

    def get(self, key: str) -> Any:
        return getattr(self, key)


@dataclass
class ReportData:
    db: Path
    models: list[str]
    houses: list[str]
    plot_house: str
    window_s: int
    aggregate: list[Row]
    per_house: list[Row]
    costs: dict[str, Cost]
    loss: dict[str, dict[str, Any]]
    facts: dict[str, Any]
    notes: list[str]
    from_summary: bool


def open_store(db: Path, run: str | None = None) -> tuple[sqlite3.Connection, str]:
    """The store, opened for reading only and showing only ``run`` (default: the newest), and that
    run; ValueError / FileNotFoundError with one line if it is not a store or lacks the run."""
    db = Path(db)
    if not db.exists():
        raise FileNotFoundError(f"no collector store at {db}")
    if db.is_dir():
        raise ValueError(f"{db} is a folder, not a collector store (give the .db file)")
    if db.stat().st_size == 0:
        raise ValueError(f"{db} is empty, not a collector store")
    uri = db.resolve().as_uri()
    con = None
    for mode in ("rw", "ro"):  # rw only so that SQLite removes its -wal/-shm files on close; nothing is written
        try:
            con = sqlite3.connect(f"{uri}?mode={mode}", uri=True)
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            break
        except sqlite3.DatabaseError as exc:
            if con is not None:
                con.close()
                con = None
            if mode == "ro" or "not a database" in str(exc) or "malformed" in str(exc):
                raise ValueError(f"{db} is not a readable SQLite database: {exc}") from None
    assert con is not None
    missing = {"readings", "forecasts", "matches"} - tables
    if missing:
        con.close()
        raise ValueError(f"{db} is not a wattcast collector store (no {', '.join(sorted(missing))} table)")
    try:
        check_layout(con, db)
        run = select_run(con, run)
        view_run(con, run)  # temporary views: every query below sees this run only
        con.execute("PRAGMA query_only = ON")
    except StoreError as exc:
        con.close()
        raise ValueError(f"{db}: {exc}" if str(db) not in str(exc) else str(exc)) from None
    return con, run


def list_runs(db: Path) -> list[str]:
    """One line per run of the store, oldest first: id, readings, scored or not (ValueError if not a store)."""
    con, newest = open_store(db)
    try:
        return [f"{r['run']}  {r['readings']:>9,} readings  "
                f"{'scored ' + _when_wall(r['finished_at']) if r['finished_at'] else 'not scored (yet)'}"
                + ("  (newest)" if r["run"] == newest else "") for r in runs(con)]
    finally:
        con.close()


def _when_wall(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _scalar(con: sqlite3.Connection, sql: str, *args: Any) -> Any:
    return con.execute(sql, args).fetchone()[0]


def _meta(con: sqlite3.Connection) -> dict[str, Any]:
    try:
        return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
    except sqlite3.DatabaseError:
        return {}


def _table_exists(con: sqlite3.Connection, name: str) -> bool:
    return _scalar(con, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", name) > 0


def _node_model(node: str) -> str | None:
    """"predictor-<model>" or "predictor-<model>-<pid>" -> model (careful: lstm is a prefix of lstm-augmented)."""
    if not node.startswith("predictor-"):
        return None
    rest = node[len("predictor-"):]
    if rest in MODELS:
        return rest
    m = re.fullmatch(r"(.+)-\d+", rest)
    return m.group(1) if m and m.group(1) in MODELS else None


def _rows_from_matches(con: sqlite3.Connection) -> list[Row]:
    """Per (house, model) scores when the collector has not written its summary (run not finished)."""
    newest = dict(con.execute("SELECT house, MAX(ts) FROM readings GROUP BY house"))
    scores = {(h, m): (n, mse, mae) for h, m, n, mse, mae in con.execute(
        "SELECT house, model, COUNT(*), AVG(error * error), AVG(ABS(error)) FROM matches GROUP BY house, model")}
    open_counts: dict[tuple[str, str], list[int]] = {}
    for house, model, target in con.execute(
            "SELECT f.house, f.model, f.target_ts FROM forecasts f LEFT JOIN matches m "
            "ON f.house = m.house AND f.model = m.model AND f.issued_at = m.issued_at WHERE m.house IS NULL"):
        c = open_counts.setdefault((house, model), [0, 0])
        c[0 if target <= newest.get(house, -1) else 1] += 1
    keys = set(scores) | set(open_counts) | {
        (h, m) for h, m in con.execute("SELECT DISTINCT house, model FROM forecasts")}
    rows = []
    for house, model in sorted(keys):
        n, mse, mae = scores.get((house, model), (0, None, None))
        unmatched, pending = open_counts.get((house, model), [0, 0])
        rows.append(Row(house, model, n, mse, math.sqrt(mse) if mse is not None else None, mae, unmatched, pending))
    return rows


def _pool(model: str, rows: list[Row]) -> Row:
    n = sum(r.n for r in rows)
    scored = [r for r in rows if r.n and r.mse is not None]
    if n and scored:
        mse = sum(r.n * r.mse for r in scored) / n
        mae = sum(r.n * (r.mae or 0.0) for r in scored) / n
        rmse: float | None = math.sqrt(mse)
    else:
        mse = mae = rmse = None
    unmatched = None if any(r.unmatched is None for r in rows) else sum(r.unmatched or 0 for r in rows)
    pending = None if any(r.pending is None for r in rows) else sum(r.pending or 0 for r in rows)
    return Row(ALL, model, n, mse, rmse, mae, unmatched, pending)


def _add_skill(rows: list[Row]) -> None:
    base = next((r for r in rows if r.model == "persistence"), None)
    for r in rows:
        if base is not None and base.n and base.mse and r.n and r.mse is not None:
            r.skill = 1.0 - r.mse / base.mse
        else:
            r.skill = None


def _model_order(names: set[str], meta_models: list[str]) -> list[str]:
    ordered = [m for m in meta_models if m in names]
    ordered += [m for m in MODELS if m in names and m not in ordered]
    ordered += sorted(names - set(ordered))
    return ordered


def load_report_data(db: Path, models_dir: Path | None = None, run: str | None = None) -> ReportData:
    """Everything the report shows of one run (default: the newest), read from the store (and the
    artifacts' metadata)."""
    from wattcast.forecasters import ArtifactError, default_models_dir, load_model

    db = Path(db)
    con, run = open_store(db, run)
    try:
        meta = _meta(con)
        collector_meta = meta.get("collector") or {}
        window_s = int(collector_meta.get("window_s") or 3600)
        notes: list[str] = []

        summary: list[Row] = []
        if _table_exists(con, "summary"):
            summary = [Row(h, m, n, mse if n else None, rmse if n else None, mae if n else None, u, p)
                       for h, m, n, mse, rmse, mae, u, p in con.execute(
                           "SELECT house, model, n, mse, rmse, mae, unmatched, pending FROM summary ORDER BY house, model")]
        from_summary = bool(summary)
        rows = summary if from_summary else _rows_from_matches(con)
        if not rows:
            raise ValueError(f"{db} holds no forecasts of run {run}: nothing to report (did the run start?)")
        if not from_summary:
            notes.append("The store has no summary (the run had not finished): scores come from the matches table; "
                         "'unmatched' counts forecasts without a reading whose target is not after the newest reading.")

        models = _model_order({r.model for r in rows}, list(collector_meta.get("models") or []))
        houses = sorted({r.house for r in rows})
        plot_house = "h000" if "h000" in houses else houses[0]

        per_house: list[Row] = []
        for house in houses:
            hr = [r for r in rows if r.house == house]
            hr.sort(key=lambda r: models.index(r.model))
            _add_skill(hr)
            per_house += hr
        if len(houses) == 1:
            aggregate = [Row(**{**r.__dict__}) for r in per_house]
        else:
            aggregate = [_pool(m, [r for r in rows if r.model == m]) for m in models]
            _add_skill(aggregate)
        if not any(r.model == "persistence" for r in rows):
            notes.append("No persistence forecasts in this store: skill against persistence is n/a.")

        costs = {m: Cost(m) for m in models}
        for model, version in con.execute(
                "SELECT model, model_version FROM forecasts GROUP BY model, model_version ORDER BY MAX(received_at)"):
            if model in costs:
                costs[model].versions.append(version)
        lat: dict[str, list[float]] = {}
        for model, dt in con.execute("SELECT model, received_at - reading_sent_at FROM forecasts "
                                     "WHERE reading_sent_at IS NOT NULL"):
            lat.setdefault(model, []).append(dt)
        for model, values in lat.items():
            if model in costs:
                a = np.asarray(values, dtype=np.float64) * 1000.0
                costs[model].latency_n = int(a.size)
                costs[model].latency_p50_ms = float(np.percentile(a, 50))
                costs[model].latency_p99_ms = float(np.percentile(a, 99))

        node_rows = []
        if _table_exists(con, "nodes"):
            node_rows = list(con.execute("SELECT node, role, state, ts, counters FROM nodes ORDER BY COALESCE(ts, 0)"))
        nodes_by_model: dict[str, tuple[str, dict[str, Any]]] = {}
        collector_counters: dict[str, Any] = {}
        for node, role, _state, _ts, counters in node_rows:  # oldest first: the newest status wins
            try:
                c = json.loads(counters or "{}")
            except ValueError:
                c = {}
            model = _node_model(node) if role == "predictor" else None
            if model is not None:
                nodes_by_model[model] = (node, c if isinstance(c, dict) else {})
            elif role == "collector" and isinstance(c, dict):
                collector_counters = c
        for model, cost in costs.items():
            node, c = nodes_by_model.get(model, (None, {}))
            cost.node = node
            cost.rss_kb = c.get("rss_kb") if isinstance(c.get("rss_kb"), int) else None
            cost.startup_ms = c.get("startup_ms") if isinstance(c.get("startup_ms"), int) else None
        no_node = [m for m in models if costs[m].node is None]
        if no_node:
            notes.append(f"No predictor node status in the store for {', '.join(no_node)}: "
                         "node memory and start-up are n/a.")
        no_counter = [m for m in models
                      if costs[m].node is not None and (costs[m].rss_kb is None or costs[m].startup_ms is None)]
        if no_counter:
            notes.append(f"The node status of {', '.join(no_counter)} has no rss_kb / startup_ms counter: shown as n/a.")

        # Model facts: parameters and size on disk; for LSTMs only from the artifact the run used.
        models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
        loss: dict[str, dict[str, Any]] = {}
        for model in models:
            cost = costs[model]
            run_version = cost.versions[-1] if cost.versions else None
            if len(cost.versions) > 1:
                notes.append(f"{model}: the store holds forecasts of {len(cost.versions)} versions "
                             f"({', '.join(cost.versions)}); facts refer to the newest, {run_version}.")
            if model in LSTM_MODELS:
                try:
                    m = load_model(model, models_dir)
                except (ArtifactError, OSError, ValueError, KeyError) as exc:
                    notes.append(f"{model}: no usable artifact in {models_dir} ({str(exc).splitlines()[0]}); "
                                 "size, parameters and loss curves are n/a.")
                    continue
                if run_version is not None and m.version != run_version:
                    notes.append(f"{model}: the artifact in {models_dir / model} is version {m.version}, but the run "
                                 f"forecast with {run_version}; size, parameters and loss curves are n/a.")
                    continue
                d = m.describe()
                history = (getattr(m, "metadata", {}) or {}).get("history") or {}
                if history.get("loss"):
                    md = m.metadata
                    loss[model] = {"history": history, "version": m.version,
                                   "best_epoch": (md.get("training") or {}).get("best_epoch"),
                                   "scaled": bool(md.get("scaler")), "features": md.get("features")}
                else:
                    notes.append(f"{model}: the artifact's metadata has no training history: no loss curve.")
            else:
                try:
                    d = load_model(model).describe()
                except (ValueError, ArtifactError):
                    continue
            cost.parameters = int(d.get("parameters")) if d.get("parameters") is not None else None
            cost.size_bytes = int(d.get("size_bytes")) if d.get("size_bytes") is not None else None
            cost.weights_bytes = d.get("weights_bytes")

        first_ts, last_ts = con.execute("SELECT MIN(ts), MAX(ts) FROM readings").fetchone()
        facts = {
            "db": str(db),
            "run": run,
            "runs": [r["run"] for r in runs(con)],
            "houses": len(houses),
            "readings": _scalar(con, "SELECT COUNT(*) FROM readings"),
            "forecasts": _scalar(con, "SELECT COUNT(*) FROM forecasts"),
            "matches": _scalar(con, "SELECT COUNT(*) FROM matches"),
            "rejections": _scalar(con, "SELECT COUNT(*) FROM rejections") if _table_exists(con, "rejections") else 0,
            "first_ts": first_ts,
            "last_ts": last_ts,
            "window_s": window_s,
            "collector": run_stats(con, run),
            "collector_rss_kb": collector_counters.get("rss_kb"),
            "started_at": collector_meta.get("started_at"),
        }
        return ReportData(db, models, houses, plot_house, window_s, aggregate, per_house if len(houses) > 1 else [],
                          costs, loss, facts, notes, from_summary)
    finally:
        con.close()


# ---------------------------------------------------------------------------- plots

def _figure(name: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGURES[name], dpi=DPI, layout="constrained")
    return fig


def _save(fig, out: Path, name: str) -> Path:
    path = out / name
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _dt(ts: np.ndarray) -> np.ndarray:
    return np.asarray(ts, dtype=np.int64).astype("datetime64[s]")


def _date_axis(ax) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _series(con: sqlite3.Connection, house: str, models: list[str]):
    actual = np.array(con.execute("SELECT ts, global_active_power FROM readings WHERE house = ? ORDER BY ts",
                                  (house,)).fetchall(), dtype=np.float64).reshape(-1, 2)
    predicted = {}
    for model in models:
        predicted[model] = np.array(con.execute(
            "SELECT target_ts, value FROM forecasts WHERE house = ? AND model = ? ORDER BY target_ts",
            (house, model)).fetchall(), dtype=np.float64).reshape(-1, 2)
    return actual, predicted


def _plot_predicted(con, data: ReportData, out: Path, name: str, last_minutes: int | None) -> Path:
    actual, predicted = _series(con, data.plot_house, data.models)
    fig = _figure(name)
    axes = fig.subplots(len(data.models), 1, sharex=True, squeeze=False)[:, 0]
    lo = hi = None
    if last_minutes is not None and len(actual):
        hi = actual[-1, 0]
        lo = hi - last_minutes * 60
    span = f"last {last_minutes} minutes" if last_minutes else "whole replay"
    for ax, model in zip(axes, data.models, strict=True):
        a, p = actual, predicted[model]
        if lo is not None:
            a = a[a[:, 0] >= lo]
            p = p[(p[:, 0] >= lo) & (p[:, 0] <= hi + 300)]
        width = 0.6 if last_minutes is None else 1.0
        ax.plot(_dt(a[:, 0]), a[:, 1], color="0.35", lw=width, label="actual")
        ax.plot(_dt(p[:, 0]), p[:, 1], color=COLORS.get(model, "tab:red"), lw=width, alpha=0.85,
                label=f"{model} forecast (5 min ahead)")
        ax.set_ylabel("GAP (kW)")
        ax.set_title(model, loc="left", fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
        _date_axis(ax)
    axes[-1].set_xlabel("meter time (target of the forecast)")
    fig.suptitle(f"Forecast vs actual global active power, house {data.plot_house}, {span}")
    return _save(fig, out, name)


def _matches(con, house: str | None):
    where, args = ("WHERE house = ?", (house,)) if house else ("", ())
    rows = con.execute(f"SELECT model, target_ts, error FROM matches {where} ORDER BY model, target_ts", args).fetchall()
    by_model: dict[str, list[tuple[int, float]]] = {}
    for model, ts, err in rows:
        by_model.setdefault(model, []).append((ts, err))
    return {m: np.array(v, dtype=np.float64).reshape(-1, 2) for m, v in by_model.items()}


def rolling_mse(ts: np.ndarray, sq_err: np.ndarray, window_s: int) -> np.ndarray:
    """MSE over the event-time window (t - window_s, t] at every t (ts sorted), as the collector computes it."""
    ts = np.asarray(ts, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(sq_err, dtype=np.float64)])
    start = np.searchsorted(ts, ts - window_s, side="right")
    end = np.arange(1, len(ts) + 1)
    return (csum[end] - csum[start]) / (end - start)


def _plot_rolling(con, data: ReportData, out: Path) -> Path:
    name = "rolling_mse.png"
    fig = _figure(name)
    ax = fig.subplots()
    by_model = _matches(con, data.plot_house)
    for model in data.models:
        m = by_model.get(model)
        if m is None or not len(m):
            continue
        r = rolling_mse(m[:, 0], m[:, 1] ** 2, data.window_s)
        ax.plot(_dt(m[:, 0]), r, color=COLORS.get(model), lw=1.2,
                label=f"{model} (cumulative MSE {np.mean(m[:, 1] ** 2):.4f})")
    ax.set_ylabel("rolling MSE (kW²)")
    ax.set_xlabel("meter time (target of the forecast)")
    ax.set_title(f"Rolling MSE over {data.window_s // 60} minutes of event time, house {data.plot_house}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    _date_axis(ax)
    return _save(fig, out, name)


def _plot_errors(con, data: ReportData, out: Path) -> Path:
    name = "error_distribution.png"
    fig = _figure(name)
    by_model = _matches(con, None)
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
            ax.legend(fontsize=8, loc="upper right", title=f"n {e.size}, MAE {np.abs(e).mean():.3f} kW"
                      + (f", {outside} clipped" if outside else ""), title_fontsize=8)
        ax.set_title(model, loc="left", fontsize=10)
        ax.set_ylabel("matched forecasts")
        ax.grid(alpha=0.3)
    for ax in axes[len(data.models):]:
        ax.set_visible(False)
    for ax in axes[-ncols:]:
        ax.set_xlabel("forecast − actual (kW)")
    houses = f"all {len(data.houses)} houses" if len(data.houses) > 1 else f"house {data.plot_house}"
    fig.suptitle(f"Error distribution per model ({houses}; edges hold the 1% beyond the 0.5-99.5 percentiles)")
    return _save(fig, out, name)


def _plot_loss(data: ReportData, out: Path) -> Path | None:
    if not data.loss:
        return None
    name = "loss_curves.png"
    fig = _figure(name)
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
    return _save(fig, out, name)


def _plot_cost(data: ReportData, out: Path) -> Path:
    name = "accuracy_vs_cost.png"
    fig = _figure(name)
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
            ax2.errorbar([cost.latency_p50_ms], [row.mse], fmt="o", color=color, label=model,
                         xerr=[[0], [max(0.0, (cost.latency_p99_ms or cost.latency_p50_ms) - cost.latency_p50_ms)]])
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
    return _save(fig, out, name)


# ---------------------------------------------------------------------------- text

def _bytes(v: int) -> str:
    if v < 1000:
        return f"{v} B"
    if v < 1_000_000:
        return f"{v / 1000:.1f} kB"
    return f"{v / 1_000_000:.2f} MB"


def fmt(value: Any, kind: str) -> str:
    """The text a table cell shows; "n/a" for a missing value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if kind == "int":
        return f"{int(value):d}"
    if kind == "f4":
        return f"{value:.4f}"
    if kind == "f3":
        return f"{value:.3f}"
    if kind == "f1":
        return f"{value:.1f}"
    if kind == "bytes":
        return _bytes(int(value))
    if kind == "kb":
        return f"{value / 1024:.1f} MiB"
    if kind == "ms_as_s":
        return f"{value / 1000:.2f}"
    return str(value)


def _raw(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _cost_key(data: ReportData, model: str) -> tuple[float, float, float]:
    c = data.costs[model]
    inf = math.inf
    return (c.parameters if c.parameters is not None else inf, c.size_bytes if c.size_bytes is not None else inf,
            c.latency_p50_ms if c.latency_p50_ms is not None else inf)


def verdict(data: ReportData) -> list[str]:
    """The "which model for an IoT device" paragraphs, computed from the numbers (Markdown emphasis)."""
    scored = [r for r in data.aggregate if r.n and r.mse is not None]
    if not scored:
        return ["No model has a matched forecast yet: no comparison possible."]
    where = f"pooled over {len(data.houses)} houses" if len(data.houses) > 1 else f"house {data.plot_house}"
    best = min(scored, key=lambda r: r.mse)
    near = [r for r in scored if r.mse <= best.mse * (1 + NEAR_BEST)]
    cheap = min(near, key=lambda r: _cost_key(data, r.model))

    def cost_text(model: str) -> str:
        c = data.costs[model]
        parts = [f"{fmt(c.parameters, 'int')} parameters", f"{fmt(c.size_bytes, 'bytes')} on disk",
                 f"p50 latency {fmt(c.latency_p50_ms, 'f1')} ms"]
        if c.rss_kb is not None:
            parts.append(f"{fmt(c.rss_kb, 'kb')} RSS")
        return ", ".join(parts)

    lines = [f"Most accurate ({where}): **{best.model}**, MSE {best.mse:.4f} kW²"
             + (f", skill {best.skill:+.3f} against persistence" if best.skill is not None and best.model != "persistence"
                else "")
             + f"; {cost_text(best.model)}."]
    if cheap.model == best.model:
        others = [r.model for r in near if r.model != best.model]
        lines.append(f"It is also the cheapest model within {NEAR_BEST:.0%} of the best MSE"
                     + (f" (also within: {', '.join(others)})" if others else "") + ".")
    else:
        lines.append(f"Cheapest model within {NEAR_BEST:.0%} of the best MSE: **{cheap.model}**, MSE {cheap.mse:.4f} kW² "
                     f"({(cheap.mse / best.mse - 1):+.1%} against the best); {cost_text(cheap.model)}.")
    winners = [r for r in scored if r.skill is not None and r.skill > 0]
    if winners:
        w = min(winners, key=lambda r: _cost_key(data, r.model))
        if w.model not in (best.model, cheap.model):
            lines.append(f"Cheapest model that beats persistence: **{w.model}**, skill {w.skill:+.3f}; "
                         f"{cost_text(w.model)}.")
    losers = [r.model for r in scored if r.skill is not None and r.skill <= 0 and r.model != "persistence"]
    if losers:
        lines.append(f"Not better than persistence (the newest reading as the forecast): {', '.join(losers)}.")
    lines.append(f"Suggested for an IoT device predicting 5 minutes ahead: **{cheap.model}**: it is the cheapest model "
                 f"whose MSE is within {NEAR_BEST:.0%} of the best one in this run; a more expensive model would have to "
                 f"earn its memory, flash and compute with more accuracy than that.")
    few = min(r.n for r in scored)
    if few < FEW_MATCHES:
        lines.append(f"Caution: only {few} matched forecasts for some model; over a longer replay the ranking may change.")
    return lines


def _md_inline(text: str) -> str:
    """Markdown emphasis -> HTML, after escaping."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def _table_rows(data: ReportData, rows: list[Row], with_cost: bool):
    """(house, model, [(key, raw, text)]) per row."""
    for r in rows:
        cells = [(k, r.get(k), fmt(r.get(k), kind)) for k, _, kind in ACCURACY_COLUMNS]
        if with_cost:
            c = data.costs[r.model]
            cells += [(k, c.get(k), fmt(c.get(k), kind)) for k, _, kind in COST_COLUMNS]
        yield r.house, r.model, cells


def _html_table(data: ReportData, table_id: str, rows: list[Row], with_cost: bool, with_house: bool, caption: str) -> str:
    heads = (["house"] if with_house else []) + ["model"] + [h for _, h, _ in ACCURACY_COLUMNS]
    if with_cost:
        heads += [h for _, h, _ in COST_COLUMNS]
    out = [f'<table id="{table_id}">', f"<caption>{html.escape(caption)}</caption>",
           "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr></thead>", "<tbody>"]
    for house, model, cells in _table_rows(data, rows, with_cost):
        tds = ([f'<td class="key">{html.escape(house)}</td>'] if with_house else [])
        tds.append(f'<td class="key">{html.escape(model)}</td>')
        tds += [f'<td data-col="{k}" data-value="{html.escape(_raw(raw))}">{html.escape(text)}</td>'
                for k, raw, text in cells]
        out.append(f'<tr data-house="{html.escape(house)}" data-model="{html.escape(model)}">' + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _md_table(data: ReportData, rows: list[Row], with_cost: bool, with_house: bool) -> str:
    heads = (["house"] if with_house else []) + ["model"] + [h for _, h, _ in ACCURACY_COLUMNS]
    if with_cost:
        heads += [h for _, h, _ in COST_COLUMNS]
    keys = 1 + int(with_house)
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(["---"] * keys + ["---:"] * (len(heads) - keys)) + "|"]
    for house, model, cells in _table_rows(data, rows, with_cost):
        lines.append("| " + " | ".join(([house] if with_house else []) + [model] + [t for _, _, t in cells]) + " |")
    return "\n".join(lines)


def _when(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts is not None else "n/a"


def _facts(data: ReportData) -> list[str]:
    f = data.facts
    c = f["collector"]
    others = len(f.get("runs", [])) - 1
    lines = [
        f"Store: {f['db']}, run {f['run']}"
        + (f" (the store holds {others} other run{'s' if others > 1 else ''}: `wattcast report --run`)"
           if others > 0 else ""),
        f"{f['houses']} house(s), {f['readings']} readings from {_when(f['first_ts'])} to {_when(f['last_ts'])} "
        f"(meter time), {f['forecasts']} forecasts, {f['matches']} matched, {f['rejections']} rejected messages.",
        f"Models: {', '.join(data.models)}. Rolling window {data.window_s // 60} minutes of event time; "
        f"forecast horizon 5 minutes.",
    ]
    if c.get("lag_ms_p50") is not None:
        lines.append(f"Collector: bus lag p50 {c['lag_ms_p50']:.1f} ms, p99 {c['lag_ms_p99']:.1f} ms"
                     + (f", memory {fmt(f['collector_rss_kb'], 'kb')}" if f.get("collector_rss_kb") else "") + ".")
    if data.from_summary:
        lines.append("Scores: the collector's end-of-stream summary.")
    return lines


DEFINITIONS = [
    "n: matched forecasts (a forecast and the reading at its target time). MSE / RMSE / MAE of forecast − actual "
    "global active power; an aggregate over houses pools every matched forecast.",
    "skill vs persistence: 1 − MSE / MSE(persistence) of the same houses; > 0 beats 'the newest reading', 0 is persistence.",
    "unmatched: forecasts whose target reading is inside the stream but never arrived; "
    "pending: target after the last reading.",
    "latency: wall clock from the simulator publishing a reading to the collector storing the forecast made from it "
    "(bus, queueing and inference; all on this machine); at full replay speed queueing dominates.",
    "size on disk: the model artifact (model.keras + weights.npz; 0 for closed-form models); parameters: trainable "
    "weights; node memory: peak RSS of the predictor process; start-up: process start to online (node status counters).",
]


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1250px;
color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3} td.key{text-align:left;font-weight:600}
caption{text-align:left;font-weight:600;padding:4px 0}
figure{margin:1.5em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:14px}
.verdict{background:#f5f9ff;border-left:4px solid #3b7ddd;padding:0.5em 1em}
.notes li{color:#8a5a00}
"""


def _captions(data: ReportData) -> dict[str, str]:
    many = len(data.houses) > 1
    house = f"house {data.plot_house}" + (f" (one of {len(data.houses)}; the tables hold all)" if many else "")
    return {
        "predicted_vs_actual.png": f"Forecast (5 minutes ahead, drawn at its target time) against the actual reading, "
                                   f"{house}, whole replay.",
        "predicted_vs_actual_last500.png": f"The same, last {CLOSE_UP_MINUTES} minutes, as in the course notebook.",
        "rolling_mse.png": f"Rolling MSE over {data.window_s // 60} minutes of event time, every model, {house}.",
        "error_distribution.png": "Distribution of forecast − actual per model"
                                  + (f", all {len(data.houses)} houses." if many else "."),
        "loss_curves.png": "Training and validation loss per epoch of the LSTM models (artifact metadata).",
        "accuracy_vs_cost.png": "MSE against parameters and against measured latency: the cheap, accurate corner "
                                "is lower left.",
    }


def render_html(data: ReportData, images: list[Path]) -> str:
    captions = _captions(data)
    where = (f"pooled over {len(data.houses)} houses" if len(data.houses) > 1 else f"house {data.plot_house}")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>wattcast report</title>", f"<style>{CSS}</style></head><body>",
        "<h1>wattcast report: which model would you put on an IoT device?</h1>",
        "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in _facts(data)) + "</ul>",
        '<h2 id="verdict">Which model for an IoT device?</h2>',
        '<div class="verdict">' + "".join(f"<p>{_md_inline(x)}</p>" for x in verdict(data)) + "</div>",
        "<h2>Accuracy and cost</h2>",
        _html_table(data, "summary", data.aggregate, with_cost=True, with_house=False,
                    caption=f"Per model, {where}; cost as measured in the run"),
    ]
    if data.per_house:
        rows = data.aggregate + data.per_house
        parts += ["<h2>Per house</h2>",
                  _html_table(data, "per-house", rows, with_cost=False, with_house=True,
                              caption=f"Aggregate ({ALL}) first, then each of the {len(data.houses)} houses")]
    if data.notes:
        parts += ["<h2>Notes</h2>", '<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
                  + "</ul>"]
    parts.append("<h2>Plots</h2>")
    for img in images:
        b64 = base64.b64encode(img.read_bytes()).decode("ascii")
        cap = captions.get(img.name, img.name)
        parts.append(f'<figure id="{html.escape(img.stem)}"><img alt="{html.escape(cap)}" '
                     f'src="data:image/png;base64,{b64}"><figcaption>{html.escape(cap)}</figcaption></figure>')
    parts += ["<h2>How the numbers are measured</h2>",
              "<ul>" + "".join(f"<li>{html.escape(d)}</li>" for d in DEFINITIONS) + "</ul>",
              f"<p><small>Generated by wattcast from {html.escape(str(data.db))} at "
              f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.</small></p>",
              "</body></html>"]
    return "\n".join(parts) + "\n"


def render_markdown(data: ReportData, images: list[Path]) -> str:
    captions = _captions(data)
    where = (f"pooled over {len(data.houses)} houses" if len(data.houses) > 1 else f"house {data.plot_house}")
    lines = ["# wattcast report: which model would you put on an IoT device?", ""]
    lines += [f"- {x}" for x in _facts(data)]
    lines += ["", "## Which model for an IoT device?", ""]
    for x in verdict(data):
        lines += [x, ""]
    lines += ["## Accuracy and cost", "", f"Per model, {where}; cost as measured in the run.", "",
              _md_table(data, data.aggregate, with_cost=True, with_house=False), ""]
    if data.per_house:
        lines += ["## Per house", "", f"Aggregate ({ALL}) first, then each of the {len(data.houses)} houses.", "",
                  _md_table(data, data.aggregate + data.per_house, with_cost=False, with_house=True), ""]
    if data.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in data.notes] + [""]
    lines += ["## Plots", ""]
    for img in images:
        lines += [f"![{captions.get(img.name, img.name)}]({img.name})", "", f"*{captions.get(img.name, img.name)}*", ""]
    lines += ["## How the numbers are measured", ""] + [f"- {d}" for d in DEFINITIONS] + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- entry

def build_report(db: Path, out: Path, models_dir: Path | None = None, run: str | None = None) -> list[Path]:
    """Write report.html (self-contained), report.md and the PNG plots of one run (default: the
    newest) into ``out``; returns their paths.

    Raises FileNotFoundError / ValueError (one line) if ``db`` is not a collector store with
    forecasts of that run.
    """
    data = load_report_data(Path(db), models_dir, run)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    con, _ = open_store(Path(db), data.facts["run"])
    try:
        images = [
            _plot_predicted(con, data, out, "predicted_vs_actual.png", None),
            _plot_predicted(con, data, out, "predicted_vs_actual_last500.png", CLOSE_UP_MINUTES),
            _plot_rolling(con, data, out),
            _plot_errors(con, data, out),
        ]
    finally:
        con.close()
    loss = _plot_loss(data, out)
    if loss is not None:
        images.append(loss)
    else:
        stale = out / "loss_curves.png"
        if stale.exists():
            stale.unlink()  # from an earlier report into the same folder
        if not any("loss" in n for n in data.notes):
            data.notes.append("No LSTM model in this run: no training loss curves.")
    images.append(_plot_cost(data, out))
    html_path = out / "report.html"
    md_path = out / "report.md"
    html_path.write_text(render_html(data, images), encoding="utf-8")
    md_path.write_text(render_markdown(data, images), encoding="utf-8")
    return [html_path, md_path, *images]
