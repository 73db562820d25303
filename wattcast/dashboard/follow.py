"""``wattcast dashboard``: follow a deployment over MQTT and serve the live page.

The dashboard is a read-only viewer (the broker user ``dashboard``: readings,
forecasts, metrics, node statuses and the collector's progress; it publishes
nothing).  It subscribes with QoS 0 and a clean session under a client id of its
own, so it never holds a node's queue and a slow browser never slows the broker.
paho's network thread only queues messages; one thread decodes them into the
:class:`~wattcast.dashboard.state.DashboardState`, and the web server's threads read
snapshots from it.  paho reconnects by itself after a broker restart (and subscribes
again); the page says whether the dashboard is connected.

A viewer should never slow the pipeline it watches: readings and forecasts are
sampled when they come faster than a page can follow (:mod:`.feed`: at ``--speed max``),
and the process lowers its own scheduling priority (``nice``), so on a busy machine the
nodes get the cores first.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from wattcast.bus import BrokerConfig, MqttBus
from wattcast.contract import ALL_STATUS, Forecast, MessageError, Reading, decode, house_filter
from wattcast.contract.topics import ROOT
from wattcast.dashboard.feed import HouseFeed
from wattcast.dashboard.server import DashboardServer
from wattcast.dashboard.state import DashboardState

log = logging.getLogger("wattcast.dashboard")

#: how much lower than the pipeline the dashboard runs (added to its nice value)
NICENESS = 10


def score_filters() -> list[str]:
    """Every metrics, status and progress message (never sampled)."""
    return [*house_filter(None, "metrics/+"), ALL_STATUS, f"{ROOT}/progress/+"]


def house_filters(houses: list[str] | None) -> list[str]:
    """The readings and forecasts of ``houses`` (default all): sampled at high rates (:mod:`.feed`)."""
    return [*house_filter(houses, "reading"), *house_filter(houses, "forecast/+")]


def subscriptions(houses: list[str] | None) -> list[str]:
    """Everything the dashboard reads."""
    return [*score_filters(), *house_filters(houses)]


class Follower:
    """Moves messages from the bus into the state, on a thread of its own."""

    def __init__(self, bus: MqttBus, state: DashboardState, feed: HouseFeed) -> None:
        self.bus, self.state, self.feed = bus, state, feed
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="dashboard-follow", daemon=True)
        self._warned = False
        self.taken = 0

    def start(self) -> Follower:
        self.thread.start()
        return self

    def _loop(self) -> None:
        bus, state = self.bus, self.state
        feed = self.feed
        while not self.stopping.is_set():
            state.connection(bus.broker.url, bus.connected, bus.reconnects)
            feed.tick()
            state.sampled = feed.sampled
            try:
                message = bus.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if not message.payload:
                continue  # an empty retained status: a status removed, not a message
            try:
                msg = decode(message.topic, message.payload)
            except MessageError as exc:
                state.reject()
                if not self._warned:  # counted on the page; logged once
                    log.warning("ignored a malformed message on %s: %s", message.topic[:120], exc)
                    self._warned = True
                continue
            if isinstance(msg, Reading | Forecast):
                feed.seen()
            state.take(msg, message.received_at, message.retain)
            self.taken += 1

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)


def lower_priority(step: int = NICENESS) -> None:
    try:
        os.nice(step)
    except OSError:  # not allowed here: run at the normal priority
        pass


def dashboard(
    broker: BrokerConfig,
    host: str = "127.0.0.1",
    port: int = 8050,
    houses: list[str] | None = None,
    url_file: Path | None = None,
    keep_minutes: int = 180,
    allowed_hosts: tuple[str, ...] = (),
    stop: Callable[[], bool] | None = None,
    connect_timeout: float = 10.0,
) -> int:
    """Serve the dashboard of ``broker``'s deployment until Ctrl-C (or ``stop()``); 0 when stopped.

    Raises ConnectionError (one line) if the broker cannot be reached, OSError if the port is taken.
    """
    lower_priority()
    bus = MqttBus(broker, client_id=f"wattcast-dashboard-{os.getpid()}-{uuid.uuid4().hex[:8]}", session=False)
    bus.connect(timeout=connect_timeout)
    state = DashboardState(keep_minutes=keep_minutes)
    feed = HouseFeed(bus, house_filters(houses))
    follower = Follower(bus, state, feed)
    try:
        bus.subscribe(*subscriptions(houses), qos=0, timeout=connect_timeout)  # confirmed before the URL is out
        feed.start(subscribed=True)
        follower.start()
        server = DashboardServer(state, host, port, allowed_hosts=allowed_hosts)
    except BaseException:
        follower.stop()
        bus.close()
        raise
    server.serve_in_thread()
    print(f"dashboard: {server.url} (following {broker.url}; Ctrl-C to stop)", file=sys.stderr, flush=True)
    if url_file is not None:
        tmp = url_file.with_suffix(".tmp")
        tmp.write_text(server.url + "\n")
        tmp.replace(url_file)  # whoever waits for it reads it whole
    terminated = []  # SIGTERM (docker stop, wattcast run's end): a plain flag, safe in a signal handler
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    try:
        while not terminated and not (stop is not None and stop()):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a dashboard ends
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        server.stop()
        follower.stop()
        bus.close()
    cpu = time.process_time()
    print(
        f"dashboard: stopped after {follower.taken:,} messages ({state.rejected} malformed ignored), {cpu:.1f} CPU s",
        file=sys.stderr,
        flush=True,
    )
    return 0
