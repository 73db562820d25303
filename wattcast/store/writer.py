"""The collector's store: writes once per batch, and the reads the collector itself needs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wattcast.contract import READING_FIELDS, EndOfStream, Forecast, Metrics, Reading, Status
from wattcast.scoring import Match
from wattcast.store.database import Database, connect_postgres, connect_sqlite, is_postgres, shown
from wattcast.store.reader import run_stats, select_run
from wattcast.store.schema import StoreError, check_layout, create_tables, replace_sql


class Store:
    """A collector's store at ``location``: an SQLite file (made with its folder) or a ``postgresql://`` URL."""

    def __init__(self, location: str | Path) -> None:
        self.location = location
        self.shown = shown(location)
        self.db: Database
        if is_postgres(location):
            self.db = connect_postgres(str(location))
        else:
            if str(location) != ":memory:":
                Path(location).parent.mkdir(parents=True, exist_ok=True)
            self.db = connect_sqlite(location)
        try:
            check_layout(self.db, self.shown, upgrade=True)
            if self.db.dialect == "sqlite":
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.execute("PRAGMA busy_timeout = 30000")  # sharded collectors of one run may share the file
            create_tables(self.db)
            self.db.commit()
        except Exception:
            self.db.close()
            raise
        self._runs_known: set[str] = set()

    # -- writes (the caller commits once per batch) -------------------------------------
    def add_run(self, run: str) -> None:
        """Note a run (its first message); once per run and process."""
        if run not in self._runs_known:
            self.db.execute("INSERT INTO runs (run, first_seen) VALUES (?, ?) ON CONFLICT DO NOTHING", (run, time.time()))
            self._runs_known.add(run)

    def finish_run(self, run: str, stats: dict[str, Any]) -> None:
        self.db.execute("UPDATE runs SET finished_at = ?, stats = ? WHERE run = ?", (time.time(), json.dumps(stats), run))

    def _note_runs(self, runs: set[str]) -> None:
        for run in runs - self._runs_known:
            self.add_run(run)

    def add_readings(self, rows: list[tuple[Reading, float]]) -> None:
        self._note_runs({r.run for r, _ in rows})
        self.db.executemany(
            f"INSERT INTO readings VALUES (?, ?, ?, ?, {', '.join('?' for _ in READING_FIELDS)}, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(r.run, r.house, r.ts, r.seq, *(getattr(r, f) for f in READING_FIELDS), r.sent_at, at) for r, at in rows],
        )

    def add_forecasts(self, rows: list[tuple[Forecast, float]]) -> None:
        self._note_runs({f.run for f, _ in rows})
        self.db.executemany(
            "INSERT INTO forecasts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (f.run, f.house, f.model, f.issued_at, f.model_version, f.seq, f.target_ts, f.value, f.reading_sent_at, at)
                for f, at in rows
            ],
        )

    def add_house_shards(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """(run, house, shard) of houses a sharded collector scores (a house's shard never changes)."""
        self.db.executemany("INSERT INTO shards VALUES (?, ?, ?) ON CONFLICT DO NOTHING", list(rows))

    def house_shards(self, run: str) -> dict[str, int]:
        return dict(self.db.execute("SELECT house, shard FROM shards WHERE run = ?", (run,)).fetchall())

    def add_matches(self, run: str, matches: Iterable[Match]) -> None:
        self.db.executemany(
            "INSERT INTO matches VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(run, m.house, m.model, m.issued_at, m.target_ts, m.forecast, m.actual, m.error) for m in matches],
        )

    def add_end(self, end: EndOfStream, at: float) -> None:
        self._note_runs({end.run})
        self.db.execute(
            replace_sql("ends", ("run", "house", "readings", "last_seq", "last_ts", "received_at")),
            (end.run, end.house, end.readings, end.last_seq, end.last_ts, at),
        )

    def add_rejection(self, topic: str, reason: str, payload: bytes, at: float, run: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO rejections (received_at, topic, reason, payload_head, run) VALUES (?, ?, ?, ?, ?)",
            (at, topic[:256], reason[:500], bytes(payload[:256]), run),
        )

    def set_node(self, s: Status) -> None:
        """The node's newest status (:meth:`Status.after` the one stored: a last will keeps the counters)."""
        row = self.db.execute("SELECT role, state, ts, counters, model FROM nodes WHERE node = ?", (s.node,)).fetchone()
        if row is not None:
            role, state, ts, counters, model = row
            s = s.after(Status(s.node, state, role, ts, json.loads(counters), model))
        self.db.execute(
            replace_sql("nodes", ("node", "role", "state", "ts", "counters", "model")),
            (s.node, s.role, s.state, s.ts, json.dumps(s.counters or {}), s.model),
        )

    def set_summary(self, metrics: Iterable[Metrics]) -> None:
        self.db.executemany(
            replace_sql("summary", ("run", "house", "model", "n", "mse", "rmse", "mae", "unmatched", "pending")),
            [(m.run, m.house, m.model, m.n, m.mse, m.rmse, m.mae, m.unmatched, m.pending) for m in metrics],
        )

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute(replace_sql("meta", ("key", "value")), (key, json.dumps(value)))

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

    def run_ends(self, run: str, houses: set[str] | None = None) -> list[EndOfStream]:
        """The ends of stream stored of ``run`` (of ``houses`` only, if given)."""
        return [
            EndOfStream(h, n, last_seq, last_ts, run=run)
            for h, n, last_seq, last_ts in self.db.execute(
                "SELECT house, readings, last_seq, last_ts FROM ends WHERE run = ?", (run,)
            )
            if houses is None or h in houses
        ]

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
        query = "SELECT CAST(COALESCE(SUM(readings), 0) AS BIGINT) FROM ends WHERE run = ?"
        return self.db.execute(query, (run,)).fetchone()[0]

    def missing(
        self, run: str, models: Iterable[str], houses: Iterable[str] = (), within: set[str] | None = None
    ) -> list[str]:
        """What a finished replay should have stored and did not, one line per house (and model).

        Per house, the simulator's end of stream says how many readings it published; a
        predictor forecasts after every reading but a house's first (docs/contract.md).
        ``houses``: the houses that were replayed (one whose end never arrived is named);
        ``within``: only these houses (a sharded collector's).
        """
        ends = dict(self.db.execute("SELECT house, readings FROM ends WHERE run = ?", (run,)))
        if within is not None:
            ends = {h: n for h, n in ends.items() if h in within}
            houses = [h for h in houses if h in within]
        stored = dict(self.db.execute("SELECT house, COUNT(*) FROM readings WHERE run = ? GROUP BY house", (run,)))
        forecasts = {
            (h, m): n
            for h, m, n in self.db.execute(
                "SELECT house, model, COUNT(*) FROM forecasts WHERE run = ? GROUP BY house, model", (run,)
            )
        }
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
