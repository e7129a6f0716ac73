"""The protocol engine on the honest path: every setting equals plaintext FedAvg; state survives restarts."""

from __future__ import annotations

import numpy as np
import pytest

from bastionfl.crypto import (
    DEFAULT_THREAT_MODEL,
    ClientEpoch,
    ClientPolicy,
    CryptoFormatError,
    ParameterError,
    ProtocolStateError,
    ServerEpoch,
    ThreatModel,
)
from bastionfl.crypto.scheme import secret_data

from .engine import key_epoch, run_round

SETTINGS = [m.value for m in ThreatModel]


def test_threat_model_values_and_default():
    assert [m.value for m in ThreatModel] == ["honest-but-curious", "malicious", "malicious-colluding"]
    assert DEFAULT_THREAT_MODEL is ThreatModel.MALICIOUS and ClientPolicy().threat_model is ThreatModel.MALICIOUS
    assert ThreatModel.parse("malicious-colluding") is ThreatModel.MALICIOUS_COLLUDING
    with pytest.raises(ParameterError):
        ThreatModel.parse("paranoid")
    for bad in (dict(min_members=1), dict(min_uploads=1), dict(max_shares=0), dict(min_members=True)):
        with pytest.raises(ParameterError):
            ClientPolicy(**bad)


@pytest.mark.parametrize("threat", SETTINGS)
def test_honest_path_equals_plaintext_fedavg_precise(precise, threat):
    fed = key_epoch(precise, threat, 3, run_id=f"honest-{threat}")
    rng = np.random.default_rng(1)
    xs = [rng.uniform(-1, 1, 40_000) for _ in range(3)]
    weights = [10.0, 25.0, 65.0]
    mean, srv = run_round(fed, 1, xs, weights)
    expected = sum(w * x for w, x in zip(weights, xs)) / sum(weights)
    assert mean.shape == (40_000,)
    assert np.max(np.abs(mean - expected)) <= 1e-6
    assert srv.total_weight == 100.0


@pytest.mark.parametrize("threat", SETTINGS)
def test_honest_path_lean_and_a_second_round(lean, threat):
    fed = key_epoch(lean, threat, 3, run_id=f"lean-{threat}")
    rng = np.random.default_rng(2)
    for round_number in (7, 8):
        xs = [rng.uniform(-1, 1, 5000) for _ in range(3)]
        mean, _ = run_round(fed, round_number, xs)
        assert np.max(np.abs(mean - np.mean(xs, axis=0))) <= lean.expected_max_error(3, 1.0, 1)


@pytest.mark.parametrize("threat", ["malicious", "malicious-colluding"])
def test_ten_members_and_certified_roster(tiny, threat):
    fed = key_epoch(tiny, threat, 10, run_id=f"ten-{threat}", certified=True)
    xs = [np.full(100, float(i)) for i in range(10)]
    mean, _ = run_round(fed, 1, xs)
    assert np.max(np.abs(mean - 4.5)) <= tiny.expected_max_error(10, 9.0, 1)


def test_client_that_did_not_keep_its_c1_gets_it_back_from_the_server(tiny):
    fed = key_epoch(tiny, "malicious", 3, run_id="no-keep")
    xs = [np.linspace(-1, 1, 300) * (i + 1) for i in range(3)]
    mean, _ = run_round(fed, 1, xs, keep_own_c1=False)
    assert np.max(np.abs(mean - np.mean(xs, axis=0))) <= tiny.expected_max_error(3, 3.0, 1)


@pytest.mark.parametrize("threat", SETTINGS)
def test_every_step_survives_a_process_restart(tiny, threat):
    """The node stores export_local after each step and the next step runs on the imported state."""
    model = ThreatModel.parse(threat)
    policy = ClientPolicy(model)
    server, opening = ServerEpoch.open(tiny, model, "restart", 0)
    states, sent, secrets = [], [], []
    for _ in range(3):
        c, reply = ClientEpoch.open(tiny, opening, policy)
        server.add_key_reply(reply)
        sent.append(reply)
        states.append(c.export_local())
        key_bytes = secret_data(tiny, c.key._KeyShare__secret).tobytes()
        secrets += [key_bytes[i : i + 48] for i in range(0, len(key_bytes) - 48, 4096)]
        if c.identity is not None:
            secrets.append(c.identity.private_bytes())

    def step(i, fn):
        c = ClientEpoch.import_local(tiny, states[i])
        out = fn(c)
        states[i] = c.export_local()
        assert "secret" not in repr(c).lower() and ClientEpoch.import_local(tiny, states[i]).epoch == c.epoch
        if out:
            sent.append(out)
        return out

    prop = server.proposal()
    responses = [step(i, lambda c: c.on_key_proposal(prop)) for i in range(3)]
    if model is not ThreatModel.HONEST_BUT_CURIOUS:
        for r in responses:
            server.add_key_response(r)
        conf = server.confirmation()
        for i in range(3):
            step(i, lambda c: c.on_key_confirmation(conf))
    srv = server.new_round(1)
    xs = [np.full(200, 0.1 * (i + 1)) for i in range(3)]
    ups = [step(i, lambda c, x=x: c.upload(1, x)) for i, x in enumerate(xs)]
    if model is ThreatModel.MALICIOUS_COLLUDING:
        for u in ups:
            srv.add_commitment(u)
        lst = srv.commitment_list()
        ups = [step(i, lambda c: c.on_commitment_list(lst)) for i in range(3)]
    for u in ups:
        srv.add_upload(u)
    prop = srv.proposal()
    replies = [step(i, lambda c: c.on_round_proposal(prop)) for i in range(3)]
    if model is ThreatModel.HONEST_BUT_CURIOUS:
        for r in replies:
            srv.add_share(r)
    else:
        for r in replies:
            srv.add_signature(r)
        conf = srv.confirmation()
        for i in range(3):
            srv.add_share(step(i, lambda c: c.on_round_confirmation(conf)))
        with pytest.raises(Exception, match="already|round"):  # the replay record survived the restarts
            step(0, lambda c: c.on_round_confirmation(conf))
    assert np.max(np.abs(srv.weighted_mean() - 0.2)) <= tiny.expected_max_error(3, 0.3, 1)
    # no message a client sent carries its key secret or its signing key (the local states do, by design)
    assert len(sent) >= 9 and not any(sec in msg for msg in sent for sec in secrets)
    assert all(any(sec in st for st in states) for sec in secrets[:1])
    for bad in (states[0][:-1], states[0] + b"\0", b""):
        with pytest.raises(CryptoFormatError):
            ClientEpoch.import_local(tiny, bad)


def test_steps_out_of_order_are_refused(tiny):
    server, opening = ServerEpoch.open(tiny, "malicious", "order", 0)
    c, _ = ClientEpoch.open(tiny, opening)
    with pytest.raises(ProtocolStateError):
        c.upload(1, np.ones(3))
    with pytest.raises(ProtocolStateError):
        c.on_key_confirmation(b"")
    with pytest.raises(ProtocolStateError):
        server.new_round(1)
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(c)
    with pytest.raises(TypeError):
        pickle.dumps(c.identity)
    assert c.identity.private_bytes().hex() not in repr(c) + repr(c.identity)


def test_epoch_policy_is_the_rotation_rule_and_caps_the_clients_shares(tiny):
    from bastionfl.crypto import EpochError, EpochPolicy

    pol = EpochPolicy(rotate_every=2)
    with pytest.raises(ParameterError):
        EpochPolicy(rotate_every=0)
    client_policy = pol.client_policy("malicious")
    assert client_policy.max_shares == 2 and client_policy.threat_model is ThreatModel.MALICIOUS
    fed = key_epoch(tiny, "malicious", 3, run_id="cap", policy=client_policy)
    for r in (1, 2):
        run_round(fed, r, [np.full(10, 0.5)] * 3)
    with pytest.raises(EpochError, match="new key epoch"):
        run_round(fed, 3, [np.full(10, 0.5)] * 3)
