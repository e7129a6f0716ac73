"""The HA service played against as an attacker over real HTTPS: wrong content types, oversized and never-ending
bodies, deeply nested JSON, a client that holds a connection through SIGTERM, handle-table growth, and a stolen
credential file used next to its owner (clone detection in the HA log and on /metrics)."""

from __future__ import annotations

import io
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from auth_helpers import GENEROUS, SERVER, Clock, ctx_for, handshake, make_tls_cert

from bastionfl.auth import AuthClient, AuthServer, FileCredentialStore, HomeAuthority, HttpRelay
from bastionfl.deploy.ha_service import create_app, hash_token, start_in_thread

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(tmp_path):
    """A served HA on a settable clock; yields ``(ha, url, cert, token, clock, log_buffer)``."""
    clock = Clock(time.time())
    ha = HomeAuthority.open(tmp_path / "ha.db", os.urandom(32), limits=GENEROUS, clock=clock)
    cert, key = make_tls_cert(tmp_path)
    token = os.urandom(16).hex()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logging.getLogger("bastionfl").addHandler(handler)
    server, thread, port = start_in_thread(create_app(ha, {hash_token(token): SERVER}), host="127.0.0.1", port=0,
                                           certfile=cert, keyfile=key)
    try:
        yield ha, f"https://127.0.0.1:{port}", cert, token, clock, buf
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        logging.getLogger("bastionfl").removeHandler(handler)
        ha.store.close()


def _client(url: str, cert: str, token: str, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=cert),
                        headers={"authorization": f"Bearer {token}", **headers})


def _raw(url: str, cert: str) -> ssl.SSLSocket:
    host, port = url.removeprefix("https://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return ssl.create_default_context(cafile=cert).wrap_socket(sock, server_hostname=host)


def _metrics(url: str, cert: str, token: str) -> dict[str, int]:
    with _client(url, cert, token) as c:
        r = c.get("/metrics")
    assert r.status_code == 200
    return {k: int(v) for k, v in (line.split() for line in r.text.splitlines())}


def test_wrong_content_type_is_refused_with_415(served) -> None:
    ha, url, cert, token, _, _ = served
    body = b'{"sid": "00", "res": "00"}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx", ""):
        with _client(url, cert, token, **({"content-type": ctype} if ctype else {})) as c:
            assert c.post("/v1/confirm", content=body).status_code == 415, ctype
    with _client(url, cert, token, **{"content-type": "Application/JSON; charset=utf-8"}) as c:
        assert c.post("/v1/confirm", content=body).status_code == 400  # accepted type, malformed fields


def test_large_bodies_are_cut_off_while_streaming(served) -> None:
    """Attacker: declares or streams a huge body; the service answers 413 before reading it."""
    ha, url, cert, token, _, _ = served
    with _raw(url, cert) as s:  # declared 100 MB, nothing sent: refused from the header alone
        s.sendall(b"POST /v1/challenge HTTP/1.1\r\nHost: ha\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000000\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 413")
    with _raw(url, cert) as s:  # chunked, never-ending: refused after the first bytes past the limit
        s.sendall(b"POST /v1/challenge HTTP/1.1\r\nHost: ha\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 1024
        for _ in range(6):
            s.sendall(b"400\r\n" + chunk + b"\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 413")  # the body never ended, yet the answer came


def test_deeply_nested_json_gets_400_not_500(served) -> None:
    ha, url, cert, token, _, _ = served
    with _client(url, cert, token, **{"content-type": "application/json"}) as c:
        for depth in (5, 100, 1500):
            body = b'{"sid": ' + b"[" * depth + b"]" * depth + b"}"
            assert len(body) <= 4096
            r = c.post("/v1/confirm", content=body)
            assert r.status_code == 400 and "nested" in r.json()["error"], depth
        assert c.get("/healthz").status_code == 200


def test_handle_table_is_pruned(served) -> None:
    ha, url, cert, token, clock, _ = served
    client = AuthClient(_memory(ha), clock=clock)
    relay = HttpRelay(url, token, verify=cert)
    server = AuthServer(SERVER, relay, clock=clock)
    for epoch in range(1, 4):
        assert handshake(client, server, ctx_for(clock, epoch)).server_session is not None
    assert _metrics(url, cert, token)["bastionfl_ha_session_handles"] == 3
    clock.t += ha.store.HANDLE_TTL_S + 60  # a day later, one more admission
    assert handshake(client, server, ctx_for(clock, 9)).server_session is not None
    assert _metrics(url, cert, token)["bastionfl_ha_session_handles"] == 1
    relay.close()


def _memory(ha: HomeAuthority, label: str = "alice"):  # noqa: ANN202
    from bastionfl.auth import MemoryCredentialStore

    return MemoryCredentialStore(ha.enroll(label, [SERVER]))


def test_a_cloned_credential_is_flagged_in_the_log_and_metrics(served, tmp_path) -> None:
    """Attacker: stole a copy of a node's credential file and authenticates with it next to its owner."""
    ha, url, cert, token, clock, buf = served
    FileCredentialStore(tmp_path / "victim.json").save(ha.enroll("node-7", [SERVER]))
    shutil.copy(tmp_path / "victim.json", tmp_path / "thief.json")
    victim = AuthClient(FileCredentialStore(tmp_path / "victim.json"), clock=clock)
    thief = AuthClient(FileCredentialStore(tmp_path / "thief.json"), clock=clock)
    relay = HttpRelay(url, token, verify=cert)
    server = AuthServer(SERVER, relay, clock=clock)
    honest = AuthClient(_memory(ha, "node-8"), clock=clock)
    for epoch in (1, 2, 3):  # an honest node and replays of its msg1 raise nothing
        t = handshake(honest, server, ctx_for(clock, epoch))
        assert t.server_session is not None
        replay = server.begin(ctx_for(clock, epoch))
        replay.challenge(t.msg1)
    assert _metrics(url, cert, token)["bastionfl_ha_clone_alerts_total"] == 0
    assert handshake(thief, server, ctx_for(clock, 4)).server_session is not None  # the thief goes first
    assert handshake(victim, server, ctx_for(clock, 5)).server_session is None  # the owner's next try fails...
    assert _metrics(url, cert, token)["bastionfl_ha_clone_alerts_total"] >= 1  # ...and the HA flags the clone
    assert "CLONE ALERT" in buf.getvalue() and "node-7" in buf.getvalue()
    for epoch in range(6, 10):  # whoever of the two goes on, the alerts continue
        handshake(victim, server, ctx_for(clock, epoch))
        handshake(thief, server, ctx_for(clock, epoch + 10))
    assert _metrics(url, cert, token)["bastionfl_ha_clone_alerts_total"] >= 3
    relay.close()


def test_metrics_need_the_server_token(served) -> None:
    ha, url, cert, token, _, _ = served
    with _client(url, cert, "not-a-token") as c:
        assert c.get("/metrics").status_code == 401


def test_sigterm_stops_ha_serve_while_a_client_holds_a_request_open(tmp_path) -> None:
    """Attacker (or a stuck relay): a request whose body never completes; SIGTERM still ends the service."""
    cert, key = make_tls_cert(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bastionfl.cli.main", "ha", "serve", "--db", str(tmp_path / "h.db"),
                             "--kek-file", str(tmp_path / "kek"), "--cert", cert, "--key", key, "--port", str(port),
                             "--server", f"{SERVER}={tmp_path / 'token'}", "--shutdown-timeout", "1",
                             "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = _raw(url, cert)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "ha serve did not start"
                time.sleep(0.3)
        with conn:
            conn.sendall(b"POST /v1/confirm HTTP/1.1\r\nHost: ha\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"sid\":")
            time.sleep(0.5)
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
            assert time.monotonic() - start < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_full_range_run_ids_and_oversized_integers_are_not_a_500(served) -> None:
    """Flower run ids use all 64 unsigned bits; larger integers from the network are refused with 400."""
    ha, url, cert, token, _, _ = served
    with _client(url, cert, token, **{"content-type": "application/json"}) as c:
        r = c.post("/v1/roster", content=b'{"run_id": 17700096213741818508, "key_epoch": 1}')
        assert r.status_code == 409  # no roster for that epoch yet: a refusal, not a crash
        for body in (b'{"run_id": 1180591620717411303424, "key_epoch": 1}', b'{"run_id": -1, "key_epoch": 1}'):
            assert c.post("/v1/roster", content=body).status_code == 400
