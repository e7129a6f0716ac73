"""Epoch rosters certified by the Home Authority, played against a malicious FL server: forged endorsements, sybil
keys, one client's second key, a second roster under one label, small rosters, replays across labels, tampered and
malformed roster bytes, another server's handles."""

from __future__ import annotations

import os

import pytest
from auth_helpers import OTHER, SERVER, ctx_for, handshake, make_client, make_server
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bastionfl.auth import AuthError, MalformedInput
from bastionfl.auth.roster import SignedRoster, endorse_epoch_key

RUN = 7


def _vk() -> bytes:
    return Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _admit(ha, clock, labels, server_id=SERVER, epoch=1):  # noqa: ANN001, ANN202
    """Handshakes of fresh clients in one round: (credential's roster key, client session, server session)."""
    server = make_server(ha, clock, server_id)
    out = []
    for i, label in enumerate(labels):
        client = make_client(ha, clock, label)
        t = handshake(client, server, ctx_for(clock, epoch=epoch, node_id=100 + i, run_id=RUN))
        assert t.client_session is not None and t.server_session is not None
        out.append((client._store.load().roster_public_key, t.client_session, t.server_session))
    return out


def _register(ha, members, key_epoch=1, server_id=SERVER):  # noqa: ANN001, ANN202
    keys = []
    for _, client, server in members:
        vk = _vk()
        tag = endorse_epoch_key(client.endorse_key, server_id, RUN, key_epoch, vk)
        assert ha.register_epoch_key(server_id, server.handle, key_epoch, vk, tag)
        keys.append(vk)
    return keys


def test_clients_verify_the_roster_of_every_endorsed_key(ha, clock) -> None:
    members = _admit(ha, clock, ["a", "b", "c"])
    keys = _register(ha, members)
    wire = ha.sign_roster(SERVER, RUN, 1).to_bytes()
    ha_key = members[0][0]
    assert ha_key == ha.rosters.public_key and all(m[0] == ha_key for m in members)
    for (_, _, _), vk in zip(members, keys):
        got = SignedRoster.from_bytes(wire).verify(ha_key, server_id=SERVER, run_id=RUN, key_epoch=1, min_members=3,
                                                   own_key=vk)
        assert got == frozenset(keys)
    assert "endorse_key" not in repr(members[0][1]) and members[0][2].endorse_key is None  # the server has none


def test_the_server_cannot_endorse_keys_it_invents(ha, clock) -> None:
    members = _admit(ha, clock, ["a", "b"])
    _, client, server = members[0]
    vk = _vk()
    with_session_key = endorse_epoch_key(server.key, SERVER, RUN, 1, vk)  # the server knows the session key only
    assert not ha.register_epoch_key(SERVER, server.handle, 1, vk, with_session_key)
    assert not ha.register_epoch_key(SERVER, os.urandom(16), 1, vk, os.urandom(32))  # no such handle
    assert not ha.register_epoch_key(SERVER, server.handle, 1, vk, os.urandom(32))
    real = endorse_epoch_key(client.endorse_key, SERVER, RUN, 1, vk)
    assert not ha.register_epoch_key(SERVER, server.handle, 2, vk, real)  # endorsed for epoch 1, not 2
    assert not ha.register_epoch_key(OTHER, server.handle, 1, vk, real)  # another server cannot use the handle
    assert ha.register_epoch_key(SERVER, server.handle, 1, vk, real)


def test_one_client_puts_one_key_into_a_roster(ha, clock) -> None:
    members = _admit(ha, clock, ["a", "b"])
    _register(ha, members)
    _, client, server = members[0]
    second = _vk()
    tag = endorse_epoch_key(client.endorse_key, SERVER, RUN, 1, second)
    assert not ha.register_epoch_key(SERVER, server.handle, 1, second, tag)  # no sybil from one enrolment
    assert len(ha.sign_roster(SERVER, RUN, 1).members) == 2


def test_a_label_is_signed_once_and_later_keys_are_refused(ha, clock) -> None:
    members = _admit(ha, clock, ["a", "b", "c"])
    _register(ha, members[:2])
    first = ha.sign_roster(SERVER, RUN, 1)
    _, client, server = members[2]
    vk = _vk()
    assert not ha.register_epoch_key(SERVER, server.handle, 1, vk, endorse_epoch_key(client.endorse_key, SERVER,
                                                                                       RUN, 1, vk))
    assert ha.sign_roster(SERVER, RUN, 1).to_bytes() == first.to_bytes()  # the same roster, never a second one


def test_a_small_or_foreign_roster_is_refused_by_clients(ha, clock) -> None:
    members = _admit(ha, clock, ["a", "b"])
    keys = _register(ha, members)
    roster = ha.sign_roster(SERVER, RUN, 1)
    ha_key = members[0][0]
    with pytest.raises(AuthError, match="fewer than the minimum"):
        roster.verify(ha_key, server_id=SERVER, run_id=RUN, key_epoch=1, min_members=3)
    for kwargs in ({"server_id": OTHER, "run_id": RUN, "key_epoch": 1}, {"server_id": SERVER, "run_id": RUN + 1,
                   "key_epoch": 1}, {"server_id": SERVER, "run_id": RUN, "key_epoch": 2}):
        with pytest.raises(AuthError, match="another server, run or key epoch"):
            roster.verify(ha_key, min_members=2, **kwargs)
    with pytest.raises(AuthError, match="own epoch key"):
        roster.verify(ha_key, server_id=SERVER, run_id=RUN, key_epoch=1, min_members=2, own_key=_vk())
    assert roster.verify(ha_key, server_id=SERVER, run_id=RUN, key_epoch=1, min_members=2, own_key=keys[0])
    with pytest.raises(AuthError):
        ha.sign_roster(SERVER, RUN, 9)  # nobody endorsed a key for epoch 9: no roster of one or zero


def test_tampered_and_forged_rosters_do_not_verify(ha, clock) -> None:
    members = _admit(ha, clock, ["a", "b"])
    _register(ha, members)
    roster = ha.sign_roster(SERVER, RUN, 1)
    ha_key = members[0][0]
    grown = SignedRoster(roster.server_id, roster.run_id, roster.key_epoch, roster.members | {_vk()}, roster.signature)
    with pytest.raises(AuthError, match="signature"):
        grown.verify(ha_key, server_id=SERVER, run_id=RUN, key_epoch=1, min_members=2)
    own = Ed25519PrivateKey.generate()  # the server signs a roster of its own
    forged = SignedRoster.sign(own, SERVER, RUN, 1, frozenset({_vk(), _vk(), _vk()}))
    with pytest.raises(AuthError, match="signature"):
        forged.verify(ha_key, server_id=SERVER, run_id=RUN, key_epoch=1, min_members=2)
    wire = roster.to_bytes()
    for cut in (0, 4, 10, len(wire) - 1):
        with pytest.raises(MalformedInput):
            SignedRoster.from_bytes(wire[:cut])
    rng = __import__("random").Random(3)
    for _ in range(2000):  # mutated bytes: a typed refusal or a roster whose signature fails, never anything else
        data = bytearray(wire)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            mutated = SignedRoster.from_bytes(bytes(data))
        except MalformedInput:
            continue
        if bytes(data) != wire:
            with pytest.raises(AuthError):
                mutated.verify(ha_key, server_id=mutated.server_id, run_id=mutated.run_id,
                               key_epoch=mutated.key_epoch, min_members=1)


def test_the_roster_key_survives_a_restart_and_sealed_rosters_stay_sealed(db_path, kek, clock, ha) -> None:
    from auth_helpers import GENEROUS

    from bastionfl.auth import HomeAuthority

    members = _admit(ha, clock, ["a", "b"])
    _register(ha, members)
    first = ha.sign_roster(SERVER, RUN, 1)
    again = HomeAuthority.open(db_path, kek, limits=GENEROUS, clock=clock)
    try:
        assert again.rosters.public_key == ha.rosters.public_key
        assert again.sign_roster(SERVER, RUN, 1).to_bytes() == first.to_bytes()
    finally:
        again.store.close()
