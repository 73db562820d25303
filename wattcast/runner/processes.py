"""The run's child processes (one per node), its status watcher, Ctrl-C, and its private broker."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattcast.bus import BrokerConfig, MqttBus
from wattcast.contract import (
    MessageError,
    Metrics,
    Progress,
    Status,
    decode,
)
from wattcast.runner.options import RunError


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])


@dataclass
class Watcher:
    """The runner's own view of the bus: node statuses, and metrics for the live view."""

    bus: MqttBus
    since: float
    statuses: dict[str, Status] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)  # nodes seen online in this run (they may have finished since)
    view: Any = None  # a wattcast.live.LiveView, fed with every Metrics
    houses: int = 1
    total: int = 0  # readings of the whole replay (for the view's progress line)

    def poll(self) -> None:
        while not self.bus.inbox.empty():
            message = self.bus.inbox.get_nowait()
            try:
                msg = decode(message.topic, message.payload)
            except MessageError:
                continue
            if isinstance(msg, Status):
                if (msg.ts or 0) >= self.since:
                    msg = self.statuses[msg.node] = msg.after(self.statuses.get(msg.node))
                    if msg.state == "online":
                        self.started.add(msg.node)
            elif isinstance(msg, Metrics) and self.view is not None:
                self.view.update(msg)
            elif isinstance(msg, Progress) and self.view is not None and self.total:
                self.view.table.progress_of(msg.house, msg.seq, self.houses, self.total)

    def wait_offline(self, nodes: list[str], timeout: float) -> None:
        """Give stopped nodes a moment for their final status (with their final counters) to arrive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if all((s := self.statuses.get(n)) is not None and s.state == "offline" for n in nodes):
                return
            time.sleep(0.05)

    def counter(self, node: str, name: str) -> int:
        s = self.statuses.get(node)
        return int((s.counters or {}).get(name, 0)) if s else 0


def spawn(name: str, module: str, args: list[str], log_dir: Path, env: dict[str, str]) -> Child:
    log_path = log_dir / f"{name}.log"
    fh = log_path.open("w")
    # -P: the current folder is not put on sys.path, so a folder named like a package there cannot shadow it
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", module, *args],
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    fh.close()
    return Child(name, proc, log_path)


class Interrupt:
    """Ctrl-C (SIGINT) and SIGTERM while the nodes run: a flag that the run's loops check.

    Python's own KeyboardInterrupt is raised wherever the main thread happens to be, and
    one raised inside a finalizer or a garbage-collector callback is printed and dropped
    ("Exception ignored in ..."): the run then went on as if nothing had been pressed.
    A flag cannot be lost; :meth:`sleep` raises KeyboardInterrupt at a known point.
    """

    def __init__(self) -> None:
        # A plain flag, no lock: the handler runs in the main thread between two bytecodes, and
        # Event.set() there deadlocked when the signal came while that thread held the Event's
        # own (non-reentrant) lock inside Event.wait(): Ctrl-C then hung the run for good (seen
        # once under load in CI).
        self.pressed = False
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._press)

    def _press(self, signum, frame) -> None:
        self.pressed = True

    def sleep(self, seconds: float) -> None:
        if not self.pressed:
            time.sleep(seconds)  # a signal's handler runs during it; the sleep then goes on (PEP 475)
        if self.pressed:
            raise KeyboardInterrupt

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


def stop_all(children: list[Child], timeout: float = 10.0) -> None:
    for c in children:
        if c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for c in children:
        try:
            c.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait()


def private_broker(kind: str | None, workdir: Path, models: list[str] | tuple[str, ...] = ()):
    """A started private broker and its per-run passwords (user -> password; empty for amqtt).

    mosquitto runs the deployment's own config (mosquitto/mosquitto.conf: no anonymous
    access, the per-role ACL of mosquitto/acl, a client id tied to its user) with a new
    random password for every user of this run; the files are private to this user.
    """
    from wattcast.broker import PrivateBroker, available_kind
    from wattcast.credentials import RUN_USERS, generate_password, secured_private_broker

    if available_kind(kind) == "mosquitto":
        users = [*RUN_USERS, *(f"predictor-{m}" for m in models if f"predictor-{m}" not in RUN_USERS)]
        passwords = {user: generate_password() for user in users}
        broker = secured_private_broker(workdir / "auth", passwords, prefer="mosquitto", workdir=workdir, models=models)
        return broker.start(), passwords
    return PrivateBroker(prefer=kind, workdir=workdir).start(), {}


def predictor_env(broker, passwords: dict[str, str], model: str) -> Path:
    """``<broker dir>/predictor-<model>.env`` (mode 600): how an outside predictor of ``model`` logs in to this run."""
    from wattcast.config import ENV_BROKER, ENV_PASSWORD, ENV_USERNAME
    from wattcast.credentials import write_private

    user = f"predictor-{model}"
    path = broker.workdir / f"{user}.env"
    write_private(
        path,
        f"MQTT_HOST={broker.host}\nMQTT_PORT={broker.port}\n{ENV_BROKER}=mqtt://{broker.host}:{broker.port}\n"
        f"{ENV_USERNAME}={user}\n{ENV_PASSWORD}={passwords.get(user, '')}\n",
    )
    return path


def viewer_env(broker, passwords: dict[str, str]) -> Path:
    """``<broker dir>/viewer.env`` (mode 600): how a subscriber logs in to this run as the viewer."""
    from wattcast.credentials import password_env_var, write_private

    path = broker.workdir / "viewer.env"
    write_private(
        path, f"MQTT_HOST={broker.host}\nMQTT_PORT={broker.port}\n{password_env_var('viewer')}={passwords['viewer']}\n"
    )
    return path


def reset_sessions(config: BrokerConfig, nodes: list[str]) -> None:
    """Discard what a shared broker still holds for these node ids from an earlier run.

    The ids are stable, and the collector's and predictors' sessions persistent (for restarts
    within a run): an earlier run that did not finish would otherwise hand this one its queued
    readings, forecasts and end of stream.  A clean-session connection under the same client
    id discards the stored session (MQTT 3.1.1, 3.1.2.4).
    """
    for node in nodes:
        bus = MqttBus(config, client_id=f"wattcast-{node}", session=False)
        try:
            bus.connect(timeout=10)
        except ConnectionError as exc:
            raise StartError(str(exc)) from None
        bus.close()


def clear_statuses(bus: MqttBus, nodes: list[str]) -> None:
    """Remove the retained statuses a finished run leaves on a shared broker (an empty retained payload)."""
    from wattcast.contract import status_topic

    try:
        for node in nodes:
            bus.publish(status_topic(node), b"", qos=1, retain=True)
        bus.flush(timeout=5)
    except Exception as exc:  # the run's result matters more than this clean-up
        print(f"wattcast: warning: could not clear the retained statuses: {exc}", file=sys.stderr)


class StartError(RunError):
    """The run failed before its nodes started (its folder is removed again)."""
