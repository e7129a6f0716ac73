"""``bastionfl deploy local`` as an operator runs it: the whole topology (one CA, HA with TLS, per-node credentials,
TLS SuperLink, SuperNodes) from one command, a 2-round federation with admission and xMK-CKKS, and an unenrolled
SuperNode shut out; every process it printed is gone afterwards, also after Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastionfl.deploy.local import DeployError, LocalDeployment, parse_settings

REPO = Path(__file__).resolve().parents[2]


def _cli(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "FLWR_TELEMETRY_ENABLED": "0"}
    return subprocess.Popen([sys.executable, "-m", "bastionfl.cli.main", "deploy", "local", "--workdir",
                             str(tmp_path / "deploy"), "--app", str(REPO), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _pids(text: str) -> list[int]:
    return [int(p) for p in re.findall(r"pid (\d+)", text)]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_settings_are_typed_and_bad_keys_are_one_line_errors(tmp_path: Path) -> None:
    assert parse_settings(["num-server-rounds=3", "client_defense=abl", "fraction-train=0.5", "verbose=true"]) == {
        "num-server-rounds": 3, "client-defense": "abl", "fraction-train": 0.5, "verbose": True}
    with pytest.raises(DeployError, match="key=value"):
        parse_settings(["rounds"])
    dep = LocalDeployment(tmp_path, 2, {"no-such-key": 1})
    dep.paths = {"token": tmp_path / "t", "ca": tmp_path / "ca"}
    with pytest.raises(DeployError, match="no-such-key|no_such_key"):
        dep.run_config()


@pytest.mark.deployment
def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "--nodes", "2")
    lines: list[str] = []
    deadline = time.monotonic() + 240
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "running the federation" in line or time.monotonic() > deadline:
            break
    pids = _pids("".join(lines))
    assert len(pids) == 4, "".join(lines)  # HA, SuperLink, 2 SuperNodes
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out[-2000:]
    assert all(_gone(p) for p in pids)


@pytest.mark.deployment
@pytest.mark.slow
def test_two_admitted_secure_rounds_with_an_outsider_shut_out(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "--nodes", "3", "--outsiders", "1", "--set", "num-server-rounds=2")
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out[-4000:]
    assert all(_gone(p) for p in _pids(out))
    rounds = json.loads((tmp_path / "deploy" / "out" / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert (r["auth_admitted"], r["auth_rejected"], r["clients"]) == (3, 1, 3)
        assert {"admission", "key_setup", "decrypt", "fuse"} <= set(r["stages"])
    assert rounds[-1]["accuracy"] > 0.3
    assert "round 2: accuracy" in out and "the federation completed" in out


@pytest.mark.deployment
@pytest.mark.slow
def test_supernode_authentication_on_top_of_admission(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "--nodes", "2", "--supernode-auth", "--set", "num-server-rounds=1")
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out[-4000:]
    assert "SuperNode authentication is disabled" not in (tmp_path / "deploy" / "superlink.log").read_text()
    rounds = json.loads((tmp_path / "deploy" / "out" / "metrics.json").read_text())["rounds"]
    assert rounds[0]["auth_admitted"] == 2
