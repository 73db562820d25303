"""Buffered reads under paho: one ``recv`` for many MQTT packets instead of three or four per packet.

paho-mqtt reads a packet's command byte, each byte of its remaining length and then its
body with one ``recv`` call each, plus a last one that finds the socket empty: about four
system calls (and four Python exceptions or returns) per PUBLISH or PUBACK, which is
where much of a node's CPU time went at full replay speed.  :class:`BufferedSocket` reads
whatever the kernel holds in one call and serves paho's small reads from that.

paho asks every socket for ``pending()`` (it does so for TLS, whose layer buffers too) and
does not wait in ``select()`` while bytes are pending, so nothing buffered here waits for
more data to arrive.  Everything else is the socket's own.
"""

from __future__ import annotations

import socket
from typing import Any

#: bytes asked of the kernel per read
READ_SIZE = 65536


class BufferedSocket:
    """A connected TCP socket whose ``recv`` serves from a user-space buffer."""

    __slots__ = ("_sock", "_buf", "_pos")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        pos, buf = self._pos, self._buf
        if pos >= len(buf):
            data = self._sock.recv(max(bufsize, READ_SIZE))  # raises BlockingIOError when empty, b"" at EOF
            if len(data) <= bufsize:
                return data
            self._buf, pos, buf = data, 0, data
        end = min(pos + bufsize, len(buf))
        self._pos = end
        return buf[pos:end]

    def fill(self) -> int:
        """Read what the kernel holds into the buffer (after what is left of it); the bytes read.

        Raises BlockingIOError when there is nothing to read; 0 means the peer closed.
        """
        data = self._sock.recv(READ_SIZE)
        if data:
            self._buf = self._buf[self._pos :] + data if self._pos < len(self._buf) else data
            self._pos = 0
        return len(data)

    def pending(self) -> int:
        """Bytes read from the kernel that paho has not taken yet."""
        return len(self._buf) - self._pos

    def fileno(self) -> int:
        return self._sock.fileno()

    def __getattr__(self, name: str) -> Any:  # send, setsockopt, settimeout, shutdown, close, ...
        return getattr(self._sock, name)


def buffered(sock: Any) -> Any:
    """``sock`` with buffered reads if it is a plain TCP socket; a TLS or other socket as it is."""
    if type(sock) is socket.socket:
        return BufferedSocket(sock)
    return sock
