"""Predictor checkpoints that every replica of a model reads: per house, its state and last reading.

A sharded deployment runs each model as replicas that take over a shard from one another
(docs/scale-out.md).  The active replica saves the state of the houses it moved on before it
acknowledges their readings; a replica that takes a shard over loads a house's state from here
when that house's next reading is not the one after what it holds.  The table lives in a
PostgreSQL database (the deployment's) or an SQLite file (replicas on one machine).

A save never goes back: a row is only replaced by a later reading's state, so a replica that
lost its shard but was still finishing a batch cannot undo the newer replica's work.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from wattcast.store.database import Database, connect_postgres, connect_sqlite, is_postgres, shown, sql_types

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    model TEXT NOT NULL, run TEXT NOT NULL, house TEXT NOT NULL, model_version TEXT NOT NULL,
    last_seq INTEGER NOT NULL, state TEXT NOT NULL, saved_at REAL NOT NULL,
    PRIMARY KEY (model, run, house)
);
"""


class SharedCheckpoints:
    """The checkpoints of one model (``model``, ``version``) at ``location``."""

    def __init__(self, location: str | Path, model: str, version: str) -> None:
        self.shown = shown(location)
        self.model, self.version = model, version
        self.db: Database
        if is_postgres(location):
            self.db = connect_postgres(str(location))
        else:
            Path(location).parent.mkdir(parents=True, exist_ok=True)
            self.db = connect_sqlite(location)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout = 10000")  # replicas share the file
        try:
            self.db.executescript(SCHEMA if self.db.dialect == "sqlite" else sql_types(SCHEMA))
            self.db.commit()
        except Exception:
            self.db.close()
            raise

    def save(self, streams: list[tuple[str, str, int, Any]]) -> None:
        """(run, house, last_seq, state) of each house; kept where it is newer than the saved one."""
        now = time.time()
        self.db.executemany(
            "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model, run, house) DO UPDATE SET "
            "model_version = excluded.model_version, last_seq = excluded.last_seq, state = excluded.state, "
            "saved_at = excluded.saved_at WHERE checkpoints.last_seq < excluded.last_seq",
            [
                (self.model, run, house, self.version, seq, json.dumps(state, separators=(",", ":"), allow_nan=False), now)
                for run, house, seq, state in streams
            ],
        )
        self.db.commit()

    def load(self, run: str, house: str) -> tuple[int, Any] | None:
        """(last_seq, state) saved for the house by this model's version, or None."""
        row = self.db.execute(
            "SELECT last_seq, state, model_version FROM checkpoints WHERE model = ? AND run = ? AND house = ?",
            (self.model, run, house),
        ).fetchone()
        self.db.commit()  # end the read: the next one sees what other replicas saved since
        if row is None:
            return None
        seq, state, version = row
        if version != self.version:
            raise ValueError(f"saved by {self.model} {version}, this node runs {self.version}")
        return int(seq), json.loads(state)

    def close(self) -> None:
        self.db.close()
