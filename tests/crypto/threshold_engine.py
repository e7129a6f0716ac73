"""Drives a t-of-n epoch and its rounds through the wire (every message bytes), with members that vanish."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from bastionfl.crypto import ClientEpoch, ClientPolicy, IncompleteShareSetError, Params, ServerEpoch, ThreatModel
from bastionfl.crypto.server_round import ServerRound
from bastionfl.crypto.threshold import ThresholdRule
from tests.crypto.engine import Federation


def dealt_epoch(params: Params, threat: ThreatModel | str, n: int, rule: ThresholdRule, run_id: str = "t-of-n",
                epoch: int = 0) -> tuple[ServerEpoch, list[ClientEpoch]]:
    """K1, K2 with the dealings (T1): the server holds every dealt box; no member has combined its share yet."""
    threat = ThreatModel.parse(threat)
    policy = ClientPolicy(threat, min_members=min(3, n), min_uploads=min(3, n), threshold=rule)
    server, opening = ServerEpoch.open(params, threat, run_id, epoch, rule)
    clients, replies = [], []
    for _ in range(n):
        c, reply = ClientEpoch.open(params, opening, policy)
        clients.append(c)
        replies.append(reply)
    for reply in replies:
        server.add_key_reply(reply)
    proposal = server.proposal()
    clients.sort(key=lambda c: c.verification_key)  # roster order: member index i is clients[i]
    responses = [c.on_key_proposal(proposal) for c in clients]
    dealings = [c.deal_shares() for c in clients]
    for r in responses:
        server.add_key_response(r)
    for d in dealings:
        server.add_dealing(d)
    return server, clients


def threshold_epoch(params: Params, threat: ThreatModel | str, n: int, rule: ThresholdRule, run_id: str = "t-of-n",
                    epoch: int = 0) -> Federation:
    """K1, K2 with the dealings (T1), K3 with the dealt shares (T2): every member holds its threshold key share."""
    threat = ThreatModel.parse(threat)
    server, clients = dealt_epoch(params, threat, n, rule, run_id, epoch)
    confirmation = server.confirmation()
    first = server.dealt_shares(0)
    dealt = server.take_dealt_shares()  # as the server glue does: every box released as it is copied out
    assert dealt[0] == first
    for c in clients:
        c.on_key_confirmation(confirmation)
        c.on_dealt_shares(dealt[c.index])
    assert all(c.epoch == server.epoch for c in clients) and [c.index for c in clients] == list(range(n))
    return Federation(params, threat, server, clients)


def signed_round(fed: Federation, round_number: int, xs: list[np.ndarray],
                 uploaders: Collection[int] | None = None, signers: Collection[int] | None = None) -> ServerRound:
    """Uploads (of ``uploaders``), the proposal, the transcript signatures of ``signers``: ready for attempts."""
    uploaders = range(len(fed.clients)) if uploaders is None else uploaders
    signers = range(len(fed.clients)) if signers is None else signers
    srv = fed.server.new_round(round_number)
    ups = {i: fed.clients[i].upload(round_number, xs[i], 1.0) for i in uploaders}
    if fed.threat is ThreatModel.MALICIOUS_COLLUDING:
        for u in ups.values():
            srv.add_commitment(u)
        lst = srv.commitment_list()
        ups = {i: fed.clients[i].on_commitment_list(lst) for i in ups}
    for u in ups.values():
        srv.add_upload(u)
    prop = srv.proposal()
    for i in signers:
        srv.add_signature(fed.clients[i].on_round_proposal(prop))
    return srv


def decrypt_with_dropouts(fed: Federation, srv: ServerRound, vanish: Collection[int]) -> tuple[np.ndarray, int]:
    """Attempts until a decrypting set of live signers answers in full (members in ``vanish`` never answer);
    returns (the decoded sum, attempts). ``IncompleteShareSetError`` once fewer than t live signers remain."""
    gone: set[int] = set()
    attempt = 0
    t = fed.server.threshold or len(fed.clients)
    while True:
        live = tuple(i for i in srv.signers if i not in gone)
        if len(live) < t:
            raise IncompleteShareSetError(f"{len(live)} live signers for t = {t}")
        conf = srv.confirmation(attempt, live[:t])
        for i in live[:t]:
            if i in vanish:
                gone.add(i)
                continue
            srv.add_share(fed.clients[i].on_round_confirmation(conf))
        if not gone & set(live[:t]):
            return srv.result(), attempt + 1
        attempt += 1
