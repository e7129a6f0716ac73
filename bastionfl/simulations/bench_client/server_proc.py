"""The simulated server side of the client benchmark, in a process of its own (its work never counts as the
client's): the Home Authority and FL server of the admission handshake, and the protocol engine's server with the
n-1 other members of the key epoch (their key setup, signed uploads, transcript signatures and — when asked — their
shares and the fusion that checks the round decodes to the true sum).

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
        self.sim_sum = np.zeros(self.length)

    def setup(self) -> None:
        """Enrol the client at a fresh Home Authority; open the key epoch with the other members."""
        from bastionfl.auth import FileCredentialStore, HomeAuthority

        work = Path(self.opts["workdir"])
        self.ha = HomeAuthority.open(work / "ha.db", os.urandom(32))
        cred_path = work / "credential.json"
        FileCredentialStore(cred_path).save(self.ha.enroll("bench-client", [SERVER_ID]))
        if self.he != "none":
            from . import he_adapter as he

            self.params = he.params_of(self.he)
            t0 = time.perf_counter()
            self.fed = he.SimulatedFederation(self.params, self.n, self.opts["session"])
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
        """The epoch's key setup K1-K3 with the client and the simulated members (the server's and the simulated
        members' work is not the client's: it waits meanwhile)."""
        ch.send_json("key.info", {"members": self.n})
        ch.send("key.opening", self.fed.opening)
        reply = bytes(ch.recv("key.reply")[1])
        t0 = time.perf_counter()
        proposal = self.fed.key_proposal(reply)
        self.summary["key_proposal_s"] = time.perf_counter() - t0
        ch.send("key.proposal", proposal)
        response = bytes(ch.recv("key.response")[1])
        t0 = time.perf_counter()
        confirmation = self.fed.key_confirmation(response)
        self.summary["key_confirmation_s"] = time.perf_counter() - t0
        ch.send("key.confirm", confirmation)
        t0 = time.perf_counter()
        self.sim_sum = self.fed.simulated_uploads(1, self.rng, self.length, 1.0 / self.n)
        self.summary["simulated_encrypt_s"] = time.perf_counter() - t0

    def train(self, ch: Channel) -> None:
        """Send the round's configuration and the global model (float32)."""
        ch.send_json("train.config", {"weight_norm": float(self.opts["examples"]) * self.n, "participants": self.n})
        w0 = (self.rng.standard_normal(self.length) * 0.05).astype(np.float32)
        ch.send("train.global", w0.tobytes())

    def receive_update(self, ch: Channel) -> None:
        """Add the client's upload to the aggregate (plaintext: check its size)."""
        kind, blob = ch.recv()
        if kind != "update":
            raise ValueError(f"expected the client's update, got {kind!r}")
        if self.he == "none":
            if len(blob) != 4 * self.length:
                raise ValueError("plaintext update of the wrong size")
            return
        t0 = time.perf_counter()
        self.member = self.fed.add_upload(blob)
        del blob
        self.summary["add_client_update_s"] = time.perf_counter() - t0

    def decrypt(self, ch: Channel) -> None:
        """D1 and D2 with the client; take its share; decode the round and check the sum when asked."""
        t0 = time.perf_counter()
        proposal = self.fed.proposal_for(self.member)
        self.summary["proposal_build_s"] = time.perf_counter() - t0
        self.summary["proposal_bytes"] = len(proposal)
        ch.send("decrypt.proposal", proposal)
        del proposal
        signature = bytes(ch.recv("decrypt.sign")[1])
        t0 = time.perf_counter()
        confirmation = self.fed.confirmation(signature)
        self.summary["confirmation_s"] = time.perf_counter() - t0
        self.summary["confirmation_bytes"] = len(confirmation)
        ch.send("decrypt.confirm", confirmation)
        del confirmation
        self.fed.add_share(ch.recv("decrypt.share")[1])
        self.summary["client_share_valid"] = True
        if not self.opts.get("verify"):
            self.summary["round_check"] = "skipped (--no-verify or a large federation)"
            return
        t0 = time.perf_counter()
        self.fed.simulated_shares()
        self.summary["simulated_shares_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        total = self.fed.result()
        self.summary["fuse_s"] = time.perf_counter() - t0
        expected = self.sim_sum + np.load(self.opts["update_file"])
        self.summary["round_check"] = {
            "max_abs_error": float(np.max(np.abs(total - expected))),
            "expected_max_error": self.params.expected_max_error(
                self.n, 1.0, -(-self.length // self.params.floats_per_ciphertext)),
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
    from .scratch import remove_scratch, seal_scratch_dir

    server.summary["peak_rss_mb"] = _peak_mb()
    server.summary["scratch_dir"] = seal_scratch_dir()
    remove_scratch(server.summary["scratch_dir"])
    _say({"event": "summary", **server.summary})
    os._exit(0)


def _peak_mb() -> float:
    from bastionfl.client.memory_guard import process_memory_mb

    return process_memory_mb()["peak"]


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
