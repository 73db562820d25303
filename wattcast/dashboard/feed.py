"""The readings and forecasts the dashboard draws, sampled when they come faster than a page can follow.

At real time a house sends one reading a minute and each model one forecast: nothing
to save.  At ``--speed max`` the same house sends hundreds a second, and every message
the dashboard takes costs the broker a delivery and the dashboard ~0.1 ms of CPU, on
the cores the pipeline needs.  The chart shows the last two hours of meter time, which
a max-speed replay passes in well under a second, so following every message buys
nothing.  So: while the messages come at most ``budget`` a second, the feed stays
subscribed; once a subscribed spell has brought ``burst`` messages at a higher rate, it
unsubscribes for ``pause_s`` seconds and then subscribes again.  The chart then shows
fresh bursts of consecutive minutes every few seconds, and the page says it is sampled.
Scores (metrics), statuses and progress are never sampled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Subscriber(Protocol):
    def subscribe(self, *filters: str, qos: int = 1) -> None: ...

    def unsubscribe(self, *filters: str) -> None: ...


class HouseFeed:
    def __init__(
        self,
        bus: Subscriber,
        filters: list[str],
        budget: float = 200.0,
        burst: int = 1200,
        pause_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus, self.filters = bus, filters
        self.budget, self.burst, self.pause_s, self.clock = budget, burst, pause_s, clock
        self.subscribed = False
        self.paused_until: float | None = None
        self.pauses = 0
        self.last_pause: float | None = None
        self._spell_start = 0.0
        self._spell_count = 0

    def start(self, subscribed: bool = False) -> None:
        """Subscribe (``subscribed``: the caller already has, e.g. with its other filters)."""
        self._subscribe(subscribed)

    def _subscribe(self, already: bool = False) -> None:
        if not already:
            self.bus.subscribe(*self.filters, qos=0)
        self.subscribed, self.paused_until = True, None
        self._spell_start, self._spell_count = self.clock(), 0

    def seen(self) -> None:
        """One reading or forecast arrived."""
        if not self.subscribed:
            return  # sent before the broker had the unsubscription
        self._spell_count += 1
        if self._spell_count < self.burst:
            return
        now = self.clock()
        if self._spell_count / max(now - self._spell_start, 1e-9) > self.budget:
            self.bus.unsubscribe(*self.filters)
            self.subscribed, self.paused_until = False, now + self.pause_s
            self.pauses += 1
            self.last_pause = now
        else:  # a slow spell: start counting afresh
            self._spell_start, self._spell_count = now, 0

    def tick(self) -> None:
        """Call often: subscribes again once a pause is over."""
        if self.paused_until is not None and self.clock() >= self.paused_until:
            self._subscribe()

    @property
    def sampled(self) -> bool:
        """Sampling now, or lately (within the last few pauses)."""
        return self.last_pause is not None and self.clock() - self.last_pause < 3 * self.pause_s + 1
