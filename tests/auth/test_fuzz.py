"""Hypothesis fuzzing of every parser and entry point: malformed input never crashes, it fails uniformly."""

from __future__ import annotations

import os
import tempfile

import pytest
from auth_helpers import SERVER, Clock, ctx_for, make_client, make_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastionfl.auth import ClientCredential, CredentialError, HomeAuthority, MalformedInput, RateLimits, RoundContext
from bastionfl.research.kpseudonym import BasicKPseudonymServer, VariableKPseudonymAuthority
from bastionfl.auth.messages import parse_msg1, parse_msg2
from bastionfl.deploy.ha_service import decode_challenge_request, decode_confirm_request

UNLIMITED = RateLimits(server_rate=1e9, server_burst=1e9, fast_rate=1e9, fast_burst=1e9, recovery_rate=1e9,
                       recovery_burst=1e9)
_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class World:
    """One HA, server and client shared by all examples of a run (hypothesis forbids per-example fixtures)."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.dir = tempfile.TemporaryDirectory()
        self.ha = HomeAuthority.open(os.path.join(self.dir.name, "ha.db"), os.urandom(32), limits=UNLIMITED,
                                     clock=self.clock)
        self.server = make_server(self.ha, self.clock)
        self.client = make_client(self.ha, self.clock)
        self.kp = VariableKPseudonymAuthority(4, clock=self.clock)
        self.kp_clients = [self.kp.enroll([SERVER]) for _ in range(4)]
        self.basic = BasicKPseudonymServer(4, 4)


@pytest.fixture(scope="module")
def world():
    w = World()
    yield w
    w.ha.store.close()
    w.dir.cleanup()


def _fuzz_all(world, data: bytes, n: int) -> None:
    # 1. strict parsers: either a value or MalformedInput
    for parser in (parse_msg1, parse_msg2):
        try:
            parser(data)
        except MalformedInput:
            pass
    # 2. HA: any byte string as msg1 -> a well-formed decoy-sized reply
    ctx = ctx_for(world.clock, n)
    reply = world.ha.challenge(SERVER, ctx, data)
    assert (len(reply.sid), len(reply.msg2), len(reply.hxres)) == (16, 80, 16)
    assert not world.ha.confirm(SERVER, data[:16], data[16:48]).ok
    # 3. FL server: any msg1/msg3/ack
    hs = world.server.begin(ctx)
    assert len(hs.challenge(data)) == 80
    assert len(hs.confirm(data[:32])) == 32
    assert hs.accept(data[-32:]) is None
    # 4. client: any msg2 / msg4
    world.client.start(SERVER, ctx)
    assert len(world.client.respond(data)) == 32
    out = world.client.finish(data)
    assert out.session is None and len(out.ack) == 32
    # 5. k-pseudonym profile: the variable-scheme HA and the basic-scheme server
    kp_reply = world.kp.challenge(SERVER, ctx, data)
    assert (len(kp_reply.sid), len(kp_reply.msg2), len(kp_reply.hxres)) == (16, 80, 16)
    assert not world.kp.confirm(SERVER, data[:16], data[16:48]).ok
    assert len(world.basic.handle(data)) == 32
    # 6. credential and HTTP request decoders: a value or one typed error
    try:
        ClientCredential.from_bytes(data)
    except CredentialError:
        pass
    for decoder in (decode_challenge_request, decode_confirm_request):
        try:
            decoder(data)
        except MalformedInput:
            pass


def _run(world, examples: int) -> None:
    counter = {"n": 0}

    @settings(max_examples=examples, **_SETTINGS)
    @given(st.one_of(
        st.binary(max_size=300),
        st.binary(min_size=114, max_size=114).map(lambda b: b"\x01" + b[1:]),
        st.binary(min_size=66, max_size=66).map(lambda b: b"\x03\x00" + b[2:]),
        st.binary(min_size=80, max_size=80),
        st.binary(min_size=32, max_size=32),
    ))
    def check(data: bytes) -> None:
        counter["n"] += 1
        _fuzz_all(world, data, counter["n"])

    check()
    assert counter["n"] >= examples  # every requested case really ran


def test_fuzz_every_parser_default(world):
    _run(world, 300)


@pytest.mark.slow
def test_fuzz_every_parser_long(world):
    _run(world, 10_000)


@given(st.integers(), st.integers(), st.integers(), st.integers())
@settings(max_examples=300, deadline=None)
def test_round_context_rejects_bad_values_with_one_error(run_id, epoch, node_id, expiry):
    try:
        ctx = RoundContext(run_id, epoch, node_id, expiry)
    except MalformedInput:
        assert min(run_id, epoch, node_id, expiry) < 0 or max(run_id, epoch, node_id, expiry) >= 1 << 64
    else:
        assert len(ctx.digest()) == 32


@given(st.dictionaries(st.text(max_size=20), st.one_of(st.text(max_size=40), st.integers(), st.none(),
                                                       st.lists(st.text(max_size=5), max_size=3))))
@settings(max_examples=300, deadline=None)
def test_credential_json_fuzz(doc):
    import json

    try:
        ClientCredential.from_bytes(json.dumps(doc).encode())
    except CredentialError:
        pass
