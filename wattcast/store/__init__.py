"""The collector's SQLite store: everything a report needs, after the fact.

* :mod:`~wattcast.store.schema`: the tables (one layout, every row names its run);
* :mod:`~wattcast.store.writer`: :class:`Store`, what the collector writes and reads back;
* :mod:`~wattcast.store.reader`: the runs a store holds and one run's rows, for the
  report, ``wattcast run`` and ``wattcast bench``.

This package owns the store's SQL.
"""

from wattcast.store.reader import RunReader, open_readonly, replay_run, run_stats, runs, select_run, view_run
from wattcast.store.schema import LAYOUT, RUN_TABLES, SCHEMA, StoreError, check_layout
from wattcast.store.writer import Store

__all__ = [
    "LAYOUT",
    "RUN_TABLES",
    "SCHEMA",
    "RunReader",
    "Store",
    "StoreError",
    "check_layout",
    "open_readonly",
    "replay_run",
    "run_stats",
    "runs",
    "select_run",
    "view_run",
]
