"""Replay a capture (``wattcast record``): every message again, with its original timing.

``speed`` divides the gaps between arrivals (None: as fast as the broker acknowledges);
``loops`` replays the capture that many times; ``shift_to_now`` moves every event time
(a reading's ``ts``, a forecast's ``issued_at`` and ``target_ts``, an end's ``last_ts``,
metrics' ``as_of``) by whole minutes so that the first reading is this minute, each later
loop one capture span further.  Wall-clock fields (``sent_at``, ``reading_sent_at``, a
status' ``ts``) move with the replay, so latencies stay what they were.  From the second
loop on, run ids get a suffix (``-2``, ``-3``, ...): each loop is scored as a run of its own.
Messages that are not wattcast JSON are published unchanged.  What the live nodes publish
themselves (statuses, progress, metrics) is left out: a replay feeds a deployment what its
sources sent (readings, ends, forecasts), and a stale status or score would mislead it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from wattcast.bus import Bus
from wattcast.capture import Captured
from wattcast.contract import MessageError, parse_topic

#: event-time members per message kind (unix seconds, whole minutes in a replay)
EVENT_FIELDS = {
    "reading": ("ts",),
    "forecast": ("issued_at", "target_ts"),
    "end": ("last_ts",),
    "metrics": ("as_of",),
}
WALL_FIELDS = ("sent_at", "reading_sent_at")
#: kinds the live nodes publish about themselves: not replayed
DERIVED = ("status", "progress", "metrics")


def replayed(c: Captured) -> bool:
    """Whether a replay publishes ``c``: all but the live nodes' own statuses, progress and metrics."""
    try:
        return parse_topic(c.topic)[0] not in DERIVED
    except MessageError:
        return True  # not a wattcast topic: published as it was


def reading_times(messages: list[Captured]) -> list[int]:
    """The ``ts`` of every reading in the capture, in order (what a shift is measured from)."""
    stamps = []
    for c in messages:
        try:
            if parse_topic(c.topic)[0] == "reading":
                stamps.append(int(json.loads(c.payload)["ts"]))
        except (MessageError, ValueError, KeyError, TypeError):
            continue
    return stamps


def rewritten(c: Captured, event_shift: int, wall_shift: float, loop: int) -> bytes:
    """``c``'s payload with its times moved and, after the first loop, its run id suffixed."""
    try:
        kind, _, _ = parse_topic(c.topic)
        obj = json.loads(c.payload)
    except (MessageError, ValueError):
        return c.payload
    if not isinstance(obj, dict):
        return c.payload
    for name in EVENT_FIELDS.get(kind, ()):
        if isinstance(obj.get(name), int):
            obj[name] += event_shift
    for name in WALL_FIELDS:
        if isinstance(obj.get(name), int | float):
            obj[name] = round(obj[name] + wall_shift, 6)
    if kind == "status" and isinstance(obj.get("ts"), int | float):
        obj["ts"] = round(obj["ts"] + wall_shift, 6)
    if loop > 1 and kind in ("reading", "forecast", "end", "metrics", "progress"):
        obj["run"] = f"{obj.get('run', 'default')}"[:60] + f"-{loop}"
    return json.dumps(obj, separators=(",", ":")).encode()


def replay_capture(
    bus: Bus,
    messages: list[Captured],
    speed: float | None,
    loops: int = 1,
    shift_to_now: bool = False,
    stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.time,
) -> int:
    """Publish the capture ``loops`` times (but what :func:`replayed` leaves out); the number published."""
    messages = [c for c in messages if replayed(c)]
    if not messages:
        return 0
    stamps = reading_times(messages)
    shift = ((int(clock()) - stamps[0]) // 60) * 60 if shift_to_now and stamps else 0
    span = (max(stamps) - min(stamps) + 60) if stamps else 0  # a next loop starts one span later
    published = 0
    for loop in range(1, loops + 1):
        event_shift = shift + (loop - 1) * span
        start, t0 = time.monotonic(), messages[0].t
        for c in messages:
            if stop():
                return published
            if speed is not None:  # the original gap, divided by speed; stop() is heard within 0.2 s
                due = start + (c.t - t0) / speed
                while (wait := due - time.monotonic()) > 0:
                    if stop():
                        return published
                    time.sleep(min(wait, 0.2))
            wall_shift = clock() - c.t
            bus.publish(c.topic, rewritten(c, event_shift, wall_shift, loop), qos=1, retain=c.retain)
            published += 1
        bus.flush(timeout=60)
    return published
