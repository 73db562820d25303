"""The collector's SQLite store: everything a report needs, after the fact.

Tables (one row per message, keyed so that a redelivered message is stored once):

* ``readings(house, ts, seq, <7 measurements>, sent_at, received_at)``
* ``forecasts(house, model, issued_at, model_version, seq, target_ts, value, reading_sent_at, received_at)``
* ``matches(house, model, issued_at, target_ts, forecast, actual, error)``
* ``ends(house, readings, last_seq, last_ts, received_at)``
* ``rejections(id, received_at, topic, reason, payload_head)``
* ``nodes(node, role, state, ts, counters)``: each node's newest status
* ``summary(house, model, n, mse, rmse, mae, unmatched, pending)``: written at end of stream
* ``meta(key, value)``: JSON facts of the run (window, models, timings)
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from collector.scoring import Match
from wattcast.messages import READING_FIELDS, EndOfStream, Forecast, Metrics, Reading, Status

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS readings (
    house TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,
    {", ".join(f"{f} REAL NOT NULL" for f in READING_FIELDS)},
    sent_at REAL, received_at REAL NOT NULL,
    PRIMARY KEY (house, ts)
);
CREATE TABLE IF NOT EXISTS forecasts (
    house TEXT NOT NULL, model TEXT NOT NULL, issued_at INTEGER NOT NULL,
    model_version TEXT NOT NULL, seq INTEGER NOT NULL, target_ts INTEGER NOT NULL, value REAL NOT NULL,
    reading_sent_at REAL, received_at REAL NOT NULL,
    PRIMARY KEY (house, model, issued_at)
);
CREATE TABLE IF NOT EXISTS matches (
    house TEXT NOT NULL, model TEXT NOT NULL, issued_at INTEGER NOT NULL, target_ts INTEGER NOT NULL,
    forecast REAL NOT NULL, actual REAL NOT NULL, error REAL NOT NULL,
    PRIMARY KEY (house, model, issued_at)
);
CREATE TABLE IF NOT EXISTS ends (
    house TEXT PRIMARY KEY, readings INTEGER NOT NULL, last_seq INTEGER NOT NULL, last_ts INTEGER NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,
    payload_head BLOB
);
CREATE TABLE IF NOT EXISTS nodes (
    node TEXT PRIMARY KEY, role TEXT NOT NULL, state TEXT NOT NULL, ts REAL, counters TEXT
);
CREATE TABLE IF NOT EXISTS summary (
    house TEXT NOT NULL, model TEXT NOT NULL, n INTEGER NOT NULL, mse REAL NOT NULL, rmse REAL NOT NULL,
    mae REAL NOT NULL, unmatched INTEGER NOT NULL, pending INTEGER NOT NULL,
    PRIMARY KEY (house, model)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    # -- writes (the caller commits once per batch) -------------------------------------
    def add_readings(self, rows: Iterable[tuple[Reading, float]]) -> None:
        self.db.executemany(
            f"INSERT OR IGNORE INTO readings VALUES (?, ?, ?, {', '.join('?' for _ in READING_FIELDS)}, ?, ?)",
            [(r.house, r.ts, r.seq, *(getattr(r, f) for f in READING_FIELDS), r.sent_at, at) for r, at in rows],
        )

    def add_forecasts(self, rows: Iterable[tuple[Forecast, float]]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO forecasts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(f.house, f.model, f.issued_at, f.model_version, f.seq, f.target_ts, f.value, f.reading_sent_at, at)
             for f, at in rows],
        )

    def add_matches(self, matches: Iterable[Match]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO matches VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(m.house, m.model, m.issued_at, m.target_ts, m.forecast, m.actual, m.error) for m in matches],
        )

    def add_end(self, end: EndOfStream, at: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO ends VALUES (?, ?, ?, ?, ?)",
                        (end.house, end.readings, end.last_seq, end.last_ts, at))

    def add_rejection(self, topic: str, reason: str, payload: bytes, at: float) -> None:
        self.db.execute("INSERT INTO rejections (received_at, topic, reason, payload_head) VALUES (?, ?, ?, ?)",
                        (at, topic[:256], reason[:500], bytes(payload[:256])))

    def set_node(self, s: Status) -> None:
        """The node's newest status; a last will (no counters) keeps the counters stored before."""
        self.db.execute(
            "INSERT INTO nodes VALUES (?, ?, ?, ?, ?) ON CONFLICT (node) DO UPDATE SET role = excluded.role, "
            "state = excluded.state, ts = excluded.ts, "
            "counters = CASE WHEN ? THEN excluded.counters ELSE nodes.counters END",
            (s.node, s.role, s.state, s.ts, json.dumps(s.counters or {}), s.counters is not None))

    def set_summary(self, metrics: Iterable[Metrics]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO summary VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(m.house, m.model, m.n, m.mse, m.rmse, m.mae, m.unmatched, m.pending) for m in metrics],
        )

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def commit(self) -> None:
        self.db.commit()

    # -- reads ---------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def summary(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM summary ORDER BY house, model")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def count(self, table: str) -> int:
        if table not in ("readings", "forecasts", "matches", "ends", "rejections", "nodes", "summary"):
            raise ValueError(f"no table {table!r}")
        return self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def missing(self, models: Iterable[str], houses: Iterable[str] = ()) -> list[str]:
        """What a finished replay should have stored and did not, one line per house (and model).

        Per house, the simulator's end of stream says how many readings it published; a
        predictor forecasts after every reading but a house's first (docs/contract.md).
        ``houses``: the houses that were replayed (one whose end never arrived is named).
        """
        ends = dict(self.db.execute("SELECT house, readings FROM ends"))
        stored = dict(self.db.execute("SELECT house, COUNT(*) FROM readings GROUP BY house"))
        forecasts = {(h, m): n for h, m, n in self.db.execute(
            "SELECT house, model, COUNT(*) FROM forecasts GROUP BY house, model")}
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
