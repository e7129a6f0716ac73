"""The server's share relay builds each recipient's ``DealtShares`` in place: the same bytes as the message type."""

from __future__ import annotations

import random

import pytest

from bastionfl.crypto.errors import CryptoFormatError, ProtocolStateError
from bastionfl.crypto.share_relay import ShareRelay
from bastionfl.crypto.threshold_messages import DealtShares, ShareDealing, box_bytes
from bastionfl.crypto.wire import HEAD_BYTES, Kind, envelope_bytes, seal, seal_in_place

N = 5


def _table(params, n: int, seed: int = 0) -> dict[int, dict[int, bytes]]:
    """Random boxes: dealer -> recipient -> box."""
    rng = random.Random(seed)
    size = box_bytes(params)
    return {j: {k: rng.randbytes(size) for k in range(n) if k != j} for j in range(n)}


def _dealing(params, table, j: int) -> bytes:
    return ShareDealing(j, tuple(sorted(table[j].items()))).to_bytes(params)


def test_seal_in_place_writes_the_bytes_of_seal(tiny):
    body = random.Random(1).randbytes(1000)
    buf = bytearray(envelope_bytes(len(body)))
    buf[HEAD_BYTES:HEAD_BYTES + len(body)] = body
    seal_in_place(Kind.DEALT_SHARES, tiny, buf)
    assert bytes(buf) == seal(Kind.DEALT_SHARES, tiny, body)
    with pytest.raises(CryptoFormatError):
        seal_in_place(Kind.DEALT_SHARES, tiny, bytearray(10))


def test_dealing_views_hold_the_copied_boxes(tiny):
    table = _table(tiny, N)
    data = _dealing(tiny, table, 2)
    viewed, copied = ShareDealing.from_bytes(tiny, data, copy=False), ShareDealing.from_bytes(tiny, data)
    assert all(isinstance(b, memoryview) for _, b in viewed.boxes)
    assert [(k, bytes(b)) for k, b in viewed.boxes] == list(copied.boxes) == sorted(table[2].items())


@pytest.mark.parametrize("seed", [0, 1])
def test_relay_matches_dealt_shares_in_any_arrival_order(tiny, seed):
    table = _table(tiny, N, seed)
    relay = ShareRelay(tiny, N)
    order = list(range(N))
    random.Random(seed).shuffle(order)
    for j in order:
        relay.add(j, ShareDealing.from_bytes(tiny, _dealing(tiny, table, j), copy=False).boxes)
    want = {r: DealtShares(r, tuple((j, table[j][r]) for j in range(N) if j != r)).to_bytes(tiny) for r in range(N)}
    assert relay.peek(3) == want[3]
    assert relay.take_all() == want
    assert relay.handed_out
    with pytest.raises(ProtocolStateError):
        relay.peek(0)
    with pytest.raises(ProtocolStateError):
        relay.take_all()


def test_relay_refuses_a_second_dealing_a_bad_box_and_an_early_hand_out(tiny):
    table = _table(tiny, N)
    relay = ShareRelay(tiny, N)
    boxes = tuple(sorted(table[0].items()))
    relay.add(0, boxes)
    with pytest.raises(ProtocolStateError):
        relay.add(0, boxes)
    with pytest.raises(ProtocolStateError):
        relay.add(1, boxes[:-1])
    with pytest.raises(ProtocolStateError):
        relay.add(1, ((0, b"short"),) + tuple(sorted(table[1].items()))[1:])
    with pytest.raises(ProtocolStateError):
        relay.take_all()  # dealings of members 1..4 missing
