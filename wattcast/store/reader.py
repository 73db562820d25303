"""Reading a store: which runs it holds, one run's rows (for the report, ``wattcast run`` and bench).

Every query of the store's tables lives here or in :mod:`wattcast.store.writer`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from wattcast.contract import Forecast, model_name
from wattcast.scoring import Scoreboard
from wattcast.store.database import Database, connect_postgres, connect_sqlite, is_postgres, shown
from wattcast.store.schema import RUN_TABLES, StoreError, check_layout


def select_run(db: Database, run: str | None = None) -> str:
    """The run to read: ``run`` if the store holds it, else (None) the one seen last.
    StoreError (one line) if there is none or the store does not know ``run``."""
    known = [r for (r,) in db.execute(f"SELECT run FROM {db.home}.runs ORDER BY first_seen, run")]
    if run is None:
        if not known:
            raise StoreError("the store holds no run yet: nothing to report (did a replay start?)")
        return known[-1]
    if run not in known:
        shown = ", ".join(known[-5:]) if known else "none"
        raise StoreError(f"the store holds no run {run!r} (newest: {shown})")
    return run


def runs(db: Database) -> list[dict[str, Any]]:
    """Every run of the store, oldest first: run, first_seen, finished_at, readings."""
    counts = dict(db.execute(f"SELECT run, COUNT(*) FROM {db.home}.readings GROUP BY run"))
    return [
        {"run": r, "first_seen": first, "finished_at": fin, "readings": counts.get(r, 0)}
        for r, first, fin in db.execute(f"SELECT run, first_seen, finished_at FROM {db.home}.runs ORDER BY first_seen, run")
    ]


def run_stats(db: Database, run: str) -> dict[str, Any]:
    """The collector's counters of ``run``, written when it was scored ({} before)."""
    row = db.execute(f"SELECT stats FROM {db.home}.runs WHERE run = ?", (run,)).fetchone()
    return json.loads(row[0]) if row and row[0] else {}


def view_run(db: Database, run: str) -> None:
    """Show ``db`` as if it held only ``run``: temporary views named like the run tables shadow them
    (SQLite looks a name up in ``temp`` first), so a reader's queries need no run filter."""
    for table in RUN_TABLES:
        db.execute(f"DROP VIEW IF EXISTS {db.temp}.{table}")
        db.execute(f"CREATE TEMP VIEW {table} AS SELECT * FROM {db.home}.{table} WHERE run = {_literal(run)}")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def replay_run(
    db: Database, run: str, board: Scoreboard, models: Iterable[str] | None = None, houses: set[str] | None = None
) -> int:
    """Feed what the store holds of ``run`` (its readings, and the forecasts of ``models``; default:
    all) into ``board``, the collector's own matching rule (order-independent and idempotent: the
    scores come out as the collector had them); ``houses``: of these only (a sharded collector's).
    Returns the rows taken."""
    query = f"SELECT house, ts, seq, global_active_power FROM {db.home}.readings WHERE run = ?"
    readings = [r for r in db.execute(query, (run,)).fetchall() if houses is None or r[0] in houses]
    for house, ts, seq, value in readings:
        board.add_actual(house, ts, value)
        board.reading_seqs[house].add(seq)
    wanted = None if models is None else set(models)
    forecasts = 0
    for house, model, version, seq, issued, target, value, sent in db.execute(
        "SELECT house, model, model_version, seq, issued_at, target_ts, value, reading_sent_at "
        f"FROM {db.home}.forecasts WHERE run = ?",
        (run,),
    ):
        if (wanted is None or model in wanted) and (houses is None or house in houses):
            board.add_forecast(Forecast(house, model_name(model), version, seq, issued, target, value, sent, run=run))
            forecasts += 1
    return len(readings) + forecasts


def open_readonly(location: str | Path, run: str | None = None) -> tuple[Database, str]:
    """The store at ``location`` (an SQLite file or a ``postgresql://`` URL), opened without writing
    to it and showing only ``run`` (default: the newest; :func:`view_run`), and that run.
    ValueError / FileNotFoundError / ConnectionError with one line if it is not a store of this
    layout, lacks the run or cannot be reached."""
    con = connect_postgres(str(location), autocommit=True) if is_postgres(location) else _connect_file(Path(location))
    name = shown(location)
    missing = {"readings", "forecasts", "matches"} - con.tables()
    if missing:
        con.close()
        raise ValueError(f"{name} is not a wattcast collector store (no {', '.join(sorted(missing))} table)")
    try:
        check_layout(con, name)
        run = select_run(con, run)
        view_run(con, run)  # temporary views: every query below sees this run only
        con.read_only()
    except StoreError as exc:
        con.close()
        raise ValueError(f"{name}: {exc}" if name not in str(exc) else str(exc)) from None
    return con, run


def _connect_file(db: Path) -> Database:
    if not db.exists():
        raise FileNotFoundError(f"no collector store at {db}")
    if db.is_dir():
        raise ValueError(f"{db} is a folder, not a collector store (give the .db file)")
    if db.stat().st_size == 0:
        raise ValueError(f"{db} is empty, not a collector store")
    uri = db.resolve().as_uri()
    for mode in ("rw", "ro"):  # rw only so that SQLite removes its -wal/-shm files on close; nothing is written
        con = connect_sqlite(f"{uri}?mode={mode}", uri=True)
        try:
            con.tables()
            return con
        except con.Error as exc:
            con.close()
            if mode == "ro" or "not a database" in str(exc) or "malformed" in str(exc):
                raise ValueError(f"{db} is not a readable SQLite database: {exc}") from None
    raise AssertionError("unreachable")


class RunReader:
    """One run of a store, read-only: the rows the report shows (``with RunReader(db, run) as r``)."""

    def __init__(self, location: str | Path, run: str | None = None) -> None:
        self.location = location
        self.con, self.run = open_readonly(location, run)

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    def meta(self) -> dict[str, Any]:
        try:
            return {k: json.loads(v) for k, v in self.con.execute("SELECT key, value FROM meta")}
        except self.con.Error:
            return {}

    def runs(self) -> list[dict[str, Any]]:
        return runs(self.con)

    def stats(self) -> dict[str, Any]:
        return run_stats(self.con, self.run)

    def summary(self) -> list[tuple[str, str, int, float, float, float, int, int]]:
        """(house, model, n, mse, rmse, mae, unmatched, pending) the collector wrote when the run ended."""
        return self.con.execute(
            "SELECT house, model, n, mse, rmse, mae, unmatched, pending FROM summary ORDER BY house, model"
        ).fetchall()

    def model_versions(self) -> list[tuple[str, str]]:
        """(model, model_version) pairs, the version forecast with last at the end."""
        return self.con.execute(
            "SELECT model, model_version FROM forecasts GROUP BY model, model_version ORDER BY MAX(received_at)"
        ).fetchall()

    def latencies(self) -> list[tuple[str, float]]:
        """(model, seconds from the reading's publication to the forecast's storage) per forecast."""
        return self.con.execute(
            "SELECT model, received_at - reading_sent_at FROM forecasts WHERE reading_sent_at IS NOT NULL"
        ).fetchall()

    def nodes(self) -> list[tuple[str, str, str, float | None, dict[str, Any], str | None]]:
        """(node, role, state, ts, counters, model) of every node's newest status, oldest first."""
        out = []
        for node, role, state, ts, counters, model in self.con.execute(
            "SELECT node, role, state, ts, counters, model FROM nodes ORDER BY COALESCE(ts, 0)"
        ):
            try:
                c = json.loads(counters or "{}")
            except ValueError:
                c = {}
            out.append((node, role, state, ts, c if isinstance(c, dict) else {}, model))
        return out

    def counts(self) -> dict[str, int]:
        return {
            t: self.con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("readings", "forecasts", "matches", "rejections")
        }

    def time_span(self) -> tuple[int | None, int | None]:
        """The first and the last reading's ts."""
        return self.con.execute("SELECT MIN(ts), MAX(ts) FROM readings").fetchone()

    def series(self, house: str, models: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(ts, kW) of the house's readings and (target_ts, kW) of each model's forecasts, as arrays."""
        actual = np.array(
            self.con.execute(
                "SELECT ts, global_active_power FROM readings WHERE house = ? ORDER BY ts", (house,)
            ).fetchall(),
            dtype=np.float64,
        ).reshape(-1, 2)
        predicted = {
            model: np.array(
                self.con.execute(
                    "SELECT target_ts, value FROM forecasts WHERE house = ? AND model = ? ORDER BY target_ts", (house, model)
                ).fetchall(),
                dtype=np.float64,
            ).reshape(-1, 2)
            for model in models
        }
        return actual, predicted

    def errors(self, house: str | None = None) -> dict[str, np.ndarray]:
        """Per model, (target_ts, forecast - actual) of its matches (of one house, or all), by target."""
        where, args = ("WHERE house = ?", (house,)) if house else ("", ())
        by_model: dict[str, list[tuple[int, float]]] = {}
        for model, ts, err in self.con.execute(
            f"SELECT model, target_ts, error FROM matches {where} ORDER BY model, target_ts", args
        ):
            by_model.setdefault(model, []).append((ts, err))
        return {m: np.array(v, dtype=np.float64).reshape(-1, 2) for m, v in by_model.items()}
