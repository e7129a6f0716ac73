"""Every call the client benchmark makes into ``bastionfl.crypto``, in one place: the protocol engine's public API
(``ServerEpoch`` / ``ClientEpoch`` / ``ServerRound``), driven by bytes as the Flower layer drives it.

The client's steps are those of ``client/secure.py`` under the default threat model (``malicious``): key setup K1
(open, reply), K2 (roster check, signed key sketch), K3 (confirmation: the aggregated key checked); the upload with
``keep_own_c1=False`` (the own c1 comes back with the round's proposal); the decrypt stage D1 (proposal: check U and
the commitments, sign the transcript with a sketch of the own c1) and D2 (confirmation: every member's signature,
the sketches sum to C1's, then the smudged share). Between messages the client's state goes through
``export_local``/``import_local``, as a ClientApp that runs each message in a fresh process keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from bastionfl import crypto as xc

__all__ = ["HE_PROFILES", "THREAT", "params_of", "client_policy", "ClientSide", "SimulatedFederation",
           "wire_sizes", "round_sizes", "WireSizes"]

HE_PROFILES = ("lean", "precise", "lean-n8192")
THREAT = xc.DEFAULT_THREAT_MODEL


def params_of(name: str) -> xc.Params:
    """The named xMK-CKKS parameter set; ``lean-n8192`` is ``lean`` at ring degree 8192 (a candidate small-device
    profile, built here with ``custom_params``: log2 QP = 120 of the 218 bits N = 8192 allows at 128-bit security;
    like ``lean``, a fixed 2^20 flood below the statistical standard)."""
    if name == "lean-n8192":
        return xc.custom_params(8192, (60,), 60, 50, 20, name="lean-n8192", below_standard=True)
    return xc.get_profile(name)


def client_policy(members: int) -> xc.ClientPolicy:
    """The client's policy of the benchmark: the default threat model, every member must upload."""
    low = max(2, min(3, members))
    return xc.ClientPolicy(THREAT, min_members=low, min_uploads=low)


class ClientSide:
    """One client's steps, each taking and returning wire bytes; ``persist`` round-trips the state through
    ``export_local``/``import_local`` after every step, as the Flower client does between messages."""

    def __init__(self, params: xc.Params, members: int, persist: bool = True) -> None:
        self.params, self.policy, self.persist = params, client_policy(members), persist
        self.epoch: Any = None

    def _keep(self) -> None:
        if self.persist:
            self.epoch = xc.ClientEpoch.import_local(self.params, self.epoch.export_local())

    def open(self, opening: bytes) -> bytes:
        """K1: the key share and the epoch signing key; the key setup reply."""
        self.epoch, reply = xc.ClientEpoch.open(self.params, bytes(opening), self.policy)
        self._keep()
        return reply

    def key_proposal(self, proposal: bytes) -> bytes:
        """K2: check the roster, sign a sketch of the own public share against the aggregated key."""
        response = self.epoch.on_key_proposal(bytes(proposal), None)
        if response is None:
            raise xc.ProtocolStateError("the key proposal needs an answer under the malicious threat model")
        self._keep()
        return response

    def key_confirmation(self, confirmation: bytes) -> None:
        """K3: every member's signed sketch sums to the aggregated key's; the epoch is ready."""
        self.epoch.on_key_confirmation(bytes(confirmation))
        self._keep()

    @property
    def index(self) -> int:
        """This client's position in the epoch's roster."""
        return int(self.epoch.index)

    def upload(self, round_number: int, update: np.ndarray, weight: float) -> bytes:
        """U1: the update (already weighted) encrypted with its signed commitment; the own c1 is not kept."""
        blob = self.epoch.upload(round_number, np.asarray(update), weight, keep_own_c1=False)
        self._keep()
        return blob

    def sign(self, proposal: bytes) -> bytes:
        """D1: check U and the commitments, sign the transcript with a sketch of the own c1 (sent back here)."""
        blob = self.epoch.on_round_proposal(bytes(proposal))
        self._keep()
        return blob

    def share(self, confirmation: bytes) -> bytes:
        """D2: every member signed the same transcript and the sketches sum to C1's: the smudged share."""
        blob = self.epoch.on_round_confirmation(bytes(confirmation))
        self._keep()
        return blob


class SimulatedFederation:
    """The server and the other members of the benchmarked client's epoch (public material and simulated clients'
    secrets; never the benchmarked client's). Methods follow the protocol's steps."""

    def __init__(self, params: xc.Params, members: int, session: str, persist: bool = False) -> None:
        self.params, self.members = params, members
        self.server, self.opening = xc.ServerEpoch.open(params, THREAT, session, 0)
        self.sims = [ClientSide(params, members, persist=persist) for _ in range(members - 1)]
        self.round: Any = None
        self._sim_replies = [c.open(self.opening) for c in self.sims]

    def key_proposal(self, client_reply: bytes) -> bytes:
        """K1 replies in (the benchmarked client's and the simulated ones'); K2: the roster and the key."""
        self.server.add_key_reply(bytes(client_reply))
        for r in self._sim_replies:
            self.server.add_key_reply(r)
        self.proposal_bytes = self.server.proposal()
        return self.proposal_bytes

    def key_confirmation(self, client_response: bytes) -> bytes:
        """K2 responses in; K3: every member's signed sketch (the simulated clients finish their key setup)."""
        self.server.add_key_response(bytes(client_response))
        for c in self.sims:
            self.server.add_key_response(c.key_proposal(self.proposal_bytes))
        conf = self.server.confirmation()
        for c in self.sims:
            c.key_confirmation(conf)
        return conf

    def simulated_uploads(self, round_number: int, rng: np.random.Generator, length: int,
                          scale: float) -> np.ndarray:
        """The other members' uploads of the round (added to the sum); returns the sum of their updates."""
        self.round = self.server.new_round(round_number)
        total = np.zeros(length)
        for c in self.sims:
            x = rng.uniform(-0.01, 0.01, length) * scale
            self.round.add_upload(c.upload(round_number, x, 1.0))
            total += x
        return total

    def add_upload(self, blob: bytes) -> int:
        """One member's upload (checked against its signed commitment, added to the sum)."""
        return int(self.round.add_upload(bytes(blob)))

    def proposal_for(self, member: int) -> bytes:
        """D1: the round's proposal with ``member``'s own c1."""
        return self.round.proposal(for_member=member)

    def confirmation(self, client_signature: bytes) -> bytes:
        """D1 replies in (the simulated members sign their own proposals); D2: every signature and C1."""
        self.round.add_signature(bytes(client_signature))
        for c in self.sims:
            self.round.add_signature(c.sign(self.proposal_for(c.index)))
        self.confirmation_bytes = self.round.confirmation()
        return self.confirmation_bytes

    def add_share(self, blob: bytes) -> int:
        """One member's decryption share (checked for round, transcript and size)."""
        return int(self.round.add_share(bytes(blob)))

    def simulated_shares(self) -> None:
        """The other members' shares of the round."""
        for c in self.sims:
            self.round.add_share(c.share(self.confirmation_bytes))

    def result(self) -> np.ndarray:
        """The decoded, range-checked sum of the round's updates (weights 1)."""
        return self.round.result()


@dataclass(frozen=True)
class WireSizes:
    """Exact wire sizes of one round under the malicious threat model, for one update length and federation size."""

    ciphertexts: int
    update_bytes: int  # U1: the upload with its signed commitment
    proposal_bytes: int  # D1: the proposal with the member's own c1
    confirmation_bytes: int  # D2: every member's signature and sketch, and C1
    share_bytes: int  # D2 reply

    @property
    def decrypt_down_bytes(self) -> int:
        """What a client downloads in the decrypt stage (D1 + D2)."""
        return self.proposal_bytes + self.confirmation_bytes


def round_sizes(name: str, length: int, members: int) -> tuple[int, int, int, int]:
    """Sizes of upload, proposal, confirmation and share in a real round of ``members`` at ``length`` floats."""
    params = params_of(name)
    fed = SimulatedFederation(params, members, f"bench-sizes-{members}", persist=False)
    me = ClientSide(params, members, persist=False)
    me.key_confirmation(fed.key_confirmation(me.key_proposal(fed.key_proposal(me.open(fed.opening)))))
    fed.simulated_uploads(0, np.random.default_rng(0), length, 1.0)
    up = me.upload(0, np.zeros(length), 1.0)
    fed.add_upload(up)
    prop = fed.proposal_for(me.index)
    conf = fed.confirmation(me.sign(prop))
    return len(up), len(prop), len(conf), len(me.share(conf))


@lru_cache(maxsize=16)
def _coefficients(name: str) -> tuple[tuple[int, int], tuple[int, int, int], tuple[int, int, int], tuple[int, int]]:
    """Linear models of the message sizes in (ciphertexts, members), from three small real rounds."""
    per = params_of(name).floats_per_ciphertext
    a = round_sizes(name, per, 3)  # 1 ciphertext, 3 members
    b = round_sizes(name, 2 * per, 3)  # 2 ciphertexts
    c = round_sizes(name, per, 4)  # 4 members
    out = []
    for i in range(4):
        dk, dn = b[i] - a[i], c[i] - a[i]
        out.append((a[i] - dk - 3 * dn, dk, dn))
    up, prop, conf, share = out
    return (up[0], up[1]), prop, conf, (share[0], share[1])  # type: ignore[return-value]


def wire_sizes(name: str, length: int, members: int = 3) -> WireSizes:
    """Message sizes for an update of ``length`` floats in a federation of ``members`` (exact: linear in both)."""
    k = max(1, -(-length // params_of(name).floats_per_ciphertext))
    up, prop, conf, share = _coefficients(name)
    return WireSizes(k, up[0] + up[1] * k, prop[0] + prop[1] * k + prop[2] * members,
                     conf[0] + conf[1] * k + conf[2] * members, share[0] + share[1] * k)
