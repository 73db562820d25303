"""An in-process bus: a fake broker for fast unit tests of node logic."""

from __future__ import annotations

import contextlib
import queue
import threading
import time

from wattcast.bus.base import Message, topic_matches


class MemoryHub:
    """A broker in memory: delivers every publish to the matching MemoryBus inboxes."""

    def __init__(self) -> None:
        self._buses: list[MemoryBus] = []
        self._retained: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def connect(self) -> MemoryBus:
        bus = MemoryBus(self)
        with self._lock:
            self._buses.append(bus)
        return bus

    def _route(self, topic: str, payload: bytes, retain: bool) -> None:
        with self._lock:
            if retain:
                self._retained[topic] = payload
            targets = [b for b in self._buses if b.wants(topic)]
        now = time.time()
        for bus in targets:
            bus.inbox.put(Message(topic, payload, False, now))

    def _retained_for(self, pattern: str) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(t, p) for t, p in self._retained.items() if topic_matches(pattern, t)]


class MemoryBus:
    def __init__(self, hub: MemoryHub | None = None) -> None:
        self.hub = hub or MemoryHub()
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.filters: list[str] = []
        self.published: list[Message] = []

    connected = True  # an in-process hub is never away
    reconnects = 0

    def wants(self, topic: str) -> bool:
        return any(topic_matches(f, topic) for f in self.filters)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.published.append(Message(topic, payload, retain, time.time()))
        self.hub._route(topic, payload, retain)

    def subscribe(self, *filters: str, qos: int = 1) -> None:
        for f in filters:
            self.filters.append(f)
            for topic, payload in self.hub._retained_for(f):
                self.inbox.put(Message(topic, payload, True, time.time()))

    def ack(self, message: Message) -> None:
        pass

    def batched(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        with self.hub._lock:
            if self in self.hub._buses:
                self.hub._buses.remove(self)
