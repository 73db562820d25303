"""A live view of the collector's metrics: one table row per model, updated in place.

:class:`LiveTable` keeps the newest :class:`~wattcast.contract.Metrics` of every
(house, model) and renders per model, aggregated over houses: houses, matched n,
rolling MSE (pooled over the houses' windows), cumulative MSE (pooled), matched
forecasts per second (from the growth of n over the last few seconds of wall time)
and unmatched forecasts.

:class:`LiveView` draws it on a stream: on a terminal it redraws the table in place
(ANSI cursor-up / clear-line); otherwise it prints one plain log line at most every
``plain_every`` seconds, and the whole table on ``close()``::

    view = LiveView(sys.stderr)
    for each decoded message:  view.update(msg)   # Metrics (and Status, optional)
    every loop iteration:      view.refresh()     # throttles itself
    at the end:                view.close()       # final table
    other output meanwhile:    view.log(line)     # keeps the table intact on a terminal
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from wattcast.contract import FRESH_STATUS_S, MODELS, Metrics, Status
from wattcast.scoring import pooled


@dataclass(frozen=True)
class ModelLine:
    """One model's numbers, aggregated over houses."""

    model: str
    houses: int
    n: int
    rolling_n: int
    rolling_mse: float | None
    mse: float | None
    rate: float
    unmatched: int
    pending: int
    window_s: int


class LiveTable:
    """The newest metrics per (house, model) and the per-model aggregate."""

    def __init__(
        self, rate_window: float = 5.0, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self.rate_window = rate_window
        self.clock = clock
        self.wall = wall  # for the age of a node's status (its ts is wall-clock time)
        #: the run shown (the newest one seen) and the runs seen before it
        self.run: str | None = None
        self.past_runs: set[str] = set()
        self.metrics: dict[tuple[str, str], Metrics] = {}
        self.nodes: dict[str, Status] = {}
        self.updates = 0
        #: per model: matched forecasts counted since the table started (growth of n only)
        self._counted: dict[str, int] = {}
        #: per model: (clock, counted) samples for the rate
        self._samples: dict[str, deque[tuple[float, int]]] = {}
        #: readings handled so far / in all (set by whoever knows the total: ``wattcast run``)
        self.done: int | None = None
        self.total: int | None = None
        self._done_samples: deque[tuple[float, int]] = deque()

    def set_progress(self, done: int, total: int) -> None:
        """Readings the pipeline has handled (the collector's progress) out of ``total``."""
        now = self.clock()
        if self.done is not None and done < self.done:
            return  # an older progress message
        self.done, self.total = done, total
        self._done_samples.append((now, done))
        while len(self._done_samples) > 2 and self._done_samples[1][0] <= now - self.rate_window:
            self._done_samples.popleft()

    def progress_text(self, now: float | None = None) -> str | None:
        """``readings 1,234/4,099 (30 %), 1,010/s, ETA 3 s`` (None before any progress)."""
        if self.done is None or not self.total:
            return None
        now = self.clock() if now is None else now
        text = f"readings {self.done:,}/{self.total:,} ({100 * self.done / self.total:.0f} %)"
        (t0, n0), n1 = self._done_samples[0], self._done_samples[-1][1]
        rate = (n1 - n0) / (now - t0) if now > t0 and n1 > n0 else 0.0
        if rate > 0:
            left = max(0, self.total - self.done) / rate
            eta = f"{left / 60:.0f} min" if left >= 120 else f"{left:.0f} s"
            text += f", {rate:,.0f}/s, ETA {eta}"
        return text

    def follow(self, run: str) -> bool:
        """Is ``run`` the one shown?  False for an earlier run's late message; a new run id starts
        the table afresh (and is shown from then on)."""
        if run == self.run:
            return True
        if run in self.past_runs:
            return False
        if self.run is not None:
            self.past_runs.add(self.run)
        self.run = run
        self.metrics.clear()
        self._counted.clear()
        self._samples.clear()
        return True

    def progress_of(self, house: str, seq: int, houses: int, total: int) -> None:
        """The collector has stored minute ``seq`` up to ``house`` (houses go h000, h001, ... each minute)."""
        k = int(house[1:]) if house[1:].isdigit() else houses - 1
        self.set_progress(min(total, seq * houses + k + 1), total)

    def node_state(self, node: str, heard: bool = False) -> str:
        """online, offline, or silent: a retained online status of a node gone long ago (an earlier
        run) is not shown as online; ``heard``: its status came live, so its node was there."""
        s = self.nodes[node]
        if s.state != "online":
            return "offline"
        return "online" if heard or (s.ts or 0) >= self.wall() - FRESH_STATUS_S else "silent"

    def update(self, m: Metrics) -> bool:
        """Take one metrics message; False if it is older than the one already held (redelivery) or
        of an earlier run.  The table follows the newest run: a new run id starts it afresh."""
        if not self.follow(m.run):
            return False  # an earlier run's late metrics
        key = (m.house, m.model)
        old = self.metrics.get(key)
        if old is not None and (m.as_of, m.n) < (old.as_of, old.n):
            return False
        self.metrics[key] = m
        self.updates += 1
        # A house seen for the first time adds no rate: its n was reached before we watched.
        grown = max(0, m.n - old.n) if old is not None else 0
        counted = self._counted.get(m.model, 0) + grown
        self._counted[m.model] = counted
        samples = self._samples.setdefault(m.model, deque())
        now = self.clock()
        samples.append((now, counted))
        self._prune(samples, now)
        return True

    def update_status(self, s: Status) -> None:
        old = self.nodes.get(s.node)
        if old is None or (s.ts or 0) >= (old.ts or 0):
            self.nodes[s.node] = s

    def _prune(self, samples: deque[tuple[float, int]], now: float) -> None:
        # Keep the newest sample at or before the window's start as the base of the rate.
        start = now - self.rate_window
        while len(samples) >= 2 and samples[1][0] <= start:
            samples.popleft()

    def rate(self, model: str, now: float | None = None) -> float:
        """Matched forecasts per second of ``model`` over the last ``rate_window`` seconds."""
        samples = self._samples.get(model)
        if not samples:
            return 0.0
        now = self.clock() if now is None else now
        self._prune(samples, now)
        base_t, base_n = samples[0]
        start = now - self.rate_window
        if base_t < start:
            base_t = start  # counted was base_n already at the window's start
        span = now - base_t
        return (samples[-1][1] - base_n) / span if span > 0 else 0.0

    def models(self) -> list[str]:
        names = {model for _, model in self.metrics}
        return [m for m in MODELS if m in names] + sorted(names - set(MODELS))

    def lines(self, now: float | None = None) -> list[ModelLine]:
        now = self.clock() if now is None else now
        out = []
        for model in self.models():
            ms = [m for (_, name), m in self.metrics.items() if name == model]
            n = sum(m.n for m in ms)
            rolling_n = sum(m.rolling_n for m in ms)
            out.append(
                ModelLine(
                    model=model,
                    houses=len(ms),
                    n=n,
                    rolling_n=rolling_n,
                    rolling_mse=pooled((m.rolling_n, m.rolling_mse) for m in ms),
                    mse=pooled((m.n, m.mse) for m in ms),
                    rate=self.rate(model, now),
                    unmatched=sum(m.unmatched for m in ms),
                    pending=sum(m.pending for m in ms),
                    window_s=max(m.window_s for m in ms),
                )
            )
        return out

    def as_of(self) -> int | None:
        return max((m.as_of for m in self.metrics.values()), default=None)

    def render(self, now: float | None = None) -> str:
        """The table, one line per model, with a heading line and a node line."""
        lines = self.lines(now)
        as_of = self.as_of()
        when = datetime.fromtimestamp(as_of, UTC).strftime("%Y-%m-%d %H:%M") if as_of is not None else "-"
        houses = len({h for h, _ in self.metrics})
        window = max((x.window_s for x in lines), default=3600) // 60
        out = [
            f"{houses} house(s), meter time {when}, MSE in kW², rolling {window} min",
            f"{'model':<16}{'houses':>7}{'matched n':>10}{'rolling MSE':>13}{'MSE':>9}{'fc/s':>8}{'unmatched':>10}",
        ]
        for x in lines:
            out.append(
                f"{x.model:<16}{x.houses:>7}{x.n:>10}{_num(x.rolling_mse):>13}{_num(x.mse):>9}"
                f"{x.rate:>8.1f}{x.unmatched:>10}"
            )
        if not lines:
            out.append("(no metrics yet)")
        progress = self.progress_text(now)
        if progress:
            out.insert(1, progress)
        if lines:
            out.append(f"rolling MSE = last {window} min of meter time; unmatched = no reading at the target")
        if self.nodes:
            states = {n: self.node_state(n) for n in self.nodes}
            online = sorted(n for n, state in states.items() if state == "online")
            stale = sum(1 for state in states.values() if state == "silent")
            offline = len(self.nodes) - len(online) - stale
            names = ", ".join(online)
            out.append(
                f"nodes online: {len(online)}"
                + (f" ({names})" if online and len(names) <= 60 else "")
                + (f", offline: {offline}" if offline else "")
                + (f", silent for over {FRESH_STATUS_S:.0f} s: {stale}" if stale else "")
            )
        if self.run is not None:
            out.append(f"run {self.run}")
        return "\n".join(out)

    def summary_line(self, now: float | None = None) -> str:
        """The table on one line (for logs); with progress, that and each model's MSE so far."""
        progress = self.progress_text(now)
        if progress is not None:
            mses = ", ".join(f"{x.model} {_num(x.mse)}" for x in self.lines(now))
            return progress + (f"; MSE so far: {mses}" if mses else "")
        parts = [f"{x.model} n={x.n} roll={_num(x.rolling_mse)} mse={_num(x.mse)} {x.rate:.1f}/s" for x in self.lines(now)]
        return " | ".join(parts) if parts else "no metrics yet"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


class LiveView:
    """Draws a :class:`LiveTable` on ``stream``: in place on a terminal, plain lines otherwise."""

    CLEAR_LINE = "\x1b[2K"

    def __init__(
        self,
        stream: TextIO | None = None,
        table: LiveTable | None = None,
        tty: bool | None = None,
        redraw_every: float = 0.25,
        plain_every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.table = table if table is not None else LiveTable(clock=clock)
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            try:
                tty = bool(isatty()) if isatty else False
            except (ValueError, OSError):  # closed stream
                tty = False
        self.tty = tty
        self.redraw_every = redraw_every
        self.idle_redraw_every = 1.0
        self.plain_every = plain_every
        self.started = clock()
        self._drawn_lines = 0
        self._last_draw = -float("inf")
        self._drawn_updates = -1

    def update(self, msg: Metrics | Status) -> None:
        """Take a decoded Metrics (or Status) message; other messages are ignored."""
        if isinstance(msg, Metrics):
            self.table.update(msg)
        elif isinstance(msg, Status):
            self.table.update_status(msg)

    def refresh(self, force: bool = False) -> bool:
        """Redraw if due (cheap to call often); True if something was written."""
        now = self.clock()
        every = self.redraw_every if self.tty else self.plain_every
        if not force and now - self._last_draw < every:
            return False
        if not force and self.table.updates == self._drawn_updates:
            if not self.tty or now - self._last_draw < self.idle_redraw_every:
                return False  # nothing new: no repeated log line; on a terminal, only the rates decay
        if self.tty:
            self._redraw(self.table.render(now))
        else:
            self._write(f"[{now - self.started:6.1f} s] {self.table.summary_line(now)}\n")
        self._last_draw = now
        self._drawn_updates = self.table.updates
        return True

    def _redraw(self, text: str) -> None:
        lines = text.split("\n")
        buf = []
        if self._drawn_lines:
            buf.append(f"\x1b[{self._drawn_lines}A\r")  # up to the first column of the table's first line
        width = self._width()
        buf += [f"{self.CLEAR_LINE}{line[:width]}\n" for line in lines]  # a wrapped line would break the redraw
        extra = self._drawn_lines - len(lines)
        if extra > 0:  # the table got shorter: blank what is left below, then come back
            buf += [f"{self.CLEAR_LINE}\n"] * extra
            buf.append(f"\x1b[{extra}A\r")
        self._write("".join(buf))
        self._drawn_lines = len(lines)

    def log(self, line: str) -> None:
        """Print a line of its own (a progress or warning line) without breaking the table on a terminal."""
        if self.tty and self._drawn_lines:
            self._write(f"\x1b[{self._drawn_lines}A\r\x1b[J{line}\n")  # up, clear to the end, the line
            self._drawn_lines = 0
            self.refresh(force=True)  # the table again, below the line
        else:
            self._write(line + "\n")

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
        if columns <= 0:  # unknown (not a terminal, or a pseudo-terminal without a size): $COLUMNS or 80
            columns = shutil.get_terminal_size().columns
        return max(20, columns - 1)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (ValueError, OSError):  # closed stream / broken pipe: the view is optional
            pass

    def close(self, final_table: bool = True) -> None:
        """Final state: the table in place on a terminal; on a log, the whole table once.

        ``final_table=False`` (``wattcast run``, which prints its own summary): the table
        is erased from a terminal and not repeated on a log.
        """
        if not final_table:
            if self.tty and self._drawn_lines:
                self._write(f"\x1b[{self._drawn_lines}A\r\x1b[J")
            self._drawn_lines = 0
            return
        if self.tty:
            self.refresh(force=True)
            self._drawn_lines = 0  # final: later lines go below it
        else:
            self._write(self.table.render(self.clock()) + "\n")
