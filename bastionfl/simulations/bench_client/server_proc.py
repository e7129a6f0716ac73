"""The simulated server side of the client benchmark, in a process of its own (its work never counts as the
client's): the Home Authority and FL server of the admission handshake, the n-1 other participants' key shares and
encrypted updates, the aggregate and today's decryption request, and — when asked — the fusion that checks the
round decodes to the true sum.

Run by the harness: ``python -m bastionfl.simulations.bench_client.server_proc '<json options>'``; JSON lines on
stdout (``ready``, then ``summary``).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .channel import Channel, ChannelClosed

SERVER_ID = "bench-server"


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Server:
    """State of the simulated federation for one benchmarked round."""

    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.he = str(opts["he"])
        self.n = int(opts["clients"])
        self.length = int(opts["length"])
        self.rng = np.random.default_rng(int(opts["seed"]))
        self.summary: dict[str, Any] = {"clients": self.n, "he": self.he}
        self.sim_keys: list[Any] = []
        self.sim_digests: list[bytes] = []
        self.sim_sum = np.zeros(self.length)

    def setup(self) -> None:
        """Enrol the client at a fresh Home Authority; make the other participants' key shares."""
        from bastionfl.auth import FileCredentialStore, HomeAuthority

        work = Path(self.opts["workdir"])
        self.ha = HomeAuthority.open(work / "ha.db", os.urandom(32))
        cred_path = work / "credential.json"
        FileCredentialStore(cred_path).save(self.ha.enroll("bench-client", [SERVER_ID]))
        if self.he != "none":
            from . import he_adapter as he

            self.params = he.params_of(self.he)
            t0 = time.perf_counter()
            for _ in range(self.n - 1):
                key, public = he.new_key_share(self.params, self.opts["session"], 0)
                self.sim_keys.append((key, public))
            self.summary["simulated_keygen_s"] = time.perf_counter() - t0
        _say({"event": "ready", "credential": str(cred_path)})

    def admission(self, ch: Channel) -> None:
        """The FL server's side of the handshake, relayed to the in-process Home Authority."""
        from bastionfl.auth import AuthServer, LocalRelay, RoundContext

        ctx = RoundContext(1, 1, 1, int(time.time()) + 600)
        ch.send_json("auth.start", {"run_id": ctx.run_id, "epoch": ctx.epoch, "node_id": ctx.node_id,
                                    "expiry": ctx.expiry, "server_id": SERVER_ID})
        hs = AuthServer(SERVER_ID, LocalRelay(self.ha, SERVER_ID)).begin(ctx)
        ch.send("auth.msg2", hs.challenge(bytes(ch.recv("auth.msg1")[1])))
        ch.send("auth.msg4", hs.confirm(bytes(ch.recv("auth.msg3")[1])))
        session = hs.accept(bytes(ch.recv("auth.ack")[1]))
        ch.send_json("auth.result", {"admitted": session is not None})

    def key_setup(self, ch: Channel) -> None:
        """Aggregate the client's public share with the others'; encrypt the others' updates (not timed as the
        client's: the client waits meanwhile)."""
        from . import he_adapter as he

        ch.send_json("key.seed", {"session": self.opts["session"], "epoch": 0})
        shares = [bytes(ch.recv("key.share")[1])] + [pub for _, pub in self.sim_keys]
        t0 = time.perf_counter()
        self.apk, apk_bytes = he.aggregate_key(self.params, self.opts["session"], 0, shares)
        self.summary["aggregate_key_s"] = time.perf_counter() - t0
        self.agg = he.Aggregation(self.params, self.apk)
        t0 = time.perf_counter()
        for _ in self.sim_keys:
            x = self.rng.uniform(-0.01, 0.01, self.length) / self.n
            ev, _ = he.update_bytes(self.apk, x)
            self.agg.add(ev)
            self.sim_digests.append(ev.c1_digest())
            self.sim_sum += x
            del ev
        self.summary["simulated_encrypt_s"] = time.perf_counter() - t0
        for key, _ in self.sim_keys:
            key.accept(self.apk)
        ch.send("key.apk", apk_bytes)

    def train(self, ch: Channel) -> None:
        """Send the round's configuration and the global model (float32)."""
        ch.send_json("train.config", {"weight_norm": float(self.opts["examples"]) * self.n, "participants": self.n})
        w0 = (self.rng.standard_normal(self.length) * 0.05).astype(np.float32)
        ch.send("train.global", w0.tobytes())

    def receive_update(self, ch: Channel) -> None:
        """Add the client's upload to the aggregate (plaintext: check its size)."""
        kind, blob = ch.recv()
        if kind == "update.chunk":  # the streaming prototype: one ciphertext per frame
            from .he_stream import assemble_update

            chunks = [blob]
            while (frame := ch.recv())[0] == "update.chunk":
                chunks.append(frame[1])
            t0 = time.perf_counter()
            self.agg.add(assemble_update(self.params, chunks))
            self.summary["add_client_update_s"] = time.perf_counter() - t0
            return
        if kind != "update":
            raise ValueError(f"expected the client's update, got {kind!r}")
        if self.he == "none":
            if len(blob) != 4 * self.length:
                raise ValueError("plaintext update of the wrong size")
            return
        from . import he_adapter as he

        t0 = time.perf_counter()
        self.agg.add(he.parse_update(self.params, blob))
        del blob
        self.summary["add_client_update_s"] = time.perf_counter() - t0

    def decrypt(self, ch: Channel) -> None:
        """Send today's request; take the client's share; fuse and check the sum when asked."""
        from . import he_adapter as he

        t0 = time.perf_counter()
        request = self.agg.finish(1)
        assert request is not None
        self.summary["request_build_s"] = time.perf_counter() - t0
        self.summary["request_bytes"] = len(request)
        ch.send("decrypt.request", request)
        del request
        share = he.parse_share(self.params, ch.recv("decrypt.share")[1])
        self.summary["client_share_valid"] = True
        if not self.opts.get("verify"):
            self.summary["round_check"] = "skipped (--no-verify or a large federation)"
            return
        t0 = time.perf_counter()
        shares = [share] + [he.simulated_share(key, self.agg, d)
                            for (key, _), d in zip(self.sim_keys, self.sim_digests)]
        self.summary["simulated_shares_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        total = he.fuse_sum(self.agg, shares)
        self.summary["fuse_s"] = time.perf_counter() - t0
        expected = self.sim_sum + np.load(self.opts["update_file"])
        self.summary["round_check"] = {
            "max_abs_error": float(np.max(np.abs(total - expected))),
            "expected_max_error": self.params.expected_max_error(self.n, 1.0),
        }


def main(opts: dict[str, Any]) -> None:
    """Serve one client round; report a summary even if the client died (its stage is then the harness's result)."""
    server = Server(opts)
    server.setup()
    ch = Channel(socket.socket(fileno=int(opts["sock_fd"])))
    try:
        server.admission(ch)
        if server.he != "none":
            server.key_setup(ch)
        server.train(ch)
        server.receive_update(ch)
        if server.he != "none":
            server.decrypt(ch)
    except (ChannelClosed, OSError) as exc:
        server.summary["client_gone"] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a server-side failure is reported, the harness decides
        server.summary["server_error"] = f"{type(exc).__name__}: {exc}"[:400]
    server.summary["peak_rss_mb"] = _peak_mb()
    _say({"event": "summary", **server.summary})
    os._exit(0)


def _peak_mb() -> float:
    from bastionfl.client.memory_guard import process_memory_mb

    return process_memory_mb()["peak"]


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
