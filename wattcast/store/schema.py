"""The collector store's tables, as SQL: one layout, checked on open.

One store holds any number of runs (replays); every row names its run.  Tables
(one row per message, keyed so that a redelivered message is stored once):

* ``runs(run, first_seen, finished_at, stats)``: every run seen; ``finished_at`` and
  the collector's counters (``stats``, JSON) once its end of stream is scored
* ``readings(run, house, ts, seq, <7 measurements>, sent_at, received_at)``
* ``forecasts(run, house, model, issued_at, model_version, seq, target_ts, value, reading_sent_at, received_at)``
* ``matches(run, house, model, issued_at, target_ts, forecast, actual, error)``
* ``ends(run, house, readings, last_seq, last_ts, received_at)``
* ``rejections(id, received_at, topic, reason, payload_head, run)``: ``run`` when known
* ``nodes(node, role, state, ts, counters, model)``: each node's newest status (``model``: a predictor's)
* ``summary(run, house, model, n, mse, rmse, mae, unmatched, pending)``: written at end of stream
* ``meta(key, value)``: JSON facts of the collector (window, models) and of the newest finished run
* ``shards(run, house, shard)``: the shard of each house, where collectors are sharded (RabbitMQ)
"""

from __future__ import annotations

from pathlib import Path

from wattcast.contract import READING_FIELDS
from wattcast.store.database import Database, sql_types

#: ``PRAGMA user_version`` of this layout (2: every row names its run; 3: a reading's measurements
#: other than global active power may be NULL, for meters that do not measure them)
LAYOUT = 3

#: global active power is required, the other measurements optional (as in the contract)
READING_COLUMNS = ", ".join(f"{f} REAL{' NOT NULL' if f == 'global_active_power' else ''}" for f in READING_FIELDS)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY, first_seen REAL NOT NULL, finished_at REAL, stats TEXT
);
CREATE TABLE IF NOT EXISTS readings (
    run TEXT NOT NULL, house TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,
    {READING_COLUMNS},
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
    node TEXT PRIMARY KEY, role TEXT NOT NULL, state TEXT NOT NULL, ts REAL, counters TEXT, model TEXT
);
CREATE TABLE IF NOT EXISTS summary (
    run TEXT NOT NULL, house TEXT NOT NULL, model TEXT NOT NULL, n INTEGER NOT NULL, mse REAL NOT NULL,
    rmse REAL NOT NULL, mae REAL NOT NULL, unmatched INTEGER NOT NULL, pending INTEGER NOT NULL,
    PRIMARY KEY (run, house, model)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shards (
    run TEXT NOT NULL, house TEXT NOT NULL, shard INTEGER NOT NULL, PRIMARY KEY (run, house)
);
"""

#: the columns of each table that keep one row of its kind: an upsert's conflict target
KEYS = {
    "ends": ("run", "house"),
    "nodes": ("node",),
    "summary": ("run", "house", "model"),
    "meta": ("key",),
}


def create_tables(db: Database) -> None:
    """The tables of this layout, where they are missing (in the database's own types), and the layout's number."""
    if db.dialect == "postgresql":  # collectors starting together: one creates, the others wait (till commit)
        db.execute("SELECT pg_advisory_xact_lock(7243015)")
    db.executescript(SCHEMA if db.dialect == "sqlite" else sql_types(SCHEMA))
    db.set_layout(LAYOUT)


def replace_sql(table: str, columns: tuple[str, ...]) -> str:
    """``INSERT`` a row of ``table`` or, where its key (:data:`KEYS`) is taken, overwrite that row: in the
    SQL both SQLite and PostgreSQL speak (``ON CONFLICT ... DO UPDATE``)."""
    key = KEYS[table]
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


#: the tables whose rows belong to one run
RUN_TABLES = ("readings", "forecasts", "matches", "ends", "summary", "rejections")


class StoreError(ValueError):
    """A file that is not a store of this layout (one line, for the user)."""


def check_layout(db: Database, path: Path | str, upgrade: bool = False) -> None:
    """StoreError if ``db`` holds a collector store of another layout (an older wattcast).

    Layout 2 differs only in its readings' NOT NULL measurements: a reader reads it as
    it is, a writer (``upgrade``) rebuilds its readings table in one transaction.
    """
    version = db.layout()
    tables = db.tables()
    if "readings" in tables and version == 2:
        if upgrade:
            _upgrade_2_to_3(db)
        return
    if version == 0 and "runs" in tables:
        return  # another collector is making this store right now (every store with a runs table has a layout)
    if "readings" in tables and version != LAYOUT:
        raise StoreError(
            f"{path} was written by a wattcast {'before run ids' if version < 2 else 'newer'} "
            f"(store layout {version}, this one reads {LAYOUT}): move it away or give another --store"
        )


def _upgrade_2_to_3(db: Database) -> None:
    """Layout 2 to 3: the readings table again, with nullable measurements (rows copied as they are)."""
    with db.con:  # layout 2 was SQLite's only
        db.execute("ALTER TABLE readings RENAME TO readings_layout2")
        db.execute(
            "CREATE TABLE readings (run TEXT NOT NULL, house TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL, "
            f"{READING_COLUMNS}, sent_at REAL, received_at REAL NOT NULL, PRIMARY KEY (run, house, ts))"
        )
        db.execute("INSERT INTO readings SELECT * FROM readings_layout2")
        db.execute("DROP TABLE readings_layout2")
        db.set_layout(LAYOUT)
