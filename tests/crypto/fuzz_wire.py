"""Fuzz harness run as a subprocess (a crash of the interpreter is then a test failure, not a lost test run).

Usage: python -m tests.crypto.fuzz_wire CASES SEED [KIND-SUBSTRING]. Builds one valid message of each kind at N=4096,
mutates it CASES times per kind (byte flips, overwritten runs, truncation, extension, count and length fields,
out-of-range coefficients), recomputes the envelope checksum so the mutation reaches the inner parser, and parses
it. Prints one JSON line: cases per kind and outcome counts. Exit status 1 on any exception other than
CryptoFormatError.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import sys

import numpy as np


def _reseal(data: bytes, body: bytes) -> bytes:
    head = data[:22] + struct.pack("<Q", len(body))
    return head + body + hashlib.sha256(head + body).digest()


def _mutate(rng: random.Random, body: bytes) -> bytes:
    b = bytearray(body)
    op = rng.randrange(7)
    if op == 0 and b:  # flip bits somewhere
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1 and b:  # overwrite a run with random bytes
        pos = rng.randrange(len(b))
        b[pos : pos + rng.randint(1, 16)] = rng.randbytes(rng.randint(1, 16))
    elif op == 2:  # truncate
        del b[rng.randrange(len(b) + 1) :]
    elif op == 3:  # extend
        b += rng.randbytes(rng.randint(1, 64))
    elif op == 4 and len(b) >= 8:  # a header field (counts, lengths, round) set to an extreme value
        pos = rng.randrange(min(len(b) - 4, 160))
        b[pos : pos + 4] = struct.pack("<I", rng.choice([0, 1, 2, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(32)]))
    elif op == 5 and len(b) >= 8:  # a coefficient at or above 2^60 (above every prime)
        pos = len(b) - 8 * rng.randint(1, max(1, (len(b) - 200) // 8))
        b[pos : pos + 8] = struct.pack("<Q", rng.choice([2**60, 2**63, 2**64 - 1, rng.getrandbits(64)]))
    else:  # splice: duplicate a random slice
        i, j = sorted(rng.randrange(len(b) + 1) for _ in range(2))
        b[i:i] = b[i:j]
    return bytes(b)


def _samples():
    from bastionfl.crypto import (
        ClientEpoch,
        DecryptionShare,
        EpochConfirmation,
        EpochProposal,
        KeyResponse,
        KeySetupReply,
        RoundConfirmation,
        RoundProposal,
        RoundShare,
        ServerEpoch,
        StreamingAggregator,
        TranscriptSignature,
        Upload,
        custom_params,
        encrypt_vector,
    )
    from bastionfl.crypto.round_messages import commitment_from_bytes
    from tests.crypto.conftest import make_epoch
    from tests.crypto.engine import key_epoch

    params = custom_params(4096, [40], 40, 30, 16, name="tiny", below_standard=True)
    ep = make_epoch(params, 2, run_id="fuzz")
    evs = [encrypt_vector(ep.apk, np.linspace(-1, 1, 500)) for _ in range(2)]
    agg = StreamingAggregator(params, ep.apk)
    for ev in evs:
        agg.add(ev)
    req = agg.result().decryption_request(1)
    share = ep.keys[0].decryption_share(req, evs[0])
    out = {"share": (share.to_bytes(), lambda d: DecryptionShare.from_bytes(params, d))}

    def parser(cls):
        return lambda d: cls.from_bytes(params, d)

    for threat in ("malicious", "malicious-colluding"):
        fed = key_epoch(params, threat, 3, run_id=f"fuzz-round-{threat}")
        srv = fed.server.new_round(1)
        ups = [c.upload(1, np.linspace(-1, 1, 500)) for c in fed.clients]
        if threat == "malicious-colluding":
            out["commitment"] = (ups[0], lambda d: commitment_from_bytes(params, d))
            for u in ups:
                srv.add_commitment(u)
            lst = srv.commitment_list()
            ups = [c.on_commitment_list(lst) for c in fed.clients]
        for u in ups:
            srv.add_upload(u)
        prop = srv.proposal()
        sigs = [c.on_round_proposal(prop) for c in fed.clients]
        for s in sigs:
            srv.add_signature(s)
        conf = srv.confirmation()
        round_share = fed.clients[0].on_round_confirmation(conf)
        tag = "m" if threat == "malicious" else "mc"
        out.update({
            f"{tag}-upload": (ups[0], parser(Upload)),
            f"{tag}-proposal": (prop, parser(RoundProposal)),
            f"{tag}-signature": (sigs[0], parser(TranscriptSignature)),
            f"{tag}-confirmation": (conf, parser(RoundConfirmation)),
            f"{tag}-round-share": (round_share, parser(RoundShare)),
        })
        kserver, kopening = ServerEpoch.open(params, threat, f"fuzz-key-{threat}", 0)
        kclients, kreplies = [], []
        for _ in range(3):
            c, reply = ClientEpoch.open(params, kopening, type(fed.clients[0].policy)(threat))
            kclients.append(c)
            kreplies.append(reply)
            kserver.add_key_reply(reply)
        kprop = kserver.proposal()
        kresp = [c.on_key_proposal(kprop) for c in kclients]
        for r in kresp:
            kserver.add_key_response(r)
        out.update({
            f"{tag}-key-reply": (kreplies[0], parser(KeySetupReply)),
            f"{tag}-epoch-proposal": (kprop, parser(EpochProposal)),
            f"{tag}-key-response": (kresp[0], parser(KeyResponse)),
            f"{tag}-epoch-confirmation": (kserver.confirmation(), parser(EpochConfirmation)),
        })
    return out


def main(argv: list[str]) -> int:
    from bastionfl.crypto import CryptoFormatError

    cases, seed = int(argv[0]), int(argv[1])
    only = argv[2] if len(argv) > 2 else ""
    rng = random.Random(seed)
    report: dict[str, dict[str, int]] = {}
    for kind, (data, parse) in _samples().items():
        if only not in kind:
            continue
        counts = {"refused": 0, "accepted": 0}
        body = data[30:-32]
        for _ in range(cases):
            candidate = _reseal(data, _mutate(rng, body))
            try:
                parse(candidate)
                counts["accepted"] += 1  # a well-formed message a sender could have sent anyway
            except CryptoFormatError:
                counts["refused"] += 1
            except Exception as exc:  # anything else is a bug: report it and fail
                print(json.dumps({"kind": kind, "error": f"{type(exc).__name__}: {exc}"}))
                return 1
        report[kind] = counts
    print(json.dumps({"cases_per_kind": cases, "seed": seed, "outcomes": report}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
