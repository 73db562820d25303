"""What the collector holds of one run (one replay) while it scores it."""

from __future__ import annotations

import logging
import time

from wattcast.contract import EndOfStream, Reading
from wattcast.scoring import Scoreboard
from wattcast.store import Store, replay_run

log = logging.getLogger(__name__)


class RunState:
    """What the collector holds of one run (one replay): its scoreboard, its ends, how far it is."""

    def __init__(self, run: str, window_s: int) -> None:
        self.run = run
        self.board = Scoreboard(window_s, run)
        self.ends: dict[str, EndOfStream] = {}
        self.finished = False
        self.missing: list[str] = []
        self.conflicts = 0
        #: a message of this run arrived since the collector started (a restored run may get none)
        self.active = False
        self.newest: Reading | None = None  # the newest reading stored
        self.complete_sent = -1  # Scoreboard.complete when the last Progress was sent
        self.last_progress = time.monotonic()
        #: sharded collectors: the shard of each house scored here, and the shards restored from the store
        self.shard_of: dict[str, int] = {}
        self.restored_shards: set[int] = set()

    def restore(self, store: Store, models: tuple[str, ...]) -> int:
        """Rebuild the scores from what the store holds of this run; returns the rows taken.

        Matching is order-independent and idempotent, so replaying the stored readings and
        forecasts gives the state the collector had; the broker's persistent session then
        delivers what arrived while it was down.
        """
        rows = replay_run(store.db, self.run, self.board, models)
        self.ends = {e.house: e for e in store.run_ends(self.run)}
        self.finished = store.is_finished(self.run)
        return rows

    def restore_shard(self, store: Store, models: tuple[str, ...], shard: int) -> int:
        """Take what the store holds of the houses of ``shard`` (a sharded collector took the shard
        over, or starts with it); returns the rows taken."""
        mine = {h for h, k in store.house_shards(self.run).items() if k == shard}
        rows = replay_run(store.db, self.run, self.board, models, mine) if mine else 0
        self.ends.update({e.house: e for e in store.run_ends(self.run, mine)} if mine else {})
        self.shard_of.update(dict.fromkeys(mine, shard))
        self.restored_shards.add(shard)
        if mine:
            log.info("collector: shard %d of run %s: restored %d houses (%d rows)", shard, self.run, len(mine), rows)
        return rows

    def ended(self, models: tuple[str, ...]) -> bool:
        """Every announced house has the forecast of its last reading from every model."""
        if not self.ends:
            return False
        if not set(self.board.actuals) <= set(self.ends):
            return False
        seqs = self.board.forecast_seqs
        return all(seqs[(h, m)].newest >= self.ends[h].last_seq for h in self.ends for m in models)
