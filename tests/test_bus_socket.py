"""BufferedSocket: paho's small reads served from one kernel read, nothing lost or reordered."""

from __future__ import annotations

import socket

import pytest

from wattcast.bus.socket import BufferedSocket, buffered


class CountingSocket:
    """A real socket that counts the recv calls reaching it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recvs = 0

    def recv(self, size: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(size)

    def fileno(self) -> int:
        return self.sock.fileno()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_small_reads_are_served_in_order_from_one_kernel_read(pair):
    writer, reader = pair
    data = bytes(range(256)) * 40  # 10,240 bytes
    writer.sendall(data)
    counting = CountingSocket(reader)
    sock = BufferedSocket(counting)  # type: ignore[arg-type]
    got = bytearray()
    for size in [1, 1, 2, 100, 5000, 1, 7] * 100:
        if len(got) == len(data):
            break
        chunk = sock.recv(size)
        assert 0 < len(chunk) <= size
        got += chunk
        assert sock.pending() == len(data) - len(got)
    assert bytes(got) == data
    assert counting.recvs == 1


def test_an_empty_socket_raises_blocking_and_end_of_stream_reads_empty(pair):
    writer, reader = pair
    sock = BufferedSocket(reader)
    with pytest.raises(BlockingIOError):  # paho's "nothing more now"
        sock.recv(1)
    writer.sendall(b"ab")
    assert sock.recv(1) == b"a" and sock.pending() == 1
    writer.close()
    assert sock.recv(1) == b"b"
    assert sock.recv(1) == b""  # the peer closed: paho's "connection lost"


def test_everything_else_is_the_sockets_own(pair):
    _, reader = pair
    sock = buffered(reader)
    assert isinstance(sock, BufferedSocket)
    assert sock.fileno() == reader.fileno()
    assert sock.getsockname() == reader.getsockname()
    other = object()  # e.g. a TLS socket, which buffers by itself
    assert buffered(other) is other
