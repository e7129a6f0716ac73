"""Pseudonym admission in whole simulated federations: same model as without it, revocation, nothing secret logged."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from bastionfl.auth import FileCredentialStore, HomeAuthority, ServerHandshake, Session, load_or_create_kek
from bastionfl.config import ConfigError, RunConfig
from bastionfl.simulations.auth_setup import SIM_LABEL, prepare_simulated_ha
from bastionfl.simulations.simulate import run_simulated


def _cfg(out: Path, **kw: Any) -> RunConfig:
    base: dict[str, Any] = {"num_clients": 3, "rounds": 2, "seed": 3, "out_dir": str(out)}
    base.update(kw)
    return RunConfig.build(**base)


def _credential_secrets(out: Path, n: int) -> list[bytes]:
    values: list[bytes] = []
    for i in range(n):
        cred = FileCredentialStore(out / "auth" / f"cred-{i}.json").load()
        values += [cred.cid, cred.key] + ([cred.pid] if cred.pid else [])
    return values


class _Recorder:
    """Observer that records each client's credential secrets (pseudonyms rotate) after every round."""

    def __init__(self, out: Path, n: int, revoke_after: dict[int, str] | None = None) -> None:
        self.out, self.n, self.revoke_after = out, n, revoke_after or {}
        self.secrets: list[bytes] = []

    def on_start(self, first_round: int, total_rounds: int) -> None:
        # The Simulation Engine starts the ServerApp thread just before it registers the SuperNodes; with the
        # dataset already cached by an earlier run in this process, sampling could run before any node exists.
        time.sleep(1.0)

    def on_round(self, entry: dict[str, Any]) -> None:
        self.secrets += _credential_secrets(self.out, self.n)
        label = self.revoke_after.get(entry["round"])
        if label:  # the HA operator revokes a client between rounds
            ha = HomeAuthority.open(self.out / "auth" / "ha.sqlite", load_or_create_kek(self.out / "auth" / "ha.kek"))
            try:
                assert ha.revoke(label)
            finally:
                ha.store.close()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("plain")
    return run_simulated(_cfg(out), out)


def _scan_run(out: Path, caplog: pytest.LogCaptureFixture, secrets: list[bytes]) -> None:
    """No secret in the captured logs or in any file of the run outside the HA/credential folder ``auth/``."""
    files = [p.read_bytes() for p in out.rglob("*") if p.is_file() and "auth" not in p.relative_to(out).parts]
    assert files, "the run wrote no files"
    logs = (caplog.text + "".join(repr(r.args) for r in caplog.records)).encode()
    for secret in set(secrets):
        for form in (secret, secret.hex().encode(), secret.hex().upper().encode(), repr(secret).encode()):
            assert not any(form in h for h in [logs, *files]), "a secret value appears in the run's logs or files"


@pytest.fixture
def session_values(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every session key and HA handle the FL server accepts during the test."""
    values: list[bytes] = []
    accept = ServerHandshake.accept

    def recording_accept(self: ServerHandshake, ack_msg: bytes) -> Session | None:
        session = accept(self, ack_msg)
        if session is not None:
            values.extend([session.key, session.handle or b""])
        return session

    monkeypatch.setattr(ServerHandshake, "accept", recording_accept)
    return values


def test_admitted_federation_matches_plain_and_logs_no_secret(
    baseline: list[dict], tmp_path: Path, caplog: pytest.LogCaptureFixture, session_values: list[bytes],
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = _cfg(tmp_path, auth="pseudonym")
    prepare_simulated_ha(cfg, tmp_path)  # run_simulated would do it; done first to read the first pseudonyms
    before = _credential_secrets(tmp_path, 3)
    recorder = _Recorder(tmp_path, 3)
    rounds = run_simulated(cfg, tmp_path, observer=recorder)

    assert [r["round"] for r in rounds] == [1, 2]
    for got, plain in zip(rounds, baseline):
        assert got["accuracy"] == pytest.approx(plain["accuracy"], abs=1e-6)
        assert got["clients"] == 3 and got["auth_admitted"] == 3 and got["auth_rejected"] == 0
        assert "admission" in got["stages"] and got["stage_bytes"]["admission"]["up"] > 0
        # the tags cost a few bytes per message on top of the plain run's train traffic
        assert 0 < got["stage_bytes"]["train"]["up"] - plain["stage_bytes"]["train"]["up"] <= 3 * 64
    pids = [c.pid for c in (FileCredentialStore(tmp_path / "auth" / f"cred-{i}.json").load() for i in range(3))]
    assert not set(pids) & set(before), "every client's pseudonym rotated"
    assert len(session_values) == 2 * 3 * 2
    _scan_run(tmp_path, caplog, before + recorder.secrets + [v for v in session_values if v])


def test_revoked_client_is_excluded_from_the_next_round(
    baseline: list[dict], tmp_path: Path, caplog: pytest.LogCaptureFixture, session_values: list[bytes],
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = _cfg(tmp_path, auth="pseudonym")
    prepare_simulated_ha(cfg, tmp_path)
    before = _credential_secrets(tmp_path, 3)
    recorder = _Recorder(tmp_path, 3, revoke_after={1: SIM_LABEL.format(1)})
    rounds = run_simulated(cfg, tmp_path, observer=recorder)
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0]["clients"] == 3 and rounds[0]["accuracy"] == pytest.approx(baseline[0]["accuracy"], abs=1e-6)
    second = rounds[1]
    assert second["clients"] == 2 and second["auth_admitted"] == 2 and second["auth_rejected"] == 1
    assert any("not admitted" in e for e in second["events"])
    # the revoked node exchanged admission messages and nothing else: no model, no later stage
    stages_per_node = [set(b["stages"]) for b in second["client_bytes"].values()]
    assert sorted(map(sorted, stages_per_node)).count(["admission"]) == 1
    assert sum("train" in s for s in stages_per_node) == 2
    assert second["accuracy"] > 0.2
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["status"] == "completed"
    assert any("failed authentication" in r.getMessage() for r in caplog.records)  # the scan sees real log lines
    _scan_run(tmp_path, caplog, before + recorder.secrets + [v for v in session_values if v])


def test_simulated_enrolment_is_private_and_idempotent(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, auth="pseudonym")
    prepare_simulated_ha(cfg, tmp_path)
    auth = tmp_path / "auth"
    files = sorted(p.name for p in auth.iterdir())
    assert files == ["cred-0.json", "cred-1.json", "cred-2.json", "ha.kek", "ha.sqlite"]
    assert auth.stat().st_mode & 0o777 == 0o700
    for name in files:
        assert (auth / name).stat().st_mode & 0o077 == 0, name
    creds = [(auth / f"cred-{i}.json").read_bytes() for i in range(3)]
    assert len(set(creds)) == 3
    prepare_simulated_ha(cfg, tmp_path)  # kept as they are (a resumed run goes on with its pseudonyms)
    assert [(auth / f"cred-{i}.json").read_bytes() for i in range(3)] == creds
    with pytest.raises(ConfigError, match="out_dir"):
        prepare_simulated_ha(RunConfig.build(auth="pseudonym"), tmp_path)
