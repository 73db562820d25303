"""The collector's SQLite store: everything a report needs, after the fact.

One store holds any number of runs (replays); every row names its run.  Tables
(one row per message, keyed so that a redelivered message is stored once):

* ``runs(run, first_seen, finished_at, stats)``: every run seen; ``finished_at`` and
  the collector's counters (``stats``, JSON) once its end of stream is scored
* ``readings(run, house, ts, seq, <7 measurements>, sent_at, received_at)``
* ``forecasts(run, house, model, issued_at, model_version, seq, target_ts, value, reading_sent_at, received_at)``
* ``matches(run, house, model, issued_at, target_ts, forecast, actual, error)``
* ``ends(run, house, readings, last_seq, last_ts, received_at)``
* ``rejections(id, received_at, topic, reason, payload_head, run)``: ``run`` when known
* ``nodes(node, role, state, ts, counters)``: each node's newest status
* ``summary(run, house, model, n, mse, rmse, mae, unmatched, pending)``: written at end of stream
* ``meta(key, value)``: JSON facts of the collector (window, models) and of the newest finished run

This module owns the store's SQL: the collector writes through it, and the report and
``wattcast run`` read a run through it (:func:`select_run`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from collector.scoring import Match
from wattcast.messages import READING_FIELDS, EndOfStream, Forecast, Metrics, Reading, Status

#: ``PRAGMA user_version`` of this layout (2: every row names its run)
LAYOUT = 2

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY, first_seen REAL NOT NULL, finished_at REAL, stats TEXT
);
CREATE TABLE IF NOT EXISTS readings (
    run TEXT NOT NULL, house TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,
    {", ".join(f"{f} REAL NOT NULL" for f in READING_FIELDS)},
    sent_at REAL, received_at REAL NOT NULL,
    PRIMARY KEY (run, house, ts)
);
CREATE TABLE IF NOT EXISTS forecasts (
    run TEXT NOT NULL, house TEXT NOT NULL, model TEXT NOT NULL, issued_at INTEGER NOT NULL,
    model_version TEXT NOT NULL, seq INTEGER NOT NULL, target_ts INTEGER NOT NULL, value REAL NOT NULL,
    reading_sent_at REAL, received_at REAL NOT NULL,
    PRIMARY KEY (run, house, model, issued_at)
);
CREATE TABLE IF NOT EXISTS matches (
    run TEXT NOT NULL, house TEXT NOT NULL, model TEXT NOT NULL, issued_at INTEGER NOT NULL,
    target_ts INTEGER NOT NULL, forecast REAL NOT NULL, actual REAL NOT NULL, error REAL NOT NULL,
    PRIMARY KEY (run, house, model, issued_at)
);
CREATE TABLE IF NOT EXISTS ends (
    run TEXT NOT NULL, house TEXT NOT NULL, readings INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    last_ts INTEGER NOT NULL, received_at REAL NOT NULL,
    PRIMARY KEY (run, house)
);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,
    payload_head BLOB, run TEXT
);
CREATE TABLE IF NOT EXISTS nodes (
    node TEXT PRIMARY KEY, role TEXT NOT NULL, state TEXT NOT NULL, ts REAL, counters TEXT
);
CREATE TABLE IF NOT EXISTS summary (
    run TEXT NOT NULL, house TEXT NOT NULL, model TEXT NOT NULL, n INTEGER NOT NULL, mse REAL NOT NULL,
    rmse REAL NOT NULL, mae REAL NOT NULL, unmatched INTEGER NOT NULL, pending INTEGER NOT NULL,
    PRIMARY KEY (run, house, model)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
PRAGMA user_version = {LAYOUT};
"""

#: the tables whose rows belong to one run
RUN_TABLES = ("readings", "forecasts", "matches", "ends", "summary", "rejections")


class StoreError(ValueError):
    """A file that is not a store of this layout (one line, for the user)."""


def check_layout(db: sqlite3.Connection, path: Path | str) -> None:
    """StoreError if ``db`` holds a collector store of another layout (an older wattcast)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "readings" in tables and version != LAYOUT:
        raise StoreError(f"{path} was written by a wattcast {'before run ids' if version < LAYOUT else 'newer'} "
                         f"(store layout {version}, this one reads {LAYOUT}): move it away or give another --store")


def select_run(db: sqlite3.Connection, run: str | None = None) -> str:
    """The run to read: ``run`` if the store holds it, else (None) the one seen last.
    StoreError (one line) if there is none or the store does not know ``run``."""
    known = [r for (r,) in db.execute("SELECT run FROM main.runs ORDER BY first_seen, run")]
    if run is None:
        if not known:
            raise StoreError("the store holds no run yet: nothing to report (did a replay start?)")
        return known[-1]
    if run not in known:
        shown = ", ".join(known[-5:]) if known else "none"
        raise StoreError(f"the store holds no run {run!r} (newest: {shown})")
    return run


def runs(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every run of the store, oldest first: run, first_seen, finished_at, readings."""
    counts = dict(db.execute("SELECT run, COUNT(*) FROM main.readings GROUP BY run"))
    return [{"run": r, "first_seen": first, "finished_at": fin, "readings": counts.get(r, 0)} for r, first, fin
            in db.execute("SELECT run, first_seen, finished_at FROM main.runs ORDER BY first_seen, run")]


def run_stats(db: sqlite3.Connection, run: str) -> dict[str, Any]:
    """The collector's counters of ``run``, written when it was scored ({} before)."""
    row = db.execute("SELECT stats FROM main.runs WHERE run = ?", (run,)).fetchone()
    return json.loads(row[0]) if row and row[0] else {}


def view_run(db: sqlite3.Connection, run: str) -> None:
    """Show ``db`` as if it held only ``run``: temporary views named like the run tables shadow them
    (SQLite looks a name up in ``temp`` first), so a reader's queries need no run filter."""
    for table in RUN_TABLES:
        db.execute(f"DROP VIEW IF EXISTS temp.{table}")
        db.execute(f"CREATE TEMP VIEW {table} AS SELECT * FROM main.{table} WHERE run = {_literal(run)}")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path))
        try:
            check_layout(self.db, path)
        except StoreError:
            self.db.close()
            raise
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._runs_known: set[str] = set()

    # -- writes (the caller commits once per batch) -------------------------------------
    def add_run(self, run: str) -> None:
        """Note a run (its first message); once per run and process."""
        if run not in self._runs_known:
            self.db.execute("INSERT OR IGNORE INTO runs (run, first_seen) VALUES (?, ?)", (run, time.time()))
            self._runs_known.add(run)

    def finish_run(self, run: str, stats: dict[str, Any]) -> None:
        self.db.execute("UPDATE runs SET finished_at = ?, stats = ? WHERE run = ?",
                        (time.time(), json.dumps(stats), run))

    def _note_runs(self, runs: set[str]) -> None:
        for run in runs - self._runs_known:
            self.add_run(run)

    def add_readings(self, rows: list[tuple[Reading, float]]) -> None:
        self._note_runs({r.run for r, _ in rows})
        self.db.executemany(
            f"INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?, {', '.join('?' for _ in READING_FIELDS)}, ?, ?)",
            [(r.run, r.house, r.ts, r.seq, *(getattr(r, f) for f in READING_FIELDS), r.sent_at, at)
             for r, at in rows],
        )

    def add_forecasts(self, rows: list[tuple[Forecast, float]]) -> None:
        self._note_runs({f.run for f, _ in rows})
        self.db.executemany(
            "INSERT OR IGNORE INTO forecasts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(f.run, f.house, f.model, f.issued_at, f.model_version, f.seq, f.target_ts, f.value,
              f.reading_sent_at, at) for f, at in rows],
        )

    def add_matches(self, run: str, matches: Iterable[Match]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO matches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(run, m.house, m.model, m.issued_at, m.target_ts, m.forecast, m.actual, m.error) for m in matches],
        )

    def add_end(self, end: EndOfStream, at: float) -> None:
        self._note_runs({end.run})
        self.db.execute("INSERT OR REPLACE INTO ends VALUES (?, ?, ?, ?, ?, ?)",
                        (end.run, end.house, end.readings, end.last_seq, end.last_ts, at))

    def add_rejection(self, topic: str, reason: str, payload: bytes, at: float, run: str | None = None) -> None:
        self.db.execute("INSERT INTO rejections (received_at, topic, reason, payload_head, run) VALUES (?, ?, ?, ?, ?)",
                        (at, topic[:256], reason[:500], bytes(payload[:256]), run))

    def set_node(self, s: Status) -> None:
        """The node's newest status; a last will (no counters) keeps the counters stored before."""
        self.db.execute(
            "INSERT INTO nodes VALUES (?, ?, ?, ?, ?) ON CONFLICT (node) DO UPDATE SET role = excluded.role, "
            "state = excluded.state, ts = excluded.ts, "
            "counters = CASE WHEN ? THEN excluded.counters ELSE nodes.counters END",
            (s.node, s.role, s.state, s.ts, json.dumps(s.counters or {}), s.counters is not None))

    def set_summary(self, metrics: Iterable[Metrics]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO summary VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(m.run, m.house, m.model, m.n, m.mse, m.rmse, m.mae, m.unmatched, m.pending) for m in metrics],
        )

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def commit(self) -> None:
        self.db.commit()

    # -- reads ---------------------------------------------------------------------------
    def run(self, run: str | None = None) -> str:
        """``run`` if stored, else the newest run (:func:`select_run`)."""
        return select_run(self.db, run)

    def unfinished_runs(self) -> list[str]:
        return [r for (r,) in self.db.execute("SELECT run FROM runs WHERE finished_at IS NULL ORDER BY first_seen")]

    def is_finished(self, run: str) -> bool:
        row = self.db.execute("SELECT finished_at FROM runs WHERE run = ?", (run,)).fetchone()
        return row is not None and row[0] is not None

    def run_stats(self, run: str) -> dict[str, Any]:
        return run_stats(self.db, run)

    def run_readings(self, run: str) -> list[tuple[str, int, int, float]]:
        """(house, ts, seq, global_active_power) of every stored reading of ``run``."""
        return self.db.execute("SELECT house, ts, seq, global_active_power FROM readings WHERE run = ? "
                               "ORDER BY house, ts", (run,)).fetchall()

    def run_forecasts(self, run: str) -> list[Forecast]:
        return [Forecast(h, m, v, seq, issued, target, value, sent, run=run) for h, m, v, seq, issued, target, value, sent
                in self.db.execute("SELECT house, model, model_version, seq, issued_at, target_ts, value, "
                                   "reading_sent_at FROM forecasts WHERE run = ? ORDER BY house, model, issued_at",
                                   (run,))]

    def run_ends(self, run: str) -> list[EndOfStream]:
        return [EndOfStream(h, n, last_seq, last_ts, run=run) for h, n, last_seq, last_ts in self.db.execute(
            "SELECT house, readings, last_seq, last_ts FROM ends WHERE run = ?", (run,))]

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def summary(self, run: str | None = None) -> list[dict[str, Any]]:
        """The summary of ``run`` (default: the newest run; none if the store holds no run)."""
        if run is None:
            try:
                run = self.run()
            except StoreError:
                return []
        cur = self.db.execute("SELECT * FROM summary WHERE run = ? ORDER BY house, model", (run,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def count(self, table: str, run: str | None = None) -> int:
        if table not in ("readings", "forecasts", "matches", "ends", "rejections", "nodes", "summary", "runs"):
            raise ValueError(f"no table {table!r}")
        if run is None:
            return self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        return self.db.execute(f"SELECT COUNT(*) FROM {table} WHERE run = ?", (run,)).fetchone()[0]

    def published(self, run: str) -> int:
        """Readings the simulator says it published in ``run`` (its ends)."""
        return self.db.execute("SELECT COALESCE(SUM(readings), 0) FROM ends WHERE run = ?", (run,)).fetchone()[0]

    def pooled(self, run: str) -> list[tuple[str, int, float, float]]:
        """(model, n, mse, mae) of ``run`` over every house."""
        return self.db.execute("SELECT model, COUNT(*), AVG(error * error), AVG(ABS(error)) FROM matches "
                               "WHERE run = ? GROUP BY model", (run,)).fetchall()

    def missing(self, run: str, models: Iterable[str], houses: Iterable[str] = ()) -> list[str]:
        """What a finished replay should have stored and did not, one line per house (and model).

        Per house, the simulator's end of stream says how many readings it published; a
        predictor forecasts after every reading but a house's first (docs/contract.md).
        ``houses``: the houses that were replayed (one whose end never arrived is named).
        """
        ends = dict(self.db.execute("SELECT house, readings FROM ends WHERE run = ?", (run,)))
        stored = dict(self.db.execute("SELECT house, COUNT(*) FROM readings WHERE run = ? GROUP BY house", (run,)))
        forecasts = {(h, m): n for h, m, n in self.db.execute(
            "SELECT house, model, COUNT(*) FROM forecasts WHERE run = ? GROUP BY house, model", (run,))}
        out = [f"{h}: no end of stream" for h in sorted(set(houses) - set(ends))]
        for house, published in sorted(ends.items()):
            if stored.get(house, 0) < published:
                out.append(f"{house}: {published - stored.get(house, 0)} of {published} readings")
            for model in models:
                want, got = max(published - 1, 0), forecasts.get((house, model), 0)
                if got < want:
                    out.append(f"{house}: {want - got} of {want} {model} forecasts")
        return out

    def close(self) -> None:
        self.db.close()
