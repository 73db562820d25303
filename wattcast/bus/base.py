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
    #: the shard (partition of the houses) it was delivered from; None where houses are not sharded
    shard: int | None = None


class Inbox(Protocol):
    """Where a bus puts what it receives: a ``queue.SimpleQueue`` at the network edges (its put and get
    cost a fraction of ``queue.Queue``'s, which takes a lock and notifies a condition for each), any
    ``queue.Queue`` elsewhere."""

    def put(self, item: Message, block: bool = True, timeout: float | None = None) -> None: ...

    def get(self, block: bool = True, timeout: float | None = None) -> Message: ...

    def get_nowait(self) -> Message: ...

    def qsize(self) -> int: ...

    def empty(self) -> bool: ...


def new_inbox() -> Inbox:
    inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
    return inbox


class Bus(Protocol):
    inbox: Inbox
    #: connections lost (and made again) so far
    reconnects: int

    @property
    def connected(self) -> bool:
        """Connected to the broker now (a bus without one always is)."""
        ...

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


#: URL scheme -> (TLS, default port)
SCHEMES = {"mqtt": (False, 1883), "tcp": (False, 1883), "mqtts": (True, 8883), "ssl": (True, 8883)}
#: AMQP 0-9-1 (RabbitMQ): the sharded deployment's nodes (wattcast.bus.amqp)
AMQP_SCHEMES = {"amqp": (False, 5672), "amqps": (True, 5671)}


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how a node connects: built once at the entry point.

    ``tls`` (an ``mqtts://`` URL) encrypts the connection and checks the broker's
    certificate against ``ca_file`` (default: the system's trusted CAs);
    ``cert_file`` and ``key_file`` are the client's own certificate, for brokers that
    require one.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    keepalive: int = 30
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    #: AMQP (RabbitMQ) instead of MQTT: an ``amqp://`` URL
    amqp: bool = False
    #: AMQP: the deployment's number of shards (houses hashed onto them), and the shards this node
    #: serves (default: all); None: the node is not sharded
    shards: int | None = None
    serve_shards: tuple[int, ...] | None = None
    #: AMQP: shards this node stands by for (consumed a few seconds after its own, so that their own
    #: nodes become their active consumers; this one takes over when such a node goes)
    standby_shards: tuple[int, ...] = ()
    #: AMQP: the cluster's other nodes (``amqp://user:pw@host1:port1,host2:port2``), tried in turn
    more_hosts: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_url(
        cls,
        url: str,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        shards: int | None = None,
        serve_shards: tuple[int, ...] | None = None,
        standby_shards: tuple[int, ...] | None = None,
    ) -> BrokerConfig:
        """``mqtt://[user:pass@]host[:port]``, ``mqtts://...`` for TLS (or plain ``host:port``);
        ``amqp://...`` for RabbitMQ over AMQP, where ``shards`` may partition the houses, and several
        nodes of a cluster may be named (``amqp://user:pw@host1:port1,host2:port2``)."""
        if "://" not in url:
            url = "mqtt://" + url
        url, more_hosts = _more_hosts(url)
        u = urlparse(url)
        if u.scheme not in SCHEMES and u.scheme not in AMQP_SCHEMES:
            raise ValueError(
                f"unsupported broker URL scheme {u.scheme!r} "
                "(use mqtt://host:port, mqtts:// for TLS, or amqp:// for RabbitMQ)"
            )
        if not u.hostname:
            raise ValueError(f"broker URL without a host: {url!r}")
        amqp = u.scheme in AMQP_SCHEMES
        tls, default_port = AMQP_SCHEMES[u.scheme] if amqp else SCHEMES[u.scheme]
        if (shards is not None or serve_shards is not None) and not amqp:
            raise ValueError("--shards and --serve-shards need a RabbitMQ broker over AMQP (amqp://host:port)")
        for flag, listed in (("--serve-shards", serve_shards), ("--standby-shards", standby_shards)):
            if listed is None:
                continue
            if shards is None:
                raise ValueError(f"{flag} needs --shards (the deployment's number of shards)")
            wrong = [k for k in listed if not 0 <= k < shards]
            if wrong:
                raise ValueError(f"{flag} {wrong[0]}: shards are numbered 0 to {shards - 1}")
        files = {"--ca-file": ca_file, "--cert-file": cert_file, "--key-file": key_file}
        given = [flag for flag, path in files.items() if path]
        if given and not tls:
            raise ValueError(f"{', '.join(given)} need a TLS broker URL (mqtts://host:port), got {u.scheme}://")
        if key_file and not cert_file:
            raise ValueError("--key-file needs --cert-file (the client certificate it belongs to)")
        return cls(
            host=u.hostname,
            port=u.port or default_port,
            username=u.username or username,
            password=u.password or password,
            tls=tls,
            ca_file=ca_file or None,
            cert_file=cert_file or None,
            key_file=key_file or None,
            amqp=amqp,
            shards=shards,
            serve_shards=tuple(serve_shards) if serve_shards is not None else None,
            standby_shards=tuple(k for k in standby_shards or () if serve_shards is None or k not in serve_shards),
            more_hosts=tuple((h, p or default_port) for h, p in more_hosts),
        )

    @property
    def url(self) -> str:
        scheme = ("amqps" if self.tls else "amqp") if self.amqp else ("mqtts" if self.tls else "mqtt")
        return f"{scheme}://{','.join(f'{h}:{p}' for h, p in self.hosts)}"

    @property
    def hosts(self) -> list[tuple[str, int]]:
        return [(self.host, self.port), *self.more_hosts]


def _more_hosts(url: str) -> tuple[str, list[tuple[str, int | None]]]:
    """An ``amqp(s)://`` URL naming several hosts: the URL with the first, and the others (port None: default)."""
    scheme, rest = url.split("://", 1)
    if scheme not in AMQP_SCHEMES:
        return url, []
    netloc, sep, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    first, *others = hostlist.split(",")
    more: list[tuple[str, int | None]] = []
    for other in others:
        host, _, port = other.partition(":")
        if not host or (port and not port.isdigit()):
            raise ValueError(f"broker URL with a bad host {other!r}: give host:port")
        more.append((host, int(port) if port else None))
    return f"{scheme}://{userinfo}{at}{first}{sep}{path}", more
