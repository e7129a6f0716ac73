"""The server's relay of t-of-n share boxes from their dealers (T1) to their recipients (T2), each box held once.

Every member deals one sealed box per other member (``ShareDealing``) and must receive every box addressed to it
(``DealtShares``): the server transposes an ``n x (n - 1)`` table of boxes it cannot open. Kept as one bytes object
per box and copied into per-recipient messages at hand-out, the boxes would exist twice at once (each freed box is a
hole too small for a whole message, so the allocator cannot reuse it before the last message is built). Here each
box is copied, as its dealing arrives, straight into its slot of a buffer per recipient that is already laid out
as that recipient's ``DealtShares`` envelope; hand-out seals each buffer and turns it into the message's bytes one
recipient at a time, releasing the buffer as it goes.
"""

from __future__ import annotations

import struct

from .errors import ProtocolStateError
from .params import Params
from .threshold_messages import box_bytes
from .wire import HEAD_BYTES, Kind, envelope_bytes, seal_in_place

__all__ = ["ShareRelay"]

_U32 = struct.Struct("<I")
_COUNTS = struct.Struct("<II")


class ShareRelay:
    """Per-recipient ``DealtShares`` envelopes of one epoch's ``n`` members, filled box by box as dealings arrive."""

    def __init__(self, params: Params, members: int) -> None:
        self.params = params
        self.members = members
        self._box = box_bytes(params)
        self._slot = _U32.size + self._box  # one entry: sender index, box
        self._size = envelope_bytes(_COUNTS.size + (members - 1) * self._slot)
        self._buffers: dict[int, bytearray] | None = None  # allocated with the first dealing
        self.dealers: set[int] = set()
        self.handed_out = False

    def _allocate(self) -> dict[int, bytearray]:
        """One envelope buffer per recipient with its recipient, count and sender indices written; boxes to come."""
        buffers = {}
        for recipient in range(self.members):
            buf = bytearray(self._size)
            _COUNTS.pack_into(buf, HEAD_BYTES, recipient, self.members - 1)
            for sender in range(self.members):
                if sender != recipient:
                    _U32.pack_into(buf, self._offset(recipient, sender), sender)
            buffers[recipient] = buf
        return buffers

    def _offset(self, recipient: int, sender: int) -> int:
        """Where the entry of ``sender``'s box sits in ``recipient``'s envelope (entries sorted by sender)."""
        return HEAD_BYTES + _COUNTS.size + (sender - (sender > recipient)) * self._slot

    def add(self, sender: int, boxes: tuple[tuple[int, bytes], ...]) -> None:
        """Copy a checked dealing's boxes (one per other member, sorted by recipient) into their recipients' slots."""
        if self.handed_out:
            raise ProtocolStateError("the dealt shares were already handed out")
        if not 0 <= sender < self.members or sender in self.dealers or \
                [k for k, _ in boxes] != [k for k in range(self.members) if k != sender]:
            raise ProtocolStateError("a dealing must come once per member with one box per other member, in order")
        if any(len(box) != self._box for _, box in boxes):
            raise ProtocolStateError("a share box of the wrong size")
        if self._buffers is None:
            self._buffers = self._allocate()
        for recipient, box in boxes:
            start = self._offset(recipient, sender) + _U32.size
            self._buffers[recipient][start : start + self._box] = box
        self.dealers.add(sender)

    def _sealed(self, recipient: int) -> bytearray:
        if self.handed_out or self._buffers is None or len(self.dealers) != self.members:
            raise ProtocolStateError("the dealt shares were already handed out, or dealings are missing")
        buf = self._buffers[recipient]
        seal_in_place(Kind.DEALT_SHARES, self.params, buf)
        return buf

    def peek(self, recipient: int) -> bytes:
        """``recipient``'s ``DealtShares`` envelope, keeping the relay's copy."""
        return bytes(self._sealed(recipient))

    def take_all(self) -> dict[int, bytes]:
        """Every recipient's ``DealtShares`` envelope; each buffer is released as its bytes are made."""
        out = {}
        for recipient in range(self.members):
            out[recipient] = bytes(self._sealed(recipient))
            del self._buffers[recipient]  # type: ignore[union-attr]  # its memory serves the next recipient's bytes
        self._buffers, self.handed_out = None, True
        return out
