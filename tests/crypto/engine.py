"""Drives the protocol engine through the wire, as the Flower layer will: every message is bytes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bastionfl.crypto import ClientEpoch, ClientPolicy, Params, ServerEpoch, ThreatModel


@dataclass
class Federation:
    params: Params
    threat: ThreatModel
    server: ServerEpoch
    clients: list[ClientEpoch]
    log: dict[str, list[int]] = field(default_factory=dict)  # bytes per client per step (download / upload)

    def note(self, step: str, size: int) -> None:
        self.log.setdefault(step, []).append(size)


def key_epoch(params: Params, threat: ThreatModel | str, n: int, run_id: str = "engine", epoch: int = 0,
              policy: ClientPolicy | None = None, certified: bool = False) -> Federation:
    threat = ThreatModel.parse(threat)
    policy = policy or ClientPolicy(threat, min_members=min(3, n), min_uploads=min(3, n))
    server, opening = ServerEpoch.open(params, threat, run_id, epoch)
    clients, replies = [], []
    for _ in range(n):
        c, reply = ClientEpoch.open(params, opening, policy)
        clients.append(c)
        replies.append(reply)
    for reply in replies:
        server.add_key_reply(reply)
    proposal = server.proposal()
    vks = [c.verification_key for c in clients] if certified else None
    responses = [c.on_key_proposal(proposal, vks) for c in clients]
    if threat is not ThreatModel.HONEST_BUT_CURIOUS:
        for r in responses:
            server.add_key_response(r)
        confirmation = server.confirmation()
        for c in clients:
            c.on_key_confirmation(confirmation)
    assert all(c.epoch == server.epoch for c in clients)
    return Federation(params, threat, server, clients)


def run_round(fed: Federation, round_number: int, xs: list[np.ndarray], weights: list[float] | None = None,
              keep_own_c1: bool = True) -> tuple[np.ndarray, object]:
    """One round, every message through bytes; returns (weighted mean, the ServerRound)."""
    weights = weights or [1.0] * len(xs)
    srv = fed.server.new_round(round_number)
    ups = [c.upload(round_number, w * x, w) for c, x, w in zip(fed.clients, xs, weights)]
    for u in ups:
        fed.note("upload", len(u))
    if fed.threat is ThreatModel.MALICIOUS_COLLUDING:
        for u in ups:
            srv.add_commitment(u)
        lst = srv.commitment_list()
        ups = [c.on_commitment_list(lst) for c in fed.clients]
        for u in ups:
            fed.note("reveal", len(u))
    for u in ups:
        srv.add_upload(u)
    if fed.threat is ThreatModel.HONEST_BUT_CURIOUS:
        prop = srv.proposal()
        for c in fed.clients:
            fed.note("proposal", len(prop))
            srv.add_share(c.on_round_proposal(prop))
    else:
        sigs = []
        for i, c in enumerate(fed.clients):
            if not keep_own_c1:
                c.rounds[round_number].own = None
            prop = srv.proposal(None if keep_own_c1 else c.index)
            fed.note("proposal", len(prop))
            sigs.append(c.on_round_proposal(prop))
        for s in sigs:
            srv.add_signature(s)
        conf = srv.confirmation()
        for c in fed.clients:
            fed.note("confirmation", len(conf))
            srv.add_share(c.on_round_confirmation(conf))
    return srv.weighted_mean(), srv
