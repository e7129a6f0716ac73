"""Client credential files: 0600, atomic write-ahead updates, strict parsing, secret-free reprs."""

from __future__ import annotations

import os
import stat

import pytest
from auth_helpers import SERVER, ctx_for, handshake, make_server

from bastionfl.auth import AuthClient, ClientCredential, CredentialError, FileCredentialStore


def test_file_store_round_trip_and_mode(ha, clock, tmp_path):
    path = tmp_path / "c.cred"
    store = FileCredentialStore(path)
    cred = ha.enroll("filey", [SERVER])
    store.save(cred)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = store.load()
    assert (loaded.cid, loaded.key, loaded.pid, loaded.ctr) == (cred.cid, cred.key, cred.pid, 0)
    client = AuthClient(store, clock=clock)
    t = handshake(client, make_server(ha, clock), ctx_for(clock, 1))
    assert t.client_session is not None
    after = store.load()
    assert after.ctr == 1 and after.pid != cred.pid and not after.pid_burned  # write-ahead updates landed
    assert not (tmp_path / "c.cred.tmp").exists()
    for secret in (cred.cid, cred.key, after.pid):
        assert secret.hex() not in repr(after) + repr(store) + repr(client)


def test_file_store_refuses_open_permissions_and_garbage(ha, tmp_path):
    path = tmp_path / "c.cred"
    FileCredentialStore(path).save(ha.enroll("perm", [SERVER]))
    os.chmod(path, 0o644)
    with pytest.raises(CredentialError):
        FileCredentialStore(path).load()
    os.chmod(path, 0o600)
    path.write_bytes(b"not json")
    with pytest.raises(CredentialError):
        FileCredentialStore(path).load()
    with pytest.raises(CredentialError):
        FileCredentialStore(tmp_path / "missing").load()


@pytest.mark.parametrize("field,value", [("cid", "00"), ("key", "zz"), ("kid", 0), ("kid", True), ("ctr", -1),
                                         ("servers", "S"), ("servers", [""]), ("format", "x"), ("pid", 5)])
def test_credential_fields_are_validated(ha, field, value):
    import json

    doc = json.loads(ha.enroll(f"v-{field}-{value}", [SERVER]).to_bytes())
    doc[field] = value
    with pytest.raises(CredentialError):
        ClientCredential.from_bytes(json.dumps(doc).encode())
