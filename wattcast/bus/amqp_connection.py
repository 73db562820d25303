"""Connecting to RabbitMQ with pika: the connection parameters of a broker's nodes, quiet logs, one-line reasons."""

from __future__ import annotations

import logging
import re
from typing import Any

from wattcast.bus.base import BrokerConfig


def parameters(broker: BrokerConfig, client_id: str, first: int = 0) -> list[Any]:
    """pika's parameters for every node of ``broker`` (TLS with its CA and client certificate), starting
    with node ``first`` (modulo their number: after a loss, the next one)."""
    import pika

    creds = pika.PlainCredentials(broker.username or "", broker.password or "")
    ssl_options = None
    if broker.tls:
        import ssl

        ctx = ssl.create_default_context(cafile=broker.ca_file)
        if broker.cert_file:
            ctx.load_cert_chain(broker.cert_file, broker.key_file)
        ssl_options = pika.SSLOptions(ctx, broker.host)
    hosts = broker.hosts
    first %= len(hosts)
    return [
        pika.ConnectionParameters(
            host=host,
            port=port,
            credentials=creds,
            heartbeat=broker.keepalive,
            blocked_connection_timeout=60,
            ssl_options=ssl_options,
            client_properties={"connection_name": client_id},
            connection_attempts=1,
            socket_timeout=10,
        )
        for host, port in hosts[first:] + hosts[:first]
    ]


def quiet_pika() -> None:
    """pika logs every failed connection attempt as a traceback; wattcast says it in one line instead."""
    pika_log = logging.getLogger("pika")
    if pika_log.level == logging.NOTSET:  # unless someone configured it
        pika_log.setLevel(logging.CRITICAL)


def why(exc: BaseException) -> str:
    """A failed connection attempt in a few words (pika nests the reason in its workflow error)."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 5:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = " ".join(f"{a} {a!r}" for e in chain for a in (e, *getattr(e, "args", ()))) or type(exc).__name__
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower() or "timeout" in text.lower():
        return "no answer (timed out)"
    last = re.search(r"last exception - ([^;]+)", text)
    return last.group(1) if last else (str(exc) or type(exc).__name__)
