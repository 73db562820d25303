"""What every bus shares: the message, the interface nodes see, topic matching, where a broker is."""

from __future__ import annotations

import contextlib
import queue
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlparse


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False
    received_at: float = 0.0
    #: broker packet id and QoS, for a manual acknowledgement (see ``Bus.ack``)
    mid: int = 0
    qos: int = 0


class Bus(Protocol):
    inbox: queue.Queue[Message]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None: ...

    def subscribe(self, *filters: str, qos: int = 1) -> None: ...

    def ack(self, message: Message) -> None:
        """Acknowledge a QoS 1 message once it is handled (buses with manual acknowledgement)."""
        ...

    def batched(self) -> contextlib.AbstractContextManager[None]:
        """Group the publishes and acks of one handled batch (fewer wake-ups of the network thread)."""
        ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self) -> None: ...


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    p, t = pattern.split("/"), topic.split("/")
    for i, part in enumerate(p):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(p) == len(t)


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how a node connects: built once at the entry point."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    keepalive: int = 30

    @classmethod
    def from_url(cls, url: str, username: str | None = None, password: str | None = None) -> BrokerConfig:
        """``mqtt://[user:pass@]host[:port]`` (or plain ``host:port``)."""
        if "://" not in url:
            url = "mqtt://" + url
        u = urlparse(url)
        if u.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"unsupported broker URL scheme {u.scheme!r} (use mqtt://host:port)")
        if not u.hostname:
            raise ValueError(f"broker URL without a host: {url!r}")
        return cls(
            host=u.hostname,
            port=u.port or 1883,
            username=u.username or username,
            password=u.password or password,
        )

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"
