"""The benchmark's link between the client and the simulated server: framed messages over a socket, with byte
counters and the time spent waiting for the other side (which the client's stage timers leave out)."""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from typing import Any

__all__ = ["Channel", "ChannelClosed"]

_HEAD = struct.Struct("<16sQ")  # kind (ASCII, zero-padded), payload length


class ChannelClosed(ConnectionError):
    """The other side went away (it exited or was killed)."""


class Channel:
    """Length-prefixed frames ``(kind, payload)``; ``up``/``down`` count payload bytes sent/received."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.up = 0
        self.down = 0
        self.wait_s = 0.0
        self.send_s = 0.0  # time blocked in sending (the other side not reading yet)

    def send(self, kind: str, payload: bytes | bytearray | memoryview = b"") -> None:
        """Send one frame."""
        start = time.perf_counter()
        self.sock.sendall(_HEAD.pack(kind.encode("ascii"), len(payload)))
        if len(payload):
            self.sock.sendall(payload)
        self.send_s += time.perf_counter() - start
        self.up += len(payload)

    def send_json(self, kind: str, obj: Any) -> None:
        """Send a small control frame (its JSON bytes count as payload)."""
        self.send(kind, json.dumps(obj).encode())

    def _read_exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:], min(n - got, 1 << 24))
            if k == 0:
                raise ChannelClosed("the other side closed the connection")
            got += k
        return buf

    def recv(self, expect: str | None = None) -> tuple[str, bytearray]:
        """Wait for the next frame (the wait is added to ``wait_s``), then read it whole."""
        start = time.perf_counter()
        select.select([self.sock], [], [])
        self.wait_s += time.perf_counter() - start
        kind_b, length = _HEAD.unpack(bytes(self._read_exact(_HEAD.size)))
        kind = kind_b.rstrip(b"\0").decode("ascii")
        payload = self._read_exact(length) if length else bytearray()
        self.down += length
        if expect is not None and kind != expect:
            if kind == "error":
                raise ChannelClosed(f"the server failed: {payload.decode(errors='replace')}")
            raise ChannelClosed(f"expected a {expect!r} frame, got {kind!r}")
        return kind, payload

    def recv_header(self, expect: str) -> int:
        """Wait for a ``expect`` frame and return its length; its payload is then read with :meth:`read`."""
        start = time.perf_counter()
        select.select([self.sock], [], [])
        self.wait_s += time.perf_counter() - start
        kind_b, length = _HEAD.unpack(bytes(self._read_exact(_HEAD.size)))
        if kind_b.rstrip(b"\0").decode("ascii") != expect:
            raise ChannelClosed(f"expected a {expect!r} frame")
        self.down += length
        return length

    def read(self, n: int) -> bytes:
        """The next ``n`` payload bytes of the current frame (streaming consumers)."""
        return bytes(self._read_exact(n)) if n else b""

    def recv_json(self, expect: str | None = None) -> Any:
        """Receive a control frame."""
        return json.loads(bytes(self.recv(expect)[1]))
