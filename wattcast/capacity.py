"""Refuse up front what this machine cannot do, with the reason (``wattcast run``).

Two limits, from measured figures (2 cores, every node its own process):

* time: at ``--speed max`` the pipeline replays about 900-1,600 readings a second
  (README, "Measured"); we assume :data:`READINGS_PER_S`.  At ``--speed N`` a replay
  takes ``minutes * 60 / N`` seconds.  A run that cannot end within ``--timeout``
  is refused instead of failing after it.
* memory: the collector keeps about :data:`COLLECTOR_BYTES_PER_READING` per reading
  (4 models; tracemalloc over 8,000 readings) and every node a little state per
  house (:data:`BYTES_PER_HOUSE_PER_NODE`, a generous bound of the measured
  0.1-0.6 KB), on top of :data:`NODE_BASE_BYTES` per process.  A run whose estimate
  exceeds 80 % of the memory available now is refused.  The simulator makes each
  house's readings on demand (``simulator.replay.HouseStream``): it grows with
  nothing but the houses' small descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass

READINGS_PER_S = 900.0
COLLECTOR_BYTES_PER_READING = 1_500 / 4  # per model
BYTES_PER_HOUSE_PER_NODE = 4_096
NODE_BASE_BYTES = 80 * 2**20
MEMORY_SHARE = 0.8


class CapacityError(ValueError):
    """A run this machine cannot carry out (one line with the reason)."""


@dataclass(frozen=True)
class Plan:
    houses: int
    minutes: int  # readings per house
    models: int
    speed: float | None  # None = max

    @property
    def readings(self) -> int:
        return self.houses * self.minutes

    def seconds(self) -> float:
        at_max = self.readings / READINGS_PER_S
        return at_max if self.speed is None else max(at_max, self.minutes * 60.0 / self.speed)

    def memory_bytes(self) -> int:
        nodes = self.models + 2
        return int(
            nodes * NODE_BASE_BYTES
            + nodes * self.houses * BYTES_PER_HOUSE_PER_NODE
            + self.readings * self.models * COLLECTOR_BYTES_PER_READING
        )


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _duration(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 7200 else f"{s / 60:.0f} min" if s >= 120 else f"{s:.0f} s"


def check(plan: Plan, timeout: float, memory: int | None = None) -> None:
    """Raise :class:`CapacityError` naming the limit if ``plan`` cannot finish here."""
    need = plan.seconds()
    if need > timeout:
        how = (
            f"about {plan.readings:,} readings at ~{READINGS_PER_S:,.0f}/s"
            if plan.speed is None
            else f"{plan.minutes:,} minutes at --speed {plan.speed:g}"
        )
        raise CapacityError(
            f"this run would take {_duration(need)} ({how}), more than --timeout {timeout:g} s; "
            "pass a larger --timeout, a smaller --limit or --houses, or a higher --speed"
        )
    memory = available_memory() if memory is None else memory
    if memory is not None:
        est = plan.memory_bytes()
        if est > MEMORY_SHARE * memory:
            raise CapacityError(
                f"this run would need about {est / 2**30:.1f} GiB of memory ({plan.houses:,} houses x "
                f"{plan.minutes:,} readings, {plan.models} models) and {memory / 2**30:.1f} GiB are "
                "available; pass a smaller --limit or --houses"
            )
