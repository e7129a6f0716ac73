"""End-to-end CLI: enroll (0600 credential), serve over HTTPS in a subprocess, handshake, revoke while serving."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastionfl.auth import AuthClient, AuthError, AuthServer, FileCredentialStore, RoundContext
from bastionfl.auth import HttpRelay
from bastionfl.cli.ha import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "auth"))
from auth_helpers import make_tls_cert  # noqa: E402


def _ha(tmp_path, *extra):
    return ["--db", str(tmp_path / "ha.db"), "--kek-file", str(tmp_path / "kek"), *extra]


def test_enroll_writes_0600_credential_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "alice.cred"
    assert main(["enroll", *_ha(tmp_path, "--label", "alice", "--server", "S", "--out", str(out))]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "kek").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ha.db").stat().st_mode) == 0o600
    cred = FileCredentialStore(out).load()
    printed = capsys.readouterr()
    assert cred.cid.hex() not in printed.out + printed.err and cred.key.hex() not in printed.out + printed.err
    assert main(["enroll", *_ha(tmp_path, "--label", "bob", "--server", "S", "--out", str(out))]) == 2
    assert main(["enroll", *_ha(tmp_path, "--label", "alice", "--server", "S", "--out", str(tmp_path / "b"))]) == 1


@pytest.mark.parametrize("argv", [
    [], ["bogus"], ["serve"], ["enroll", "--db", "x"], ["revoke", "--db", "x", "--kek-file", "y"],
    ["serve", "--db", "x", "--kek-file", "y", "--cert", "nope", "--key", "nope"],
])
def test_usage_errors_are_one_line_exit_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err


def test_revoke_unknown_label_and_missing_kek(tmp_path, capsys):
    assert main(["enroll", *_ha(tmp_path, "--label", "a", "--server", "S", "--out", str(tmp_path / "a"))]) == 0
    assert main(["revoke", *_ha(tmp_path, "--label", "nobody")]) == 1
    wrong = ["revoke", "--db", str(tmp_path / "ha.db"), "--kek-file", str(tmp_path / "other"), "--label", "a"]
    assert main(wrong) == 2
    capsys.readouterr()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_handshake_then_revoke_while_serving(tmp_path):
    cert, key = make_tls_cert(tmp_path)
    cred_path = tmp_path / "alice.cred"
    assert main(["enroll", *_ha(tmp_path, "--label", "alice", "--server", "S", "--out", str(cred_path))]) == 0
    port = _free_port()
    token_file = tmp_path / "S.token"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastionfl.cli.ha", "serve", *_ha(tmp_path), "--cert", cert, "--key",
         key, "--port", str(port), "--server", f"S={token_file}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 30
        while not token_file.exists() and time.time() < deadline:
            time.sleep(0.05)
        relay = None
        while time.time() < deadline:
            try:
                relay = HttpRelay(f"https://127.0.0.1:{port}", token_file.read_text().strip(), verify=cert)
                relay.confirm(bytes(16), bytes(32))
                break
            except AuthError:
                relay.close()
                relay = None
                time.sleep(0.1)
        assert relay is not None, "service did not come up"
        client, server = AuthClient(FileCredentialStore(cred_path)), AuthServer("S", relay)

        def run(epoch: int) -> bool:
            ctx = RoundContext(1, epoch, 5, int(time.time()) + 60)
            hs = server.begin(ctx)
            out = client.finish(hs.confirm(client.respond(hs.challenge(client.start("S", ctx)))))
            return out.session is not None and hs.accept(out.ack) is not None

        assert run(1) and run(2)
        assert main(["revoke", *_ha(tmp_path, "--label", "alice")]) == 0
        assert not run(3) and not run(4)
        relay.close()
    finally:
        proc.terminate()
        try:
            output = proc.communicate(timeout=15)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0].decode()
    cred = FileCredentialStore(cred_path).load()
    assert cred.cid.hex() not in output and cred.key.hex() not in output
    assert "Traceback" not in output
