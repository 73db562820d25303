"""Before replaying: wait until the nodes that must get every reading are online."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

from wattcast.bus import Bus
from wattcast.contract import ALL_STATUS, FRESH_STATUS_S, MessageError, Status, decode


def wait_for_nodes(bus: Bus, nodes: list[str], timeout: float, now: Callable[[], float] = time.time) -> None:
    """Block until every node's status says online; TimeoutError names the missing ones.

    A node that never connected has no subscription yet: readings published before it
    is online would never reach it.  A retained status is the newest a node left, maybe
    in an earlier run: it counts only if it is fresh (``FRESH_STATUS_S``), else the node's
    next live status decides.
    """
    bus.subscribe(ALL_STATUS)
    online: set[str] = set()
    deadline = time.monotonic() + timeout
    while not set(nodes) <= online:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"nodes not online after {timeout:.0f} s: {', '.join(sorted(set(nodes) - online))}")
        try:
            message = bus.inbox.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        try:
            status = decode(message.topic, message.payload)
        except MessageError:
            continue
        if isinstance(status, Status):
            if status.state != "online":
                online.discard(status.node)
            elif not message.retain or (status.ts or 0) >= now() - FRESH_STATUS_S:
                online.add(status.node)
