"""The HA over real HTTPS (uvicorn on 127.0.0.1, ephemeral port, test-made certificate) and the secret-free logs."""

from __future__ import annotations

import io
import logging
import os

import pytest
from auth_helpers import GENEROUS, OTHER, SERVER, Clock, ctx_for, handshake, make_client, make_tls_cert

from bastionfl.auth import AuthError, AuthServer, HomeAuthority, RateLimited, RateLimits
from bastionfl.auth import HttpRelay
from bastionfl.deploy.ha_service import create_app, hash_token, start_in_thread


@pytest.fixture
def service(tmp_path):
    """A served HA; yields ``(ha, url, cert, tokens, log_buffer)`` and always stops the server."""
    clock = Clock()
    import time

    clock.t = time.time()  # the HTTP path uses real expiries
    ha = HomeAuthority.open(tmp_path / "ha.db", os.urandom(32), limits=GENEROUS, clock=time.time)
    cert, key = make_tls_cert(tmp_path)
    tokens = {SERVER: os.urandom(16).hex(), OTHER: os.urandom(16).hex()}
    app = create_app(ha, {hash_token(t): sid for sid, t in tokens.items()})
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    server, thread, port = start_in_thread(app, host="127.0.0.1", port=0, certfile=cert, keyfile=key,
                                           log_level="debug")
    watched = [root] + [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    for lg in watched:  # uvicorn's loggers do not all propagate to the root
        lg.addHandler(handler)
    try:
        yield ha, f"https://127.0.0.1:{port}", cert, tokens, buf
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        for lg in watched:
            lg.removeHandler(handler)
        root.setLevel(old_level)
        ha.store.close()
    assert not thread.is_alive()


def test_handshakes_over_https_and_nothing_secret_in_logs_or_reprs(service):
    import time

    ha, url, cert, tokens, buf = service
    clock = time.time
    relay = HttpRelay(url, tokens[SERVER], verify=cert)
    server = AuthServer(SERVER, relay)
    client = make_client(ha, clock)
    cred = client._store.load()
    secrets = [cred.cid, cred.key, cred.pid]
    reprs = [repr(x) for x in (cred, client, client._store, server, relay, ha, ha.store)]
    for epoch in range(1, 4):
        t = handshake(client, server, ctx_for(clock, epoch))
        assert t.client_session is not None and t.server_session is not None
        assert t.client_session.key == t.server_session.key
        secrets += [t.client_session.key, t.msg1[2:18], t.server_session.handle]
        reprs += [repr(t.client_session), repr(t.server_session)]
    secrets.append(client._store.load().pid)
    # a failing handshake and a decoy also go through the logs
    handshake(client, server, ctx_for(clock, 9), lambda n, d: os.urandom(len(d)) if n == "msg2" else d)
    relay.close()
    text = buf.getvalue() + "\n".join(reprs)
    assert "POST /v1/challenge" in text  # the logs were captured at all
    for s in secrets:
        for form in (s.hex(), s.hex().upper(), repr(s)):
            assert form not in text


def test_wrong_token_and_plain_http_refused(service):
    ha, url, cert, tokens, buf = service
    with pytest.raises(AuthError):
        HttpRelay(url.replace("https", "http"), tokens[SERVER])
    relay = HttpRelay(url, "not-a-token", verify=cert)
    with pytest.raises(AuthError):
        relay.challenge(ctx_for(Clock(), 1), os.urandom(114))
    relay.close()
    untrusted = HttpRelay(url, tokens[SERVER])  # system CAs do not know the test certificate
    with pytest.raises(AuthError):
        untrusted.challenge(ctx_for(Clock(), 1), os.urandom(114))
    untrusted.close()


def test_server_identity_comes_from_the_token(service):
    import time

    ha, url, cert, tokens, buf = service
    client = make_client(ha, time.time)
    # S_B relays a msg1 meant for S_A: the HA binds S_B's identity from its token, so the client rejects it
    relay_b = HttpRelay(url, tokens[OTHER], verify=cert)
    ctx = ctx_for(time.time, 1)
    hs = AuthServer(SERVER, relay_b).begin(ctx)  # it even claims to be S_A locally
    msg3 = client.respond(hs.challenge(client.start(SERVER, ctx)))
    assert client.finish(hs.confirm(msg3)).session is None
    relay_b.close()


def test_malformed_bodies_get_400_not_500(service):
    import httpx

    ha, url, cert, tokens, buf = service
    headers = {"authorization": f"Bearer {tokens[SERVER]}", "content-type": "application/json"}
    import ssl

    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=cert), headers=headers) as c:
        for body in (b"", b"{", b"[]", b'{"msg1": "zz"}', b'{"msg1": "00", "run_id": -1, "epoch": 0, '
                     b'"node_id": 0, "expiry": 0}', b'{"sid": "00", "res": "00"}'):
            for path in ("/v1/challenge", "/v1/confirm"):
                r = c.post(path, content=body)
                assert r.status_code == 400, (path, body[:20], r.status_code)
        r = c.get("/v1/keys")
        assert r.status_code == 200 and r.json() == {str(k): v.hex() for k, v in ha.public_keys().items()}


def test_rate_limit_maps_to_429(tmp_path):
    ha = HomeAuthority.open(tmp_path / "ha.db", os.urandom(32), limits=RateLimits(server_rate=0.01, server_burst=1))
    cert, key = make_tls_cert(tmp_path)
    token = os.urandom(16).hex()
    server, thread, port = start_in_thread(create_app(ha, {hash_token(token): SERVER}), host="127.0.0.1",
                                           port=0, certfile=cert, keyfile=key)
    try:
        relay = HttpRelay(f"https://127.0.0.1:{port}", token, verify=cert)
        relay.challenge(ctx_for(Clock(), 1), os.urandom(114))
        with pytest.raises(RateLimited):
            relay.challenge(ctx_for(Clock(), 1), os.urandom(114))
        relay.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        ha.store.close()


def test_epoch_keys_and_rosters_over_https(service):
    """A roster through the service: endorsed keys in, one signed roster out; another server's token gets nothing."""
    import time

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from bastionfl.auth.roster import SignedRoster, endorse_epoch_key

    ha, url, cert, tokens, buf = service
    relay = HttpRelay(url, tokens[SERVER], verify=cert)
    other = HttpRelay(url, tokens[OTHER], verify=cert)
    server = AuthServer(SERVER, relay)
    keys = []
    for i in range(3):
        client = make_client(ha, time.time, f"c{i}")
        t = handshake(client, server, ctx_for(time.time, 1, node_id=i, run_id=7))
        vk = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        tag = endorse_epoch_key(t.client_session.endorse_key, SERVER, 7, 1, vk)
        assert not other.register_epoch_key(t.server_session.handle, 1, vk, tag)  # not its handle
        assert relay.register_epoch_key(t.server_session.handle, 1, vk, tag)
        keys.append(vk)
    roster = SignedRoster.from_bytes(relay.sign_roster(7, 1))
    assert roster.verify(client._store.load().roster_public_key, server_id=SERVER, run_id=7, key_epoch=1,
                         min_members=3) == frozenset(keys)
    with pytest.raises(AuthError):
        other.sign_roster(7, 1)  # the other server endorsed nobody
    relay.close()
    other.close()
