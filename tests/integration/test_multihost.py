"""Multi-host deployment on one machine: the SuperLink (with the Home Authority beside it) and each SuperNode in
its own network namespace, joined by veth pairs with addresses of the test's own hosts (10.213.<i>.0/24), so every
message really crosses an interface under TLS. A node's link is cut in the middle of round 1
(``ip link set ... down``); the federation survives it as a dropout and completes both rounds.

Needs root and ``ip netns``; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bastionfl.deploy.loopback import LoopbackFederation
from bastionfl.deploy.prepare import SERVER_ID, prepare_deployment

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.deployment, pytest.mark.slow]
NODES = 3


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _netns_unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "the 'ip' tool (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"bflprobe{os.getpid() % 100000}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create a network namespace here: {exc}"
    return None


@pytest.fixture
def hosts():  # noqa: ANN201
    """Namespaces ``<tag>-sl`` and ``<tag>-n<i>``, veth ``v<tag>s<i>`` (SuperLink side) to ``v<tag>n<i>``."""
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    tag = f"b{os.getpid() % 100000}"
    sl = f"{tag}-sl"
    made: list[str] = []
    try:
        _ip("netns", "add", sl)
        made.append(sl)
        _ip("-n", sl, "link", "set", "lo", "up")
        for i in range(NODES):
            ns = f"{tag}-n{i}"
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "add", f"v{tag}s{i}", "type", "veth", "peer", "name", f"v{tag}n{i}")
            _ip("link", "set", f"v{tag}s{i}", "netns", sl)
            _ip("link", "set", f"v{tag}n{i}", "netns", ns)
            _ip("-n", sl, "addr", "add", f"10.213.{i}.1/24", "dev", f"v{tag}s{i}")
            _ip("-n", ns, "addr", "add", f"10.213.{i}.2/24", "dev", f"v{tag}n{i}")
            _ip("-n", sl, "link", "set", f"v{tag}s{i}", "up")
            _ip("-n", ns, "link", "set", f"v{tag}n{i}", "up")
        yield tag
    finally:
        for ns in made:  # deleting a namespace deletes its end of each veth pair, and so the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _cut_when_training(fed: LoopbackFederation, tag: str, node: int, done: threading.Event) -> None:
    """Cut node ``node``'s link as soon as it has received its first train message."""
    log = fed.log_of(f"supernode-{node}")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and not done.is_set():
        if log.exists() and "Receiving: train" in log.read_text(errors="replace"):
            _ip("-n", f"{tag}-sl", "link", "set", f"v{tag}s{node}", "down")
            return
        time.sleep(0.2)


def test_a_link_cut_mid_round_is_survived_as_a_dropout(hosts: str, tmp_path: Path) -> None:
    tag = hosts
    sl_ips = ["127.0.0.1"] + [f"10.213.{i}.1" for i in range(NODES)]
    prepared = prepare_deployment(tmp_path / "files", NODES, superlink_names=(["superlink"], sl_ips),
                                  ha_names=(["localhost"], ["127.0.0.1"]))
    in_sl = ["ip", "netns", "exec", f"{tag}-sl"]
    ha_port = 18443
    ha = prepared.ha
    ha_cmd = [str(Path(os.sys.executable)), "-m", "bastionfl.cli.main", "ha", "serve", "--db", str(ha("db")),
              "--kek-file", str(ha("kek")), "--cert", str(ha("cert")), "--key", str(ha("key")), "--port", str(ha_port),
              "--server", f"{SERVER_ID}={ha('token')}", "--log-level", "warning"]
    prefix = {"ha": in_sl, "superlink": in_sl, "flwr": in_sl}
    prefix.update({f"supernode-{i}": ["ip", "netns", "exec", f"{tag}-n{i}"] for i in range(NODES)})
    fed = LoopbackFederation(tmp_path, NODES, certs={k: prepared.superlink(k) for k in ("ca", "cert", "key")},
                             node_configs=[{"auth-cred": str(prepared.credential(i))} for i in range(NODES)],
                             services=[("ha", ha_cmd, ha_port)], prefix=prefix, superlink_host="0.0.0.0")
    fed.node_addresses = [f"10.213.{i}.1:{fed.port}" for i in range(NODES)]
    out = tmp_path / "out"
    run_config = (f'num-server-rounds=2 num-clients={NODES} auth="pseudonym" auth-ha-url="https://127.0.0.1:{ha_port}" '
                  f'auth-ha-token-file="{prepared.server_token}" auth-ha-ca="{prepared.ca}" auth-timeout-s=240.0 '
                  f'stage-timeout-s=90.0 out-dir="{out}"')
    done = threading.Event()
    with fed:
        cutter = threading.Thread(target=_cut_when_training, args=(fed, tag, 1, done), daemon=True)
        cutter.start()
        try:
            proc = fed.run_app(REPO, run_config, timeout=1500)
        finally:
            done.set()
            cutter.join(timeout=5)
    (tmp_path / "flwr-run.log").write_text(proc.stdout + proc.stderr)
    assert all(p.poll() is not None for p in fed.procs), "a process outlived the test"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "metrics.json").read_text())
    assert data["status"] == "completed", proc.stdout[-3000:]
    first, second = data["rounds"]
    assert first["auth_admitted"] == NODES
    assert any("train" in e and "1 node(s)" in e for e in first["events"]), first.get("events")
    assert second["auth_admitted"] == NODES - 1  # the cut-off node is not admitted again while its link is down
    assert second["accuracy"] > 0.3
