"""Measured cost of one key epoch and one round of the protocol engine: time per step and bytes per client.

Every message goes through its bytes, as in deployment. Client steps are reported as the mean over clients,
server steps as totals; bytes are per client (``download`` = server to client). Used by ``bastionfl bench he
--threat-models`` and by the documentation's cost table.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from .client_epoch import ClientEpoch
from .params import Params
from .server_epoch import ServerEpoch
from .sketch import sketch
from .threat import ClientPolicy, ThreatModel


class _Clock:
    def __init__(self) -> None:
        self.s: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        self.s[name] = self.s.get(name, 0.0) + time.perf_counter() - start
        return out


def protocol_costs(params: Params, threat: ThreatModel | str, clients: int, length: int, seed: int = 0) -> dict:
    """Run one epoch and one round with ``clients`` members and updates of ``length`` floats; return the figures."""
    model = ThreatModel.parse(threat)
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-1.0, 1.0, length) for _ in range(clients)]
    weights = [float(w) for w in rng.uniform(0.5, 1.5, clients)]  # the Flower layer normalises n_k to ~1
    policy = ClientPolicy(model, min_members=min(3, clients), min_uploads=min(3, clients))
    t = _Clock()
    down: dict[str, int] = {}
    up: dict[str, int] = {}

    def note(table: dict[str, int], stage: str, data: bytes | None) -> None:
        table[stage] = table.get(stage, 0) + (len(data) if data else 0)

    _, warm = ServerEpoch.open(params, model, "costs-warm-up", 0)  # contexts and tables: not part of any step
    ClientEpoch.open(params, warm, policy)[0].key.take_flood(params.smudging_bits, 1)
    server, opening = t("server_open", lambda: ServerEpoch.open(params, model, "costs", 0))
    cs: list[ClientEpoch] = []
    for i in range(clients):
        c, reply = t("client_key_setup", lambda: ClientEpoch.open(params, opening, policy))
        cs.append(c)
        if i == 0:
            note(up, "key", reply)
        t("server_key_collect", lambda reply=reply: server.add_key_reply(reply))
    note(down, "key", opening)
    proposal = t("server_key_proposal", server.proposal)
    note(down, "key", proposal)
    responses = [t("client_key_check", lambda c=c: c.on_key_proposal(proposal)) for c in cs]
    note(up, "key", responses[0])
    if model is not ThreatModel.HONEST_BUT_CURIOUS:
        for r in responses:
            t("server_key_collect", lambda r=r: server.add_key_response(r))
        conf = t("server_key_confirmation", server.confirmation)
        note(down, "key", conf)
        for c in cs:
            t("client_key_confirm", lambda c=c: c.on_key_confirmation(conf))
    srv = server.new_round(1)
    # as the Flower client does: it keeps no copy of its c1; the proposal brings it back (malicious)
    uploads = [t("client_encrypt_commit", lambda c=c, x=x, w=w: c.upload(1, w * x, w, keep_own_c1=False))
               for c, x, w in zip(cs, xs, weights)]
    note(up, "upload", uploads[0])
    if model is ThreatModel.MALICIOUS_COLLUDING:
        for u in uploads:
            t("server_commitments", lambda u=u: srv.add_commitment(u))
        lst = t("server_commitments", srv.commitment_list)
        note(down, "upload", lst)
        uploads = [t("client_reveal", lambda c=c: c.on_commitment_list(lst)) for c in cs]
        note(up, "upload", uploads[0])
    for u in uploads:
        t("server_aggregate", lambda u=u: srv.add_upload(u))
    for c in cs:
        t("client_prepare_smudging", lambda c=c: c.prepare_smudging(1, len(srv.uploads)))
    props = [t("server_proposal", lambda c=c: srv.proposal(for_member=c.index)) for c in cs]
    note(down, "decrypt", props[0])
    replies = [t("client_sign_transcript", lambda c=c, p=p: c.on_round_proposal(p)) for c, p in zip(cs, props)]
    note(up, "decrypt", replies[0])
    if model is ThreatModel.HONEST_BUT_CURIOUS:
        for r in replies:
            t("server_collect_shares", lambda r=r: srv.add_share(r))
    else:
        for r in replies:
            t("server_collect_signatures", lambda r=r: srv.add_signature(r))
        conf = t("server_confirmation", srv.confirmation)
        note(down, "decrypt", conf)
        shares = [t("client_verify_and_share", lambda c=c: c.on_round_confirmation(conf)) for c in cs]
        note(up, "decrypt", shares[0])
        for s in shares:
            t("server_collect_shares", lambda s=s: srv.add_share(s))
    mean = t("server_fuse", srv.weighted_mean)
    expected = sum(w * x for w, x in zip(weights, xs)) / sum(weights)
    k = -(-length // params.floats_per_ciphertext)
    c1 = np.zeros((k, len(params.data_bits), params.poly_modulus_degree), dtype=np.uint64)
    t("sketch_of_one_update", lambda: sketch(c1, params.data_primes, bytes(32)))
    per_client = {name for name in t.s if name.startswith("client_")}
    times = {f"{name}_s": (v / clients if name in per_client else v) for name, v in sorted(t.s.items())}
    return {
        "profile": params.name,
        "threat_model": model.value,
        "clients": clients,
        "params": length,
        "ciphertexts_per_client": k,
        "times": times,
        "download_per_client_bytes": down,
        "upload_per_client_bytes": up,
        "decrypt_download_over_upload": down.get("decrypt", 0) / max(1, up.get("upload", 1)),
        "flood_bits": params.flood_bits(clients, clients, k),
        "share_statistical_distance_bound": params.share_distance(clients, clients, k),
        "max_abs_error": float(np.max(np.abs(mean - expected))),
    }
