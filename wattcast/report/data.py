"""What a report shows of one run, gathered from the store and the model artifacts."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from wattcast.contract import MODELS
from wattcast.scoring import Scoreboard, pooled
from wattcast.store import RunReader, replay_run
from wattcast.store.database import shown

LSTM_MODELS = ("lstm", "lstm-augmented")
ALL = "all"


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
    db: str  # the store, fit to show (a URL's password hidden)
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


def list_runs(db: str | Path) -> list[str]:
    """One line per run of the store, oldest first: id, readings, scored or not (ValueError if not a store)."""
    with RunReader(db) as reader:
        return [
            f"{r['run']}  {r['readings']:>9,} readings  "
            f"{'scored ' + _when_wall(r['finished_at']) if r['finished_at'] else 'not scored (yet)'}"
            + ("  (newest)" if r["run"] == reader.run else "")
            for r in reader.runs()
        ]


def _when_wall(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _node_model(node: str) -> str | None:
    """ "predictor-<model>" or "predictor-<model>-<pid>" -> model (careful: lstm is a prefix of lstm-augmented)."""
    if not node.startswith("predictor-"):
        return None
    rest = node[len("predictor-") :]
    if rest in MODELS:
        return rest
    m = re.fullmatch(r"(.+)-\d+", rest)
    return m.group(1) if m and m.group(1) in MODELS else None


def _rows_from_scoring(reader: RunReader, window_s: int) -> list[Row]:
    """Per (house, model) scores of a run the collector has not finished (no summary): its
    stored readings and forecasts replayed into a :class:`~wattcast.scoring.Scoreboard`, the
    collector's own rule (matching is order-independent)."""
    board = Scoreboard(window_s, reader.run)
    replay_run(reader.con, reader.run, board)
    rows = []
    for house, model in sorted(board.scores):
        m = board.metrics(house, model)
        rows.append(
            Row(
                house,
                model,
                m.n,
                m.mse if m.n else None,
                m.rmse if m.n else None,
                m.mae if m.n else None,
                m.unmatched,
                m.pending,
            )
        )
    return rows


def _pool(model: str, rows: list[Row]) -> Row:
    n = sum(r.n for r in rows)
    mse = pooled((r.n, r.mse) for r in rows)
    mae = pooled((r.n, r.mae) for r in rows)
    rmse = math.sqrt(mse) if mse is not None else None
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


def load_report_data(db: str | Path, models_dir: Path | None = None, run: str | None = None) -> ReportData:
    """Everything the report shows of one run (default: the newest), read from the store (and the
    artifacts' metadata)."""
    from wattcast.forecasters import ArtifactError, default_models_dir, load_model

    reader = RunReader(db, run)
    run = reader.run
    try:
        meta = reader.meta()
        collector_meta = meta.get("collector") or {}
        window_s = int(collector_meta.get("window_s") or 3600)
        notes: list[str] = []

        summary = [
            Row(h, m, n, mse if n else None, rmse if n else None, mae if n else None, u, p)
            for h, m, n, mse, rmse, mae, u, p in reader.summary()
        ]
        from_summary = bool(summary)
        rows = summary if from_summary else _rows_from_scoring(reader, window_s)
        if not rows:
            raise ValueError(f"{shown(db)} holds no forecasts of run {run}: nothing to report (did the run start?)")
        if not from_summary:
            notes.append(
                "The store has no summary (the run had not finished): scores come from the matches table; "
                "'unmatched' counts forecasts without a reading whose target is not after the newest reading."
            )

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
        for model, version in reader.model_versions():
            if model in costs:
                costs[model].versions.append(version)
        lat: dict[str, list[float]] = {}
        for model, dt in reader.latencies():
            lat.setdefault(model, []).append(dt)
        for model, values in lat.items():
            if model in costs:
                a = np.asarray(values, dtype=np.float64) * 1000.0
                costs[model].latency_n = int(a.size)
                costs[model].latency_p50_ms = float(np.percentile(a, 50))
                costs[model].latency_p99_ms = float(np.percentile(a, 99))

        nodes_by_model: dict[str, tuple[str | None, dict[str, Any]]] = {}
        collector_counters: dict[str, Any] = {}
        for node, role, _state, _ts, c, said in reader.nodes():  # oldest first: the newest status wins
            # a predictor's status names its model; a name like predictor-<model>-<pid> is the fallback
            of_model = (said or _node_model(node)) if role == "predictor" else None
            if of_model is not None:
                nodes_by_model[of_model] = (node, c)
            elif role == "collector":
                collector_counters = c
        for model, cost in costs.items():
            who, c = nodes_by_model.get(model, (None, {}))
            cost.node = who
            cost.rss_kb = c.get("rss_kb") if isinstance(c.get("rss_kb"), int) else None
            cost.startup_ms = c.get("startup_ms") if isinstance(c.get("startup_ms"), int) else None
        no_node = [m for m in models if costs[m].node is None]
        if no_node:
            notes.append(
                f"No predictor node status in the store for {', '.join(no_node)}: node memory and start-up are n/a."
            )
        no_counter = [
            m for m in models if costs[m].node is not None and (costs[m].rss_kb is None or costs[m].startup_ms is None)
        ]
        if no_counter:
            notes.append(f"The node status of {', '.join(no_counter)} has no rss_kb / startup_ms counter: shown as n/a.")

        # Model facts: parameters and size on disk; for LSTMs only from the artifact the run used.
        models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
        loss: dict[str, dict[str, Any]] = {}
        for model in models:
            cost = costs[model]
            run_version = cost.versions[-1] if cost.versions else None
            if len(cost.versions) > 1:
                notes.append(
                    f"{model}: the store holds forecasts of {len(cost.versions)} versions "
                    f"({', '.join(cost.versions)}); facts refer to the newest, {run_version}."
                )
            if model in LSTM_MODELS:
                try:
                    m = load_model(model, models_dir)
                except (ArtifactError, OSError, ValueError, KeyError) as exc:
                    notes.append(
                        f"{model}: no usable artifact in {models_dir} ({str(exc).splitlines()[0]}); "
                        "size, parameters and loss curves are n/a."
                    )
                    continue
                if run_version is not None and m.version != run_version:
                    notes.append(
                        f"{model}: the artifact in {models_dir / model} is version {m.version}, but the run "
                        f"forecast with {run_version}; size, parameters and loss curves are n/a."
                    )
                    continue
                d = m.describe()
                md = getattr(m, "metadata", {}) or {}
                history = md.get("history") or {}
                if history.get("loss"):
                    loss[model] = {
                        "history": history,
                        "version": m.version,
                        "best_epoch": (md.get("training") or {}).get("best_epoch"),
                        "scaled": bool(md.get("scaler")),
                        "features": md.get("features"),
                    }
                else:
                    notes.append(f"{model}: the artifact's metadata has no training history: no loss curve.")
            else:
                try:
                    d = load_model(model).describe()
                except (ValueError, ArtifactError):
                    continue
            parameters, size = d.get("parameters"), d.get("size_bytes")
            cost.parameters = int(parameters) if parameters is not None else None
            cost.size_bytes = int(size) if size is not None else None
            cost.weights_bytes = d.get("weights_bytes")

        first_ts, last_ts = reader.time_span()
        facts = {
            "db": shown(db),
            "run": run,
            "runs": [r["run"] for r in reader.runs()],
            "houses": len(houses),
            **reader.counts(),
            "first_ts": first_ts,
            "last_ts": last_ts,
            "window_s": window_s,
            "collector": reader.stats(),
            "collector_rss_kb": collector_counters.get("rss_kb"),
            "started_at": collector_meta.get("started_at"),
        }
        return ReportData(
            shown(db),
            models,
            houses,
            plot_house,
            window_s,
            aggregate,
            per_house if len(houses) > 1 else [],
            costs,
            loss,
            facts,
            notes,
            from_summary,
        )
    finally:
        reader.close()
