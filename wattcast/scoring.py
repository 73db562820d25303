"""Matching forecasts to actual readings and scoring them, in memory.

A forecast of house ``h`` for ``target_ts`` is matched to the reading of ``h`` at
``target_ts``, whichever arrives first; each (house, model, issued_at) and each
(house, ts) counts once, so QoS 1 redelivery changes nothing.  A second message for
a key already known with another value is a :class:`Conflict`: the first stays scored,
the second is rejected, never taken silently (the collector counts, logs and stores it).
Per (house, model):
cumulative n / MSE / MAE and the MSE over a rolling event-time window.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from wattcast.contract import DEFAULT_RUN, Forecast, Metrics, ModelName, Reading


class Conflict(ValueError):
    """A second, different message for a (house, ts) or (house, model, issued_at) already scored."""


@dataclass(frozen=True, slots=True)
class Match:
    house: str
    model: str
    issued_at: int
    target_ts: int
    forecast: float
    actual: float

    @property
    def error(self) -> float:
        return self.forecast - self.actual


@dataclass
class ModelScore:
    window_s: int
    n: int = 0
    sse: float = 0.0
    sae: float = 0.0
    as_of: int = 0
    window: deque = field(default_factory=deque)  # (target_ts, squared error)
    window_sse: float = 0.0

    def add(self, target_ts: int, error: float) -> None:
        sq = error * error
        self.n += 1
        self.sse += sq
        self.sae += abs(error)
        self.as_of = max(self.as_of, target_ts)
        self.window.append((target_ts, sq))
        self.window_sse += sq
        horizon = self.as_of - self.window_s
        while self.window and self.window[0][0] <= horizon:
            self.window_sse -= self.window.popleft()[1]

    @property
    def mse(self) -> float:
        return self.sse / self.n if self.n else 0.0

    @property
    def mae(self) -> float:
        return self.sae / self.n if self.n else 0.0

    @property
    def rolling_mse(self) -> float:
        return max(self.window_sse, 0.0) / len(self.window) if self.window else 0.0


def pooled(parts: Iterable[tuple[int, float | None]]) -> float | None:
    """A mean over several houses' matched forecasts together, from each house's (n, mean): every
    forecast counts once (n-weighted).  None if no house has a scored forecast.  The one pooling
    rule of wattcast run's summary, the report's aggregate and the live table."""
    total = weighted = 0.0
    for n, mean in parts:
        if n and mean is not None:
            total += n
            weighted += n * mean
    return weighted / total if total else None


def rolling_mse(ts, errors, window_s: int) -> list[float]:
    """The rolling MSE after each of a model's matches (``ts``: their targets, sorted; ``errors``:
    forecast - actual), as the collector publishes it: the same :class:`ModelScore`, fed in order."""
    score = ModelScore(window_s)
    out = []
    for t, e in zip(ts, errors, strict=True):
        score.add(int(t), float(e))
        out.append(score.rolling_mse)
    return out


class SeqPrefix:
    """The longest run of sequence numbers ``start, start + 1, ...`` seen so far, holes remembered."""

    __slots__ = ("next", "ahead", "newest")

    def __init__(self, start: int = 0) -> None:
        self.next = start
        self.ahead: set[int] = set()
        #: the highest seq seen, holes or not (-1: none)
        self.newest = -1

    def add(self, seq: int) -> None:
        if seq < self.next:
            return
        self.newest = max(self.newest, seq)
        self.ahead.add(seq)
        while self.next in self.ahead:
            self.ahead.discard(self.next)
            self.next += 1

    @property
    def last(self) -> int:
        """The newest seq with every earlier one seen (``start - 1``: none)."""
        return self.next - 1


class Scoreboard:
    """The scores of one run (the caller keeps one per run: keys here are houses, not runs)."""

    def __init__(self, window_s: int = 3600, run: str = DEFAULT_RUN) -> None:
        self.window_s = window_s
        self.run = run
        self.actuals: dict[str, dict[int, float]] = defaultdict(dict)
        self.newest: dict[str, int] = {}
        self.waiting: dict[str, dict[int, list[Forecast]]] = defaultdict(lambda: defaultdict(list))
        self.seen: dict[tuple[str, str, int], float] = {}  # forecast key -> value
        self.scores: dict[tuple[str, ModelName], ModelScore] = {}
        #: per house the readings' seqs, per (house, model) the forecasts' (the first comes after reading 1)
        self.reading_seqs: dict[str, SeqPrefix] = defaultdict(SeqPrefix)
        self.forecast_seqs: dict[tuple[str, str], SeqPrefix] = defaultdict(lambda: SeqPrefix(1))
        self.duplicates = 0

    def _score(self, house: str, model: ModelName) -> ModelScore:
        key = (house, model)
        score = self.scores.get(key)
        if score is None:
            score = self.scores[key] = ModelScore(self.window_s)
        return score

    def _match(self, f: Forecast, actual: float) -> Match:
        m = Match(f.house, f.model, f.issued_at, f.target_ts, f.value, actual)
        self._score(f.house, f.model).add(f.target_ts, m.error)
        return m

    def add_reading(self, r: Reading) -> list[Match] | None:
        """Matches completed by this reading; None if the reading was already known; Conflict if
        another value is known for its minute."""
        new = self.add_actual(r.house, r.ts, r.global_active_power)
        self.reading_seqs[r.house].add(r.seq)
        return new

    def add_actual(self, house: str, ts: int, value: float) -> list[Match] | None:
        known = self.actuals[house]
        if ts in known:
            if known[ts] != value:
                raise Conflict(f"conflict: reading of {house} at ts {ts} says {value} kW, {known[ts]} kW is already scored")
            self.duplicates += 1
            return None
        known[ts] = value
        self.newest[house] = max(self.newest.get(house, ts), ts)
        waiting = self.waiting[house].pop(ts, ())
        return [self._match(f, value) for f in waiting]

    def add_forecast(self, f: Forecast) -> tuple[bool, Match | None]:
        """(new, match): new is False for a forecast already seen; match if its actual is known.
        Conflict if another value was seen for its (house, model, issued_at)."""
        key = (f.house, f.model, f.issued_at)
        if key in self.seen:
            if self.seen[key] != f.value:
                raise Conflict(
                    f"conflict: forecast of {f.model} for {f.house} issued at {f.issued_at} says "
                    f"{f.value} kW, {self.seen[key]} kW is already scored"
                )
            self.duplicates += 1
            return False, None
        self.seen[key] = f.value
        self.forecast_seqs[(f.house, f.model)].add(f.seq)
        self._score(f.house, f.model)
        actual = self.actuals[f.house].get(f.target_ts)
        if actual is None:
            self.waiting[f.house][f.target_ts].append(f)
            return True, None
        return True, self._match(f, actual)

    def complete(self, models: tuple[str, ...]) -> int:
        """The newest minute up to which every house seen has every reading and every model's
        forecast, with no hole (-1: none): what a simulator need not send again."""
        if not self.reading_seqs:
            return -1
        return min(
            min(prefix.last, *(self.forecast_seqs[(house, m)].last for m in models))
            for house, prefix in self.reading_seqs.items()
        )

    def open_counts(self, house: str, model: str) -> tuple[int, int]:
        """(unmatched, pending): waiting forecasts whose target is already past / still ahead."""
        newest = self.newest.get(house, -1)
        unmatched = pending = 0
        for target, forecasts in self.waiting.get(house, {}).items():
            k = sum(1 for f in forecasts if f.model == model)
            if target <= newest:
                unmatched += k
            else:
                pending += k
        return unmatched, pending

    def metrics(self, house: str, model: ModelName) -> Metrics:
        s = self._score(house, model)
        unmatched, pending = self.open_counts(house, model)
        as_of = s.as_of or self.newest.get(house) or 631152000
        return Metrics(
            house,
            model,
            as_of,
            s.n,
            s.mse,
            math.sqrt(s.mse),
            s.mae,
            len(s.window),
            s.rolling_mse,
            self.window_s,
            unmatched,
            pending,
            run=self.run,
        )
