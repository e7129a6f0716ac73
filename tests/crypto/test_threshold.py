"""t-of-n decryption through the wire: the threshold key reconstructs the epoch's secret, rounds survive dropouts
of decrypting members, and a malicious server is refused when it asks two shares on one ciphertext, asks a member
outside the decrypting set, swaps an exchange key, or tries to decode from fewer than t shares."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bastionfl.crypto import (
    ClientEpoch,
    ClientPolicy,
    IncompleteShareSetError,
    ParameterError,
    ProtocolStateError,
    ReplayError,
    RoundConfirmation,
    RoundShare,
    ServerEpoch,
    VerificationError,
)
from bastionfl.crypto import scheme
from bastionfl.crypto.epoch_messages import EpochProposal
from bastionfl.crypto.shamir import recover
from bastionfl.crypto.threshold import ExchangeKey, ThresholdRule, c_max
from bastionfl.errors import BastionFLError

from .threshold_engine import decrypt_with_dropouts, signed_round, threshold_epoch

SIGNED = ["malicious", "malicious-colluding"]
N = 7
RULE = ThresholdRule.parse(0.6)  # t = ceil(0.6 * 7) = 5


def _xs(n=N, size=300, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, size) for _ in range(n)]


@pytest.fixture(scope="module", params=SIGNED)
def fed(request, tiny):
    return threshold_epoch(tiny, request.param, N, RULE, run_id=f"tofn-{request.param}")


_round = iter(range(1, 10_000))


def test_rule_parsing_and_collusion_bound():
    assert RULE.threshold_for(7) == 5 and RULE.threshold_for(20) == 12 and RULE.threshold_for(100) == 60
    assert ThresholdRule.parse(12).threshold_for(20) == 12 and ThresholdRule.parse(1.0).threshold_for(9) == 9
    assert c_max(12, 20) == 3 and c_max(60, 100) == 19 and c_max(20, 20) == 19 and c_max(10, 20) < 0
    for bad in (0.5, 0.3, 1.5, -2, 0, float("nan"), True):
        with pytest.raises(ParameterError):
            ThresholdRule.parse(bad)
    with pytest.raises(BastionFLError):
        ThresholdRule.parse(10).threshold_for(20)  # t must exceed n / 2
    with pytest.raises(ParameterError):
        ClientPolicy("honest-but-curious", threshold=RULE)


def test_threshold_shares_reconstruct_the_epoch_secret(fed):
    """Any t members' combined shares interpolate to the sum of every member's secret (data primes)."""
    p = fed.params
    levels = len(p.data_primes)
    total = sum(scheme.secret_data(p, c.key._KeyShare__secret)[:levels].astype(object) for c in fed.clients)
    want = np.array([[int(v) % q for v in row] for row, q in zip(total, p.data_primes)], dtype=np.uint64)
    shares = {c.index: c.threshold._share for c in fed.clients}
    t = fed.server.threshold
    assert np.array_equal(recover({i: shares[i] for i in (0, 2, 3, 5, 6)[:t]}, p.data_primes), want)
    assert not np.array_equal(recover({i: shares[i] for i in (1, 2, 4, 6)}, p.data_primes), want)  # t - 1


def test_the_server_keeps_no_share_box_once_handed_out(fed):
    """After T2 the server holds the boxes only inside the recipients' messages; a second hand-out is refused."""
    relay = fed.server._relay
    assert relay is not None and relay.handed_out and relay._buffers is None and len(relay.dealers) == N
    assert fed.server.missing_dealings == []
    with pytest.raises(ProtocolStateError):
        fed.server.dealt_shares(0)
    with pytest.raises(ProtocolStateError):
        fed.server.take_dealt_shares()


@pytest.mark.parametrize("drops", [1, N // 3, N - RULE.threshold_for(N) + 1])
def test_dropouts_after_upload(fed, drops):
    """1 and n/3 members vanish after signing: retries under new decrypting sets give the exact sum of U with no
    restart; n - t + 1 vanish: a clean failure, never a partial sum."""
    xs = _xs(seed=drops)
    srv = signed_round(fed, next(_round), xs)
    vanish = set(range(drops))
    if N - drops < fed.server.threshold:
        with pytest.raises(IncompleteShareSetError):
            decrypt_with_dropouts(fed, srv, vanish)
        with pytest.raises(IncompleteShareSetError):
            srv.result()
        return
    out, attempts = decrypt_with_dropouts(fed, srv, vanish)
    assert attempts == 2 and srv.shares_used == fed.server.threshold < len(srv.uploads)
    assert np.abs(out - sum(xs)).max() < fed.params.noise_error(N, N, 1)


def test_two_shares_on_one_ciphertext_refused(fed):
    """The server replays an attempt's confirmation, or re-labels the same attempt with another decrypting set
    (another Lagrange coefficient on the same ciphertext): the member refuses the second share."""
    srv = signed_round(fed, next(_round), _xs(seed=11))
    t = fed.server.threshold
    conf = srv.confirmation(0, tuple(range(t)))
    member = fed.clients[0]
    before = len(member.key.used_sets)
    member.on_round_confirmation(conf)
    with pytest.raises(ReplayError):
        member.on_round_confirmation(conf)
    other = RoundConfirmation.from_bytes(fed.params, conf)
    relabelled = dataclasses.replace(other, decrypting=(0,) + tuple(range(2, t + 1)))
    with pytest.raises(ReplayError):
        member.on_round_confirmation(relabelled.to_bytes(fed.params))
    # a retry is a new ciphertext: C1 + v a, with v fixed by the transcript and the attempt
    member.on_round_confirmation(srv.confirmation(1, tuple(range(t))))
    assert len(member.key.used_sets) == before + 2  # two attempts, two different ciphertexts recorded


def test_share_outside_the_decrypting_set_refused(fed):
    srv = signed_round(fed, next(_round), _xs(seed=12))
    t = fed.server.threshold
    conf = srv.confirmation(0, tuple(range(t)))
    with pytest.raises(VerificationError, match="not in the round's decrypting set"):
        fed.clients[N - 1].on_round_confirmation(conf)
    # a share a member outside S made anyway (for another attempt) is refused by the server
    share = RoundShare.from_bytes(fed.params, fed.clients[0].on_round_confirmation(conf))
    forged = RoundShare(N - 1, share.round_number, share.transcript, share.data)
    with pytest.raises(VerificationError, match="outside the decrypting set"):
        srv.add_share(forged.to_bytes(fed.params))
    with pytest.raises(VerificationError):
        srv.add_share(RoundShare(N + 3, share.round_number, share.transcript, share.data).to_bytes(fed.params))


def test_fewer_than_t_signers_or_shares_is_a_clean_failure(fed):
    t = fed.server.threshold
    srv = signed_round(fed, next(_round), _xs(seed=13), signers=range(t - 1)) if fed.threat.value == \
        "malicious-colluding" else signed_round(fed, next(_round), _xs(seed=13), uploaders=range(3),
                                                 signers=range(t - 1))
    with pytest.raises(IncompleteShareSetError):
        srv.confirmation(0)
    srv = signed_round(fed, next(_round), _xs(seed=14))
    conf = srv.confirmation(0, tuple(range(t)))
    for c in fed.clients[: t - 1]:
        srv.add_share(c.on_round_confirmation(conf))
    with pytest.raises(IncompleteShareSetError):
        srv.result()
    short = dataclasses.replace(RoundConfirmation.from_bytes(fed.params, conf), decrypting=tuple(range(t - 1)))
    with pytest.raises(VerificationError, match="decrypting set"):
        fed.clients[0].on_round_confirmation(short.to_bytes(fed.params))


def test_two_sums_in_one_round_impossible(fed):
    """The server shows members 0-3 one upload set and members 4-6 a smaller one in the same round: neither
    transcript reaches t signatures, a member refuses to sign the second, and a decrypting set padded with a
    signature moved from another member is refused."""
    number = next(_round)
    xs = _xs(seed=15)
    ups = {i: fed.clients[i].upload(number, xs[i], 1.0) for i in range(N)}
    rounds = []
    for subset in (range(N), range(N - 1)):
        srv = fed.server.new_round(number)
        if fed.threat.value == "malicious-colluding":
            for i in subset:
                srv.add_commitment(ups[i])
            lst = srv.commitment_list()
            if rounds:  # members reveal against one commitment list per round
                with pytest.raises(ReplayError):
                    fed.clients[0].on_commitment_list(lst)
                return
            for i in subset:
                srv.add_upload(fed.clients[i].on_commitment_list(lst))
        else:
            for i in subset:
                srv.add_upload(ups[i])
        rounds.append((srv, srv.proposal()))
    (srv_a, prop_a), (srv_b, prop_b) = rounds
    for i in range(4):
        srv_a.add_signature(fed.clients[i].on_round_proposal(prop_a))
    for i in range(4, N):
        srv_b.add_signature(fed.clients[i].on_round_proposal(prop_b))
    for srv in (srv_a, srv_b):
        with pytest.raises(IncompleteShareSetError):
            srv.confirmation(0)
    with pytest.raises(ReplayError):
        fed.clients[4].on_round_proposal(prop_a)
    with pytest.raises(VerificationError):
        fed.clients[0].on_round_confirmation(_forged_confirmation(fed, srv_a))


def _forged_confirmation(fed, srv):
    """A confirmation whose decrypting set counts members that never signed this transcript."""
    t = fed.server.threshold
    sigs = tuple(srv._signatures[i] for i in srv.signers)
    fake = tuple(dataclasses.replace(sigs[0], member=m) for m in range(len(sigs), t))
    return RoundConfirmation(srv.round_number, srv._proposal.length, sigs + fake,
                             np.ascontiguousarray(srv._sum[:, 1]), (), 0, tuple(range(t))).to_bytes(fed.params)


@pytest.mark.parametrize("threat", SIGNED)
def test_swapped_exchange_key_detected(tiny, threat):
    """The server replaces a member's X25519 key by its own in the roster (to open that member's boxes)."""
    rule = RULE
    policy = ClientPolicy(threat, min_members=3, min_uploads=3, threshold=rule)
    server, opening = ServerEpoch.open(tiny, threat, "swap", 0, rule)
    clients = []
    for _ in range(4):
        c, reply = ClientEpoch.open(tiny, opening, policy)
        server.add_key_reply(reply)
        clients.append(c)
    prop = EpochProposal.from_bytes(tiny, server.proposal())
    mine = ExchangeKey.generate()
    swapped = list(prop.exchange)
    swapped[1] = (mine.public, swapped[1][1])
    bad = dataclasses.replace(prop, exchange=tuple(swapped)).to_bytes(tiny)
    for c in clients:
        with pytest.raises(VerificationError, match="exchange key"):
            c.on_key_proposal(bad)


@pytest.mark.parametrize("threat", SIGNED)
def test_lower_threshold_than_the_client_accepts_refused(tiny, threat):
    _, opening = ServerEpoch.open(tiny, threat, "low", 0, ThresholdRule.parse(0.51))
    with pytest.raises(VerificationError, match="threshold"):
        ClientEpoch.open(tiny, opening, ClientPolicy(threat, threshold=RULE))
    _, plain = ServerEpoch.open(tiny, threat, "low", 1)
    with pytest.raises(VerificationError, match="threshold"):
        ClientEpoch.open(tiny, plain, ClientPolicy(threat, threshold=RULE))


def test_state_survives_export_and_import(fed):
    """A member whose steps run in separate processes: its threshold share and replay record travel in its
    local state."""
    srv = signed_round(fed, next(_round), _xs(seed=16))
    t = fed.server.threshold
    conf = srv.confirmation(0, tuple(range(t)))
    for i in range(t):
        reloaded = ClientEpoch.import_local(fed.params, fed.clients[i].export_local())
        srv.add_share(reloaded.on_round_confirmation(conf))
        with pytest.raises(ReplayError):
            ClientEpoch.import_local(fed.params, reloaded.export_local()).on_round_confirmation(conf)
    assert np.abs(srv.result() - sum(_xs(seed=16))).max() < fed.params.noise_error(N, N, 1)
