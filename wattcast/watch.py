"""``wattcast watch``: follow the metrics of any running deployment (e.g. the compose one).

Subscribes, with a clean session and a client id of its own, to
``wattcast/v1/<house or +>/metrics/+`` and to the nodes' status topics, and shows
the :class:`~wattcast.live.LiveView` table until Ctrl-C or ``duration`` seconds.
It only listens: it publishes nothing and takes no client id of a node.
"""

from __future__ import annotations

import os
import queue
import sys
import time
import uuid
from typing import TextIO

from wattcast.bus import BrokerConfig, MqttBus
from wattcast.contract import ALL_STATUS, MessageError, Metrics, Status, decode, house_filter
from wattcast.live import LiveView


def watch(
    broker: BrokerConfig,
    houses: list[str] | None = None,
    duration: float | None = None,
    stream: TextIO | None = None,
    connect_timeout: float = 10.0,
) -> int:
    """Show the live table of ``broker``'s metrics; 0 when stopped (Ctrl-C or ``duration``).

    Raises ConnectionError (one line) if the broker cannot be reached.
    """
    stream = stream if stream is not None else sys.stdout
    if duration is not None and duration <= 0:
        raise ValueError(f"--duration must be positive, got {duration:g}")
    bus = MqttBus(broker, client_id=f"wattcast-watch-{os.getpid()}-{uuid.uuid4().hex[:8]}", session=False)
    bus.connect(timeout=connect_timeout)
    view = LiveView(stream)
    metrics = malformed = 0
    try:
        bus.subscribe(*house_filter(houses, "metrics/+"), ALL_STATUS, qos=0)
        what = ", ".join(houses) if houses else "all houses"
        view.log(f"watching {broker.url} ({what})" + (f" for {duration:g} s" if duration else "; Ctrl-C to stop"))
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            timeout = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            try:
                message = bus.inbox.get(timeout=timeout)
            except queue.Empty:
                view.refresh()
                continue
            try:
                msg = decode(message.topic, message.payload)
            except MessageError:
                malformed += 1
                continue
            if isinstance(msg, Metrics):
                metrics += 1
            if isinstance(msg, Metrics | Status):
                view.update(msg)
            view.refresh()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends
    finally:
        bus.close()
    view.close()
    if not metrics:
        view.log(f"no metrics received from {broker.url}: is a deployment running (and its collector)?")
    if malformed:
        view.log(f"ignored {malformed} malformed message(s)")
    return 0
