"""``bastionfl bench server``: the server's aggregation and fusion for a growing federation, in a process of its own.

A producer process plays the n clients (key shares; encrypted updates of ``--params`` floats, the first 16 fresh and
the rest sums of four of them — valid, distinct, cheap to make; decryption shares) and streams their bytes to the server process, which measures per stage its CPU and wall seconds and its peak RSS:
``key_aggregation`` (parse n public shares, aggregate), ``aggregation`` (parse and add n updates), ``request``
(today's decryption request: the aggregate C1 and every participant's c1 list), ``fusion`` (parse n shares, fuse).

Two server designs, measured side by side:
- ``today``: the crypto API as it is — the aggregator keeps every participant's c1 list for the request, ``fuse``
  takes all shares at once: memory O(n x update).
- ``streaming`` (PROTOTYPE, see ``he_adapter``): public shares and decryption shares added as they arrive, c1 lists
  reduced to their digests (what the malicious-server protocol's request allows): memory O(update) + O(n) digests.
SEAL keeps freed memory in its own pool, so a stage's peak RSS also carries what earlier stages left there.
The decryption shares are stand-ins (one real share's plaintexts under each participant's name): the server's work
on them is the same, the decoded numbers are not checked here (``bench client`` checks a round end to end).
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

__all__ = ["run_server_growth", "predicted_today_mb"]

_SESSION = "bench-server"


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


class _Meter:
    """CPU and wall seconds, and the peak RSS, of one server stage."""

    def __init__(self, out: dict[str, Any], name: str) -> None:
        self.out, self.name = out, name

    def __enter__(self) -> "_Meter":
        from bastionfl.client.memory_guard import process_memory_mb

        _reset_peak()
        self.rss0 = process_memory_mb()["rss"]
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        from bastionfl.client.memory_guard import process_memory_mb

        mem = process_memory_mb()
        self.out[self.name] = {"cpu_s": time.process_time() - self.c0, "wall_s": time.perf_counter() - self.t0,
                               "peak_rss_mb": mem["peak"], "rss_after_mb": mem["rss"], "rss_before_mb": self.rss0}


def _server(opts: dict[str, Any]) -> dict[str, Any]:
    from . import he_adapter as he

    ch = Channel(socket.socket(fileno=int(opts["sock_fd"])))
    params = he.params_of(opts["he"])
    n, streaming = int(opts["clients"]), opts["mode"] == "streaming"
    stages: dict[str, Any] = {}
    with _Meter(stages, "key_aggregation"):
        if streaming:
            keys = he.StreamingKeyAggregation(params, _SESSION, 0)
            for _ in range(n):
                keys.add(ch.recv("pub")[1])
            apk = keys.result()
            apk_bytes = apk.to_bytes()
        else:
            shares = [bytes(ch.recv("pub")[1]) for _ in range(n)]
            apk, apk_bytes = he.aggregate_key(params, _SESSION, 0, shares)
            del shares
    ch.send("apk", apk_bytes)
    agg = he.Aggregation(params, apk, keep_c1_lists=not streaming)
    with _Meter(stages, "aggregation"):
        for _ in range(n):
            agg.add(he.parse_update(params, ch.recv("update")[1]))
    request_bytes = 0
    with _Meter(stages, "request"):
        request = agg.finish(1)
        request_bytes = len(request) if request is not None else 0
        del request
    ch.send_json("transcript", {"epoch": apk.epoch_id.hex(), "transcript": agg.transcript.hex()})
    with _Meter(stages, "fusion"):
        if streaming:
            fuser = he.StreamingFuse(agg)
            for _ in range(n):
                fuser.add(he.parse_share(params, ch.recv("share")[1]))
            total = fuser.result()
        else:
            parsed = [he.parse_share(params, ch.recv("share")[1]) for _ in range(n)]
            total = he.fuse_sum(agg, parsed)
            del parsed
    return {"stages": stages, "request_bytes": request_bytes, "decoded_length": int(total.size)}


def _producer(opts: dict[str, Any]) -> None:
    from . import he_adapter as he

    ch = Channel(socket.socket(fileno=int(opts["sock_fd"])))
    params = he.params_of(opts["he"])
    n, length = int(opts["clients"]), int(opts["length"])
    digests = []
    for _ in range(n):
        key, public = he.new_key_share(params, _SESSION, 0)
        digests.append(key.public_share().digest)
        ch.send("pub", public)
        del key
    apk = he.accept_key_only(params, ch.recv("apk")[1])
    factory = he.UpdateFactory(apk, length, pool=min(n, 16))
    for _ in range(n):
        ch.send("update", factory.next_bytes())
    info = ch.recv_json("transcript")
    template = he.template_share(params, length)
    for d in digests:
        ch.send("share", he.clone_share(template, bytes.fromhex(info["epoch"]), bytes.fromhex(info["transcript"]),
                                        d, 1))


def predicted_today_mb(he_profile: str, length: int, clients: int) -> float:
    """Server memory today's design needs at fusion: c1 lists + request bytes + all shares (from exact sizes)."""
    from .he_adapter import wire_sizes

    s = wire_sizes(he_profile, length)
    return (clients * s.c1_list_bytes + s.request_bytes(clients) + clients * s.share_bytes) / 2**20


def _one(he_profile: str, length: int, clients: int, mode: str, timeout_s: float) -> dict[str, Any]:
    from .shard import package_env

    a, b = socket.socketpair()
    base = {"he": he_profile, "clients": clients, "length": length, "mode": mode}
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
    clients: list[int], length: int = 1_000_000, he_profile: str = "lean", modes: tuple[str, ...] = ("today",
    "streaming"), budget_mb: float = 6144, timeout_s: float = 3600, progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure each (mode, n); a ``today`` run predicted above ``budget_mb`` is skipped with its prediction."""
    rows = []
    for mode in modes:
        for n in clients:
            row: dict[str, Any] = {"mode": mode, "clients": n}
            if mode == "today":
                row["predicted_peak_mb"] = predicted_today_mb(he_profile, length, n)
            if mode == "today" and row["predicted_peak_mb"] > budget_mb:
                row["skipped"] = (f"predicted {row['predicted_peak_mb']:,.0f} MB of server memory, above the "
                                  f"{budget_mb:,.0f} MB budget of this run")
                progress(f"{mode} n={n}: skipped ({row['skipped']})")
            else:
                progress(f"{mode} n={n}: running")
                start = time.perf_counter()
                row.update(_one(he_profile, length, n, mode, timeout_s))
                row["harness_wall_s"] = time.perf_counter() - start
            rows.append(row)
    return {"benchmark": "bastionfl bench server", "params": length, "he": he_profile, "rows": rows,
            "machine": {"cpus": os.cpu_count(), "loadavg": list(os.getloadavg())}}


if __name__ == "__main__":
    role, options = sys.argv[1], json.loads(sys.argv[2])
    if role == "server":
        print(json.dumps(_server(options)), flush=True)
    else:
        _producer(options)
    os._exit(0)
