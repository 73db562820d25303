"""What every node shares: liveness status, counters, counted rejections, the main loop.

A node's domain logic is a ``handle(messages)`` method; :func:`serve` pulls batches
of messages from the bus inbox on the node's own thread (never paho's), hands them
to ``handle``, acknowledges them afterwards and publishes a status with counters
every few seconds.  SIGTERM / SIGINT stop the loop cleanly.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import resource
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

from wattcast.bus import BrokerConfig, Bus, Message, MqttBus
from wattcast.contract import NOT_RETAINED, MessageError, State, Status, decode, may_be_retained, status_topic

log = logging.getLogger(__name__)

#: Exit code of a node (the collector with --exit-on-end) that finished its work and found it
#: incomplete or conflicting: not an error of the node, a loss it reports (1 is an error).
EXIT_INCOMPLETE = 3


class NodeStats:
    """Counters of a node, and rejections that are counted and logged (rate-limited), never silent."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.counters: Counter[str] = Counter()
        self._last_log = 0.0
        self._unlogged = 0

    def reject(self, topic: str, reason: str) -> None:
        self.counters["malformed"] += 1
        now = time.monotonic()
        if now - self._last_log >= 1.0:
            extra = f" (+{self._unlogged} more since last report)" if self._unlogged else ""
            log.warning("%s rejected a message on %r: %s%s", self.node, topic[:120], reason, extra)
            self._last_log, self._unlogged = now, 0
        else:
            self._unlogged += 1


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc), or None where unknown."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_kb() -> int:
    """Peak resident memory of this process in KiB (VmHWM; ru_maxrss survives exec on Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_ms() -> int:
    """CPU time (user + system, every thread) this process has used so far, in ms."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return int((ru.ru_utime + ru.ru_stime) * 1000)


def status(node: str, role: str, state: State, stats: NodeStats | None = None, model: str | None = None) -> Status:
    """The node's status; its counters include ``rss_kb`` (peak resident memory) and ``cpu_ms``."""
    counters = None
    if stats is not None:
        stats.counters["rss_kb"] = peak_rss_kb()
        stats.counters["cpu_ms"] = cpu_ms()
        counters = dict(stats.counters)
    return Status(node, state, role, time.time(), counters, model)


def connect(
    broker: BrokerConfig,
    node: str,
    role: str,
    manual_ack: bool = False,
    session: bool = True,
    timeout: float = 15.0,
    model: str | None = None,
) -> Bus:
    """The bus of ``node``, connected: an MqttBus whose last will marks it offline, or for an
    ``amqp://`` broker an AmqpBus in the consumer group of its role (``predictor-<model>``,
    ``collector``), whose replicas share its queues (and its shards)."""
    if broker.amqp:
        from wattcast.bus.amqp import AmqpBus

        group = None
        if session and role in ("predictor", "collector"):
            group = f"predictor-{model}" if role == "predictor" else role
        return AmqpBus(broker, client_id=f"wattcast-{node}", group=group, manual_ack=manual_ack).connect(timeout)
    will = (status_topic(node), status(node, role, "offline", model=model).to_json())
    bus = MqttBus(broker, client_id=f"wattcast-{node}", session=session, will=will, manual_ack=manual_ack)
    bus.connect(timeout)
    return bus


class StopFlag:
    """Set by SIGTERM / SIGINT (in the main thread) or by the node itself."""

    def __init__(self, install_signals: bool = True) -> None:
        self.event = threading.Event()
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.event.set()

    def set(self) -> None:
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


def settle_heap() -> None:
    """Keep the objects of start-up (modules, model, data) out of every later garbage collection.

    A full collection scans every tracked object while holding the GIL, so the node's
    network thread cannot even timestamp a message meanwhile: measured 14-23 ms pauses
    in the collector and the simulator (whose data frame is large).  ``gc.freeze`` moves
    what exists now to a generation Python's garbage collector never scans.
    """
    gc.collect()
    gc.freeze()


def decode_delivered(message: Message):
    """The payload of a delivered message (``messages.decode``), with the delivery rule a payload
    cannot carry: only statuses are retained.  MessageError for a message to reject."""
    if message.retain and not may_be_retained(message.topic):
        raise MessageError(NOT_RETAINED)
    return decode(message.topic, message.payload)


def drain(bus: Bus, max_batch: int, timeout: float) -> list[Message]:
    """Wait up to ``timeout`` for one message, then take whatever else is already there."""
    try:
        first = bus.inbox.get(timeout=timeout)
    except queue.Empty:
        return []
    batch = [first]
    while len(batch) < max_batch:
        try:
            batch.append(bus.inbox.get_nowait())
        except queue.Empty:
            break
    return batch


class Checkpoints:
    """Acknowledge handled messages only once a checkpoint of the node's state holds them.

    ``save`` runs when the node goes idle, every ``every`` seconds or every ``most``
    held messages (below the broker's in-flight limit of 1000, which would otherwise
    stop delivery), and at the end.  Before it, everything the node published while
    handling them must be acknowledged by the broker: a state that says "handled"
    while a forecast still sat in paho's send queue would lose that forecast in a
    crash (the restarted node takes the redelivered reading for a duplicate).  If the
    broker does not confirm in time, nothing is saved or acknowledged yet (the next
    commit tries again).  If a save fails the messages are acknowledged anyway
    (counted as ``checkpoint_errors``, logged): a node that stops acknowledging
    stops receiving.
    """

    def __init__(
        self, bus: Bus, stats: NodeStats, save: Callable[[], None], every: float = 0.2, most: int = 256, flush_s: float = 5.0
    ) -> None:
        self.bus, self.stats, self.save = bus, stats, save
        self.every, self.most, self.flush_s = every, most, flush_s
        self.held: list[Message] = []
        self.last = time.monotonic()

    def hold(self, batch: list[Message]) -> None:
        self.held.extend(batch)

    def due(self, idle: bool) -> bool:
        return bool(self.held) and (idle or len(self.held) >= self.most or time.monotonic() - self.last >= self.every)

    def commit(self) -> None:
        if not self.bus.flush(timeout=self.flush_s):
            self.stats.counters["checkpoints_deferred"] += 1
            self.last = time.monotonic()  # try again after `every`, not in a busy loop
            return
        try:
            self.save()
        except Exception as exc:
            errors = self.stats.counters["checkpoint_errors"] = self.stats.counters["checkpoint_errors"] + 1
            if errors == 1:
                log.exception(
                    "%s: saving a checkpoint failed; acknowledging %d messages anyway", self.stats.node, len(self.held)
                )
            elif errors % 100 == 0:
                log.error("%s: %d checkpoints failed so far (last: %s)", self.stats.node, errors, exc)
        with self.bus.batched():
            for message in self.held:
                self.bus.ack(message)
        self.held = []
        self.last = time.monotonic()


def serve(
    bus: Bus,
    node: str,
    role: str,
    stats: NodeStats,
    handle: Callable[[list[Message]], None],
    stop: StopFlag,
    max_batch: int = 512,
    status_every: float = 2.0,
    tick: Callable[[], bool] | None = None,
    checkpoint: Callable[[], None] | None = None,
    model: str | None = None,
) -> None:
    """The node main loop: batches -> ``handle`` -> ack; periodic status; ``tick()`` True ends the loop.

    With ``checkpoint`` (saves the node's state) messages are acknowledged only after
    a checkpoint that includes them (:class:`Checkpoints`).
    """
    age = process_age_s()
    if age is not None:
        stats.counters["startup_ms"] = int(age * 1000)
    settle_heap()
    checkpoints = Checkpoints(bus, stats, checkpoint) if checkpoint is not None else None
    bus.publish(status_topic(node), status(node, role, "online", stats, model).to_json(), retain=True)
    next_status = time.monotonic() + status_every
    while not stop.is_set():
        batch = drain(bus, max_batch, timeout=0.1)
        if batch:
            with bus.batched():
                try:
                    handle(batch)
                except Exception:  # a bug or a broken store must not take the node down: count, log, go on
                    stats.counters["handler_errors"] += len(batch)
                    log.exception(
                        "%s: handling a batch of %d messages failed; they are counted as handler_errors", node, len(batch)
                    )
                if checkpoints is None:
                    for message in batch:
                        bus.ack(message)
                else:
                    checkpoints.hold(batch)
        if checkpoints is not None and checkpoints.due(idle=not batch):
            checkpoints.commit()
        now = time.monotonic()
        if now >= next_status:
            bus.publish(status_topic(node), status(node, role, "online", stats, model).to_json(), retain=True)
            next_status = now + status_every
        if tick is not None and tick():
            break
    if checkpoints is not None and checkpoints.held:
        checkpoints.commit()
    if not bus.connected:
        # Stopping without a broker (it is gone too): waiting for it to come back would hold a
        # SIGTERM for over a minute (publish waits up to 60 s to reconnect). No final status then:
        # viewers see the node's last online status age out; what was not acknowledged comes back
        # to the node's next start (its persistent session).
        log.warning("%s: stopping while disconnected from the broker: no final status", node)
        return
    bus.publish(status_topic(node), status(node, role, "offline", stats, model).to_json(), retain=True)
    bus.flush(timeout=10)
