"""``bastionfl bench server``: the server's side of one secure round for a growing federation, in a process of its
own, on the protocol engine (``ServerEpoch`` / ``ServerRound``, threat model ``malicious``).

A producer process plays the n members (real ``ClientEpoch`` steps: key setup, signed uploads of ``--params``
floats, transcript signatures, decryption shares) and streams their bytes to the server process, which measures per
stage its CPU seconds, its wall seconds (waiting for the producer and blocking on the socket left out) and its peak
RSS: ``key_setup`` (n key replies, the roster and key, n signed key sketches, the confirmation), ``aggregation``
(parse, check against the signed commitment and add n uploads), ``proposals`` (n proposals, each with its member's
own c1), ``confirmation`` (n transcript signatures, the confirmation with C1), ``fusion`` (n shares, decode with the
range check).

What grows with n on the server: every member's c1 (kept from its upload until the proposals are sent, since a
client keeps no own c1 between messages) and every share until fusion — O(n x update/2) each. The sum itself is
one update. SEAL is not involved on the server (numpy arrays), so RSS is returned to the system between stages.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any, Callable

from .channel import Channel

__all__ = ["run_server_growth", "predicted_server_mb", "STAGES"]

_SESSION = "bench-server"
STAGES = ("key_setup", "aggregation", "proposals", "confirmation", "fusion")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


class _Meter:
    """CPU and wall seconds (less the time spent waiting on the channel), and the peak RSS, of one server stage."""

    def __init__(self, out: dict[str, Any], name: str, ch: Channel) -> None:
        self.out, self.name, self.ch = out, name, ch

    def __enter__(self) -> "_Meter":
        from bastionfl.client.memory_guard import process_memory_mb

        _reset_peak()
        self.rss0 = process_memory_mb()["rss"]
        self.wait0 = self.ch.wait_s + self.ch.send_s
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        from bastionfl.client.memory_guard import process_memory_mb

        mem = process_memory_mb()
        waited = self.ch.wait_s + self.ch.send_s - self.wait0
        self.out[self.name] = {"cpu_s": time.process_time() - self.c0, "wall_s": time.perf_counter() - self.t0 - waited,
                               "peak_rss_mb": mem["peak"], "rss_after_mb": mem["rss"], "rss_before_mb": self.rss0}


def _server(opts: dict[str, Any]) -> dict[str, Any]:
    from bastionfl import crypto as xc

    from . import he_adapter as he

    ch = Channel(socket.socket(fileno=int(opts["sock_fd"])))
    params = he.params_of(opts["he"])
    n = int(opts["clients"])
    stages: dict[str, Any] = {}
    srv, opening = xc.ServerEpoch.open(params, he.THREAT, _SESSION, 0)
    ch.send("opening", opening)
    with _Meter(stages, "key_setup", ch):
        for _ in range(n):
            srv.add_key_reply(bytes(ch.recv("reply")[1]))
        ch.send("proposal", srv.proposal())
        for _ in range(n):
            srv.add_key_response(bytes(ch.recv("response")[1]))
        ch.send("confirm", srv.confirmation())
    rnd = srv.new_round(1)
    with _Meter(stages, "aggregation", ch):
        for _ in range(n):
            rnd.add_upload(bytes(ch.recv("upload")[1]))
    sizes = {}
    with _Meter(stages, "proposals", ch):
        for i in range(n):
            prop = rnd.proposal(for_member=i)
            sizes["proposal_bytes"] = len(prop)
            ch.send("proposal", prop)
            del prop
    with _Meter(stages, "confirmation", ch):
        for _ in range(n):
            rnd.add_signature(bytes(ch.recv("signature")[1]))
        conf = rnd.confirmation()
        sizes["confirmation_bytes"] = len(conf)
        ch.send("confirm", conf)
        del conf
    with _Meter(stages, "fusion", ch):
        for _ in range(n):
            rnd.add_share(bytes(ch.recv("share")[1]))
        total = rnd.result()
    return {"stages": stages, **sizes, "decoded_length": int(total.size)}


def _producer(opts: dict[str, Any]) -> None:
    import numpy as np

    from . import he_adapter as he

    ch = Channel(socket.socket(fileno=int(opts["sock_fd"])))
    params = he.params_of(opts["he"])
    n, length = int(opts["clients"]), int(opts["length"])
    rng = np.random.default_rng(0)
    members = [he.ClientSide(params, n, persist=False) for _ in range(n)]
    opening = bytes(ch.recv("opening")[1])
    for m in members:
        ch.send("reply", m.open(opening))
    proposal = bytes(ch.recv("proposal")[1])
    for m in members:
        ch.send("response", m.key_proposal(proposal))
    confirmation = bytes(ch.recv("confirm")[1])
    for m in members:
        m.key_confirmation(confirmation)
    for m in members:
        ch.send("upload", m.upload(1, rng.uniform(-0.01, 0.01, length) / n, 1.0))
    by_index = {m.index: m for m in members}
    signatures = [by_index[i].sign(bytes(ch.recv("proposal")[1])) for i in range(n)]
    for s in signatures:
        ch.send("signature", s)
    confirmation = bytes(ch.recv("confirm")[1])
    for m in members:
        ch.send("share", m.share(confirmation))


def predicted_server_mb(he_profile: str, length: int, clients: int) -> float:
    """Server memory the round needs at its largest (from exact wire sizes): every member's c1 and the sum, then
    every share and the sum."""
    from .he_adapter import wire_sizes

    s = wire_sizes(he_profile, length, clients)
    return (clients * max(s.update_bytes / 2, s.share_bytes) + 2 * s.update_bytes + s.proposal_bytes) / 2**20


def _one(he_profile: str, length: int, clients: int, timeout_s: float) -> dict[str, Any]:
    from .shard import package_env

    a, b = socket.socketpair()
    base = {"he": he_profile, "clients": clients, "length": length}
    procs = []
    for role, sock in (("server", a), ("producer", b)):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", __name__, role, json.dumps({**base, "sock_fd": sock.fileno()})],
            pass_fds=[sock.fileno()], env=package_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    a.close()
    b.close()
    try:
        out, err = procs[0].communicate(timeout=timeout_s)
        procs[1].wait(timeout=60)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.wait()
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if procs[0].returncode != 0 or not lines:
        return {"error": f"server exit {procs[0].returncode}: {(err.strip().splitlines() or [''])[-1][:300]}"}
    return json.loads(lines[-1])


def run_server_growth(
    clients: list[int], length: int = 1_000_000, he_profile: str = "lean", budget_mb: float = 6144,
    timeout_s: float = 3600, progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure each n; a run predicted above ``budget_mb`` of server memory is skipped with its prediction."""
    rows = []
    for n in clients:
        row: dict[str, Any] = {"mode": "malicious", "clients": n,
                               "predicted_peak_mb": predicted_server_mb(he_profile, length, n)}
        if row["predicted_peak_mb"] > budget_mb:
            row["skipped"] = (f"predicted {row['predicted_peak_mb']:,.0f} MB of server memory, above the "
                              f"{budget_mb:,.0f} MB budget of this run")
            progress(f"n={n}: skipped ({row['skipped']})")
        else:
            progress(f"n={n}: running")
            start = time.perf_counter()
            row.update(_one(he_profile, length, n, timeout_s))
            row["harness_wall_s"] = time.perf_counter() - start
        rows.append(row)
    from .scratch import remove_scratch, seal_scratch_dir

    remove_scratch(seal_scratch_dir())  # the size predictions ran small rounds in this process
    return {"benchmark": "bastionfl bench server", "params": length, "he": he_profile, "threat_model": "malicious",
            "rows": rows, "machine": {"cpus": os.cpu_count(), "loadavg": list(os.getloadavg())}}


if __name__ == "__main__":
    role, options = sys.argv[1], json.loads(sys.argv[2])
    if role == "server":
        print(json.dumps(_server(options)), flush=True)
    else:
        _producer(options)
    from .scratch import remove_scratch, seal_scratch_dir

    remove_scratch(seal_scratch_dir())
    os._exit(0)
