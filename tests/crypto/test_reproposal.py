"""Malicious t-of-n: a member of U that does not sign the round transcript leaves U, and the live members sign a
re-proposal for U' (strictly smaller). The decrypted sum is U''s; a server never gets two sums of one round."""

from __future__ import annotations

import numpy as np
import pytest

from bastionfl.crypto import (
    ClientEpoch,
    IncompleteShareSetError,
    ProtocolStateError,
    ReplayError,
    RoundConfirmation,
    VerificationError,
)
from bastionfl.crypto.threshold import MAX_REPROPOSALS, ThresholdRule

from .threshold_engine import decrypt_with_dropouts, threshold_epoch

N = 7
RULE = ThresholdRule.parse(0.6)  # t = 5, min_uploads = 3

_round = iter(range(1, 10_000))


@pytest.fixture(scope="module")
def fed(tiny):
    return threshold_epoch(tiny, "malicious", N, RULE, run_id="tofn-repropose")


def _xs(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, 300) for _ in range(N)]


def _uploads(fed, number: int, xs: list[np.ndarray]) -> dict[int, bytes]:
    return {i: fed.clients[i].upload(number, xs[i], 1.0) for i in range(N)}


def _server(fed, number: int, ups: dict[int, bytes], members) -> object:
    """A server round (honest or the attacker's own) whose upload set is ``members``."""
    srv = fed.server.new_round(number)
    for i in members:
        srv.add_upload(ups[i])
    return srv


def _sign(fed, srv, members) -> None:
    for i in members:
        srv.add_signature(fed.clients[i].on_round_proposal(srv.proposal(for_member=i)))


def _close(fed, out, want) -> bool:
    return bool(np.abs(out - want).max() < fed.params.noise_error(N, N, 1))


def test_member_of_u_missing_at_consistency_reproposal_decrypts_u_prime(fed):
    """Member 6 uploads but never signs: C1 is unverifiable, so the server re-proposes U' = U - {6}; the six live
    members sign it and t of them decrypt exactly the sum over U'."""
    number, xs = next(_round), _xs(1)
    srv = _server(fed, number, _uploads(fed, number, xs), range(N))
    _sign(fed, srv, range(N - 1))
    with pytest.raises(IncompleteShareSetError):
        srv.confirmation(0)  # 6's sketch is missing
    srv.repropose([N - 1])
    assert srv.uploads == tuple(range(N - 1)) and srv.signers == ()
    _sign(fed, srv, range(N - 1))
    out, attempts = decrypt_with_dropouts(fed, srv, set())
    assert attempts == 1 and _close(fed, out, sum(xs[: N - 1]))
    assert not _close(fed, out, sum(xs))
    with pytest.raises(ProtocolStateError):
        srv.repropose([0])  # decryption started: the upload set is settled


def test_shares_for_u_then_reproposal_refused(fed):
    """The server decrypts U, then re-proposes U' to learn the dropped member's update: every member that gave a
    share refuses to sign U'; the others are fewer than t."""
    number, xs = next(_round), _xs(2)
    ups = _uploads(fed, number, xs)
    srv = _server(fed, number, ups, range(N))
    _sign(fed, srv, range(N))
    out, _ = decrypt_with_dropouts(fed, srv, set())
    assert _close(fed, out, sum(xs))
    evil = _server(fed, number, ups, range(N - 1))
    t = fed.server.threshold
    for i in range(t):
        with pytest.raises(ReplayError):
            fed.clients[i].on_round_proposal(evil.proposal(for_member=i))
    _sign(fed, evil, range(t, N - 1))
    with pytest.raises(IncompleteShareSetError):
        evil.confirmation(0)


def test_shares_for_u_prime_then_confirmation_for_u_refused(fed):
    """Every member signed U, then U'; the members decrypt U'. The server then confirms U with the old
    signatures: members that gave a share (or signed U' since) refuse; the member left out answers alone."""
    number, xs = next(_round), _xs(3)
    ups = _uploads(fed, number, xs)
    old = _server(fed, number, ups, range(N))
    _sign(fed, old, range(N))
    srv = _server(fed, number, ups, range(N - 1))
    _sign(fed, srv, range(N - 1))
    out, _ = decrypt_with_dropouts(fed, srv, set())
    assert _close(fed, out, sum(xs[: N - 1]))
    conf = old.confirmation(1, (0, 1, 2, 3, N - 1))
    for i in (0, 1, 2, 3):
        with pytest.raises(VerificationError):
            fed.clients[i].on_round_confirmation(conf)
    # the member rule itself: shares for one round transcript per round, whatever the caller
    member = fed.clients[0]
    with pytest.raises(ReplayError):
        member.threshold.decryption_share(fed.params, member.key, number, 1, np.asarray(old._sum[:, 1]),
                                          (0, 1, 2, 3, 4), 0, N, N, transcript=old.transcript)


def test_reproposal_must_be_a_strict_subset(fed):
    """After signing U = {0..5}: a set that swaps member 5 for member 6, and one that adds member 6, are refused;
    so is a set that changes a member's commitment."""
    number, xs = next(_round), _xs(4)
    ups = _uploads(fed, number, xs)
    first = _server(fed, number, ups, range(N - 1))
    _sign(fed, first, range(N - 1))
    for members in ((0, 1, 2, 3, 4, 6), tuple(range(N))):
        evil = _server(fed, number, ups, members)
        with pytest.raises(ReplayError):
            fed.clients[0].on_round_proposal(evil.proposal(for_member=0))
    same = _server(fed, number, ups, range(N - 1))
    same.proposal(for_member=0)
    same.repropose([5])
    fed.clients[0].on_round_proposal(same.proposal(for_member=0))  # a genuine strict subset is signed


def test_equivocation_between_two_smaller_sets(fed):
    """Members 0-3 get U - {6}, members 4-6 get U - {5}: neither transcript reaches t signatures, a member refuses
    the other branch, and a confirmation mixing the two branches' signatures is refused."""
    number, xs = next(_round), _xs(5)
    ups = _uploads(fed, number, xs)
    base = _server(fed, number, ups, range(N))
    _sign(fed, base, range(N))
    a = _server(fed, number, ups, (0, 1, 2, 3, 4, 5))
    b = _server(fed, number, ups, (0, 1, 2, 3, 4, 6))
    _sign(fed, a, range(4))
    _sign(fed, b, range(4, N))
    for srv in (a, b):
        with pytest.raises(IncompleteShareSetError):
            srv.confirmation(0)
    with pytest.raises(ReplayError):
        fed.clients[0].on_round_proposal(b.proposal(for_member=0))  # not a subset of what member 0 signed last
    sigs = tuple(a._signatures[i] for i in a.signers) + tuple(b._signatures[i] for i in (4,))
    mixed = RoundConfirmation(number, a._proposal.length, sigs, np.ascontiguousarray(a._sum[:, 1]),
                              attempt=0, decrypting=(0, 1, 2, 3, 4)).to_bytes(fed.params)
    with pytest.raises(VerificationError):
        fed.clients[0].on_round_confirmation(mixed)


def test_too_many_reproposals_refused(fed):
    """A member signs the first set and MAX_REPROPOSALS strictly smaller ones, then refuses; the server round
    stops at the same bound, and below min_uploads every member refuses."""
    number, xs = next(_round), _xs(6)
    ups = _uploads(fed, number, xs)
    sets = [tuple(range(N - k)) for k in range(MAX_REPROPOSALS + 2)]  # 7, 6, 5, 4, 3 members
    assert len(sets[-1]) >= 3
    for k, members in enumerate(sets):
        srv = _server(fed, number, ups, members)
        if k <= MAX_REPROPOSALS:
            _sign(fed, srv, (0,))
        else:
            with pytest.raises(ReplayError):
                fed.clients[0].on_round_proposal(srv.proposal(for_member=0))
    srv = _server(fed, number + 1000, _uploads(fed, number + 1000, xs), range(N))
    for k in range(MAX_REPROPOSALS):
        srv.proposal()
        srv.repropose([N - 1 - k])
    srv.proposal()
    with pytest.raises(ProtocolStateError):
        srv.repropose([0])
    small = _server(fed, number + 2000, _uploads(fed, number + 2000, xs), range(3))
    small.proposal()
    with pytest.raises(VerificationError):
        small.repropose([0, 1, 2])


def test_reproposal_record_survives_export_and_import(fed):
    """The re-proposal count and the round a member answered travel in its local state."""
    number, xs = next(_round), _xs(7)
    ups = _uploads(fed, number, xs)
    srv = _server(fed, number, ups, range(N))
    _sign(fed, srv, range(N))
    srv.repropose([N - 1])
    _sign(fed, srv, range(N - 1))
    t = fed.server.threshold
    conf = srv.confirmation(0, tuple(range(t)))
    for i in range(t):
        srv.add_share(fed.clients[i].on_round_confirmation(conf))
    again = ClientEpoch.import_local(fed.params, fed.clients[0].export_local())
    assert again.rounds[number].reproposals == 1 and again.threshold.has_answered(number)
    evil = _server(fed, number, ups, range(N - 2))
    with pytest.raises(ReplayError):
        again.on_round_proposal(evil.proposal(for_member=0))
    assert _close(fed, srv.result(), sum(xs[: N - 1]))


def test_malformed_reproposals_are_refused_messages(fed):
    """A member that signed U gets 300 mutated re-proposals (bytes flipped, truncated, extended, a count set to
    2^32 - 1; checksum recomputed): a typed refusal (CryptoError) or a well-formed re-proposal, nothing else."""
    from bastionfl.crypto import CryptoError
    from bastionfl.crypto.wire import Kind, open_envelope, seal

    number, xs = next(_round), _xs(8)
    srv = _server(fed, number, _uploads(fed, number, xs), range(N))
    _sign(fed, srv, range(N))
    srv.repropose([N - 1])
    body = bytes(open_envelope(Kind.ROUND_PROPOSAL, fed.params, srv.proposal(for_member=0)))
    saved = fed.clients[0].export_local()
    rng = np.random.default_rng(8)
    refused = 0
    for _ in range(300):
        b, how = bytearray(body), int(rng.integers(0, 4))
        if how == 0:
            for pos in rng.integers(0, min(len(b), 2000), int(rng.integers(1, 4))):
                b[pos] = int(rng.integers(0, 256))
        elif how == 1:
            b = b[: int(rng.integers(0, len(b)))]
        elif how == 2:
            b += bytes(int(x) for x in rng.integers(0, 256, int(rng.integers(1, 40))))
        else:
            pos = int(rng.integers(0, 20))
            b[pos:pos + 4] = b"\xff" * 4
        if bytes(b) == body:
            continue
        member = ClientEpoch.import_local(fed.params, saved)
        try:  # a flip in the aggregate digest leaves a well-formed re-proposal, which is signed like any other
            member.on_round_proposal(seal(Kind.ROUND_PROPOSAL, fed.params, bytes(b)))
        except CryptoError:
            refused += 1
    assert refused > 250
