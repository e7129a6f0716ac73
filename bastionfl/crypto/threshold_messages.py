"""Wire messages of the threshold key setup, one type per step (every field validated on parsing).

T1 member -> server (with its K2 reply): ``ShareDealing``, one sealed box per other member holding that member's
Shamir share of the sender's secret. T2 server -> each member (with K3): ``DealtShares``, the boxes addressed to it.
The server only forwards boxes it cannot open (X25519 keys signed by each member, bound into the epoch transcript).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import CryptoFormatError
from .keys import MAX_PARTICIPANTS
from .params import Params
from .threshold import NONCE_BYTES, TAG_BYTES
from .wire import Kind, Reader, Writer, open_envelope, seal


def box_bytes(params: Params) -> int:
    """Size of one share box: nonce, the share's coefficients (data primes x N, uint64), tag."""
    return NONCE_BYTES + 8 * len(params.data_primes) * params.poly_modulus_degree + TAG_BYTES


def _entries(r: Reader, params: Params, what: str, copy: bool = True) -> tuple[tuple[int, bytes], ...]:
    n = r.u32()
    if not n <= MAX_PARTICIPANTS:
        raise CryptoFormatError(f"{what}: count out of range")
    size = box_bytes(params)
    take = r.raw if copy else r.view
    out = tuple((r.u32(), take(size)) for _ in range(n))
    peers = [p for p, _ in out]
    if peers != sorted(set(peers)):
        raise CryptoFormatError(f"{what}: members not sorted and distinct")
    return out


def _write(w: Writer, entries: tuple[tuple[int, bytes], ...]) -> Writer:
    w.u32(len(entries))
    for peer, box in entries:
        w.u32(peer).raw(box)
    return w


@dataclass(frozen=True, eq=False)
class ShareDealing:
    """T1: the sender's boxes, one per other member (sorted by recipient)."""

    member: int
    boxes: tuple[tuple[int, bytes], ...] = field(repr=False)

    def to_bytes(self, params: Params) -> bytes:
        return seal(Kind.SHARE_DEALING, params, _write(Writer().u32(self.member), self.boxes).getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes, copy: bool = True) -> ShareDealing:
        """Parse and check a dealing; with ``copy=False`` its boxes are memoryviews into ``data`` (the server's relay
        copies each box once, into its recipient's message)."""
        r = Reader(open_envelope(Kind.SHARE_DEALING, params, data), "share dealing")
        member = r.u32()
        boxes = _entries(r, params, "share dealing", copy)
        r.done()
        return cls(member, boxes)


@dataclass(frozen=True, eq=False)
class DealtShares:
    """T2: every box addressed to ``recipient`` (sorted by sender)."""

    recipient: int
    boxes: tuple[tuple[int, bytes], ...] = field(repr=False)

    def to_bytes(self, params: Params) -> bytes:
        return seal(Kind.DEALT_SHARES, params, _write(Writer().u32(self.recipient), self.boxes).getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> DealtShares:
        r = Reader(open_envelope(Kind.DEALT_SHARES, params, data), "dealt shares")
        recipient = r.u32()
        boxes = _entries(r, params, "dealt shares")
        r.done()
        return cls(recipient, boxes)
