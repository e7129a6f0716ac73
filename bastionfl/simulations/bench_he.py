"""``bastionfl bench he``: xMK-CKKS (both profiles) against plaintext, single-key TenSEAL, Paillier and OpenFHE.

Prints one JSON object. For a vector of P floats and n clients each scheme reports ``keygen_s``, ``encrypt_s`` and
``share_s`` per client, ``aggregate_s`` and ``fuse_s`` for the server (fuse includes decoding), ``upload_bytes`` per
client and ``upload_ratio`` against float32, and ``max_abs_error`` of the decoded sum. Paillier runs on a subset and
is extrapolated linearly (said in its entry). OpenFHE threshold CKKS runs in a separate Python 3.10 interpreter
(``BASTIONFL_OPENFHE_PYTHON`` or ``python3.10`` on PATH) and is reported "unavailable", with the reason, otherwise.
``--threat-models`` adds, per profile and threat model, one epoch and one round of the protocol engine: time of
every step (commit, transcript signature with its sketch, consistency and C1 checks, share, fuse) and bytes per
client of the key, upload and decrypt stages (``bastionfl.crypto.costs``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["main"]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence library prints (TenSEAL warns on stdout, through Python or fd 1) so the JSON stays parseable."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def _inputs(p: int, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.0, 1.0, p) for _ in range(n)]


def _xmk(profile: str, xs: list[np.ndarray]) -> dict[str, Any]:
    from bastionfl import crypto as xc
    from bastionfl.crypto.backend import backend

    params = xc.get_profile(profile)
    backend(params)  # contexts are built once per process; not part of any step
    n, p = len(xs), xs[0].size
    crs = xc.CrsSeed.from_session("bench-he", 0)
    keys, t_keygen = [], 0.0
    for _ in range(n):
        k, t = _timed(lambda: xc.KeyShare.generate(params, crs))
        keys.append(k)
        t_keygen += t
    apk, t_apk = _timed(lambda: xc.AggregatedPublicKey.aggregate(params, crs, [k.public_share() for k in keys]))
    for k in keys:
        k.accept(apk)
    evs, t_enc = [], 0.0
    for x in xs:
        ev, t = _timed(lambda: xc.encrypt_vector(apk, x))
        evs.append(ev)
        t_enc += t
    upload, t_ser = _timed(lambda: evs[0].to_bytes())
    _, t_deser = _timed(lambda: xc.EncryptedVector.from_bytes(params, upload))

    _, t_c1 = _timed(lambda: [ev.c1_digest() for ev in evs])  # c1 of each update for the request's list

    def aggregate() -> Any:
        agg = xc.StreamingAggregator(params, apk)
        for ev in evs:
            agg.add(ev)
        return agg.result()

    aggregate_ct, t_sum = _timed(aggregate)
    request, t_req = _timed(lambda: aggregate_ct.decryption_request(1))
    t_agg = t_c1 + t_sum + t_req
    request_bytes = request.to_bytes()
    parsed, t_req_parse = _timed(lambda: xc.DecryptionRequest.from_bytes(params, request_bytes))
    # client 0 samples its smudging floods beforehand (KeyShare.prepare_smudging, e.g. right after its upload);
    # clients 1..n-1 sample them inside decryption_share: share_s is their mean
    _, t_prep = _timed(lambda: keys[0].prepare_smudging(len(aggregate_ct.data)))
    shares, t_share, t_share_prep = [], 0.0, 0.0
    for i, (k, ev) in enumerate(zip(keys, evs)):
        req = parsed if i == 0 else xc.DecryptionRequest.from_bytes(params, request_bytes)
        s, t = _timed(lambda: k.decryption_share(req, ev))
        shares.append(s)
        if i == 0:
            t_share_prep = t
        else:
            t_share += t
    share_mean = t_share / (n - 1)
    share_bytes = shares[0].to_bytes()
    # the share alone (smudging + s_i·C1), without the C1 verification, for the profile of share_s
    _, t_core = _timed(lambda: keys[0].partial_decrypt(aggregate_ct.data[:, 1], n, n))
    out, t_fuse = _timed(lambda: xc.fuse(aggregate_ct, shares, n))
    err = float(np.max(np.abs(out - np.sum(xs, axis=0))))
    return {
        "scheme": f"xMK-CKKS {profile} (tenseal.sealapi, N={params.poly_modulus_degree}, "
        f"data {list(params.data_bits)} | special {params.special_bits}, scale 2^{params.scale_bits}, "
        f"smudging 2^{params.flood_bits(n, n, len(evs[0].data))}, complex packing)",
        "keygen_s": t_keygen / n,
        "key_aggregate_s": t_apk,
        "encrypt_s": t_enc / n,
        "serialize_s": t_ser,
        "deserialize_s": t_deser,
        "aggregate_s": t_agg,
        "aggregate_sum_s": t_sum,
        "aggregate_c1_lists_s": t_c1,
        "request_build_s": t_req,
        "request_parse_s": t_req_parse,
        "share_s": share_mean,
        "share_core_s": t_core,
        "share_verify_s": max(0.0, share_mean - t_core),
        "prepare_smudging_s": t_prep,
        "share_with_prepared_smudging_s": t_share_prep,
        "fuse_s": t_fuse,
        "ciphertexts_per_client": len(evs[0].data),
        "upload_bytes": len(upload),
        "upload_ratio": len(upload) / (4 * p),
        "share_bytes": len(share_bytes),
        "share_ratio": len(share_bytes) / (4 * p),
        "request_bytes": len(request_bytes),
        "public_share_bytes": len(keys[0].public_share().to_bytes()),
        "aggregated_key_bytes": len(apk.to_bytes()),
        "max_abs_error": err,
        "expected_max_error": params.expected_max_error(n, 1.0, len(evs[0].data)),
        "notes": "per client: keygen, encrypt, share (incl. C1 verification against the n listed c1; "
        "share_core_s = smudging + s_i*C1 only; share_with_prepared_smudging_s: floods sampled beforehand by "
        "prepare_smudging, e.g. while the client waits for the aggregate); request_parse_s: client parses and "
        "loads the request (n+1 c1 lists); server: aggregate (incl. c1 extraction for the request), fuse "
        "(incl. decode); serialize/deserialize: one update",
    }


def _plaintext(xs: list[np.ndarray]) -> dict[str, Any]:
    f32 = [x.astype(np.float32) for x in xs]
    total, t = _timed(lambda: np.sum(np.stack(f32), axis=0, dtype=np.float64))
    return {
        "scheme": "plaintext float32 sum",
        "keygen_s": 0.0,
        "encrypt_s": 0.0,
        "aggregate_s": t,
        "share_s": 0.0,
        "fuse_s": 0.0,
        "upload_bytes": 4 * xs[0].size,
        "upload_ratio": 1.0,
        "max_abs_error": float(np.max(np.abs(total - np.sum(xs, axis=0)))),
    }


def _tenseal_single(xs: list[np.ndarray]) -> dict[str, Any]:
    import tenseal as ts

    def keygen() -> Any:
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40])
        ctx.global_scale = 2**40
        return ctx

    ctx, t_keygen = _timed(keygen)
    vecs, t_enc = [], 0.0
    with _quiet_stdout():
        for x in xs:
            v, t = _timed(lambda: ts.ckks_vector(ctx, x))
            vecs.append(v)
            t_enc += t
    upload = vecs[0].serialize()

    def aggregate() -> Any:
        acc = vecs[0] + vecs[1] if len(vecs) > 1 else vecs[0]
        for v in vecs[2:]:
            acc += v
        return acc

    acc, t_agg = _timed(aggregate)
    out, t_dec = _timed(lambda: np.asarray(acc.decrypt()))
    return {
        "scheme": "TenSEAL single-key CKKS as in NVFlare (N=8192, q=[60,40,40], scale 2^40; one key holder)",
        "keygen_s": t_keygen,
        "encrypt_s": t_enc / len(xs),
        "aggregate_s": t_agg,
        "share_s": None,
        "fuse_s": t_dec,
        "upload_bytes": len(upload),
        "upload_ratio": len(upload) / (4 * xs[0].size),
        "max_abs_error": float(np.max(np.abs(out - np.sum(xs, axis=0)))),
        "notes": "every client holds the same secret key; fuse_s = decryption by a key holder; no share step; "
        "TenSEAL's vector API runs its ciphertexts on a thread pool",
    }


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _paillier(xs: list[np.ndarray], subset: int) -> dict[str, Any]:
    from phe import paillier

    n, p = len(xs), xs[0].size
    m = min(subset, p)
    (pub, priv), t_keygen = _timed(lambda: paillier.generate_paillier_keypair(n_length=2048))
    enc, t_enc = [], 0.0
    for x in xs:
        c, t = _timed(lambda: [pub.encrypt(float(v)) for v in x[:m]])
        enc.append(c)
        t_enc += t

    def aggregate() -> list[Any]:
        acc = list(enc[0])
        for c in enc[1:]:
            acc = [a + b for a, b in zip(acc, c)]
        return acc

    acc, t_agg = _timed(aggregate)
    out, t_dec = _timed(lambda: np.array([priv.decrypt(c) for c in acc]))
    scale = p / m
    ct_bytes = (pub.nsquare.bit_length() + 7) // 8
    return {
        "scheme": "Paillier (phe, 2048-bit modulus, one key holder)",
        "keygen_s": t_keygen,
        "encrypt_s": t_enc / n * scale,
        "aggregate_s": t_agg * scale,
        "share_s": None,
        "fuse_s": t_dec * scale,
        "upload_bytes": int(ct_bytes * p),
        "upload_ratio": ct_bytes * p / (4 * p),
        "max_abs_error": float(np.max(np.abs(out - np.sum([x[:m] for x in xs], axis=0)))),
        "extrapolated": True,
        "subset": m,
        "gmpy2": _has_module("gmpy2"),
        "notes": f"measured on the first {m} floats per client and extrapolated linearly to {p}; "
        "upload counts one ciphertext mod n^2 per float (no packing); fuse_s = decryption by the key holder; "
        "phe uses gmpy2 when installed (see 'gmpy2'), else Python integers",
    }


_OPENFHE_SCRIPT = r"""
import json, os, sys, time
import numpy as np
import openfhe as fhe
P, n, N = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
xs = [rng.uniform(-1.0, 1.0, P) for _ in range(n)]
def timed(f):
    t = time.perf_counter(); out = f(); return out, time.perf_counter() - t
params = fhe.CCParamsCKKSRNS()
params.SetMultiplicativeDepth(1); params.SetScalingModSize(50); params.SetFirstModSize(60)
params.SetRingDim(N); params.SetBatchSize(N // 2); params.SetScalingTechnique(fhe.FIXEDMANUAL)
params.SetKeySwitchTechnique(fhe.BV)
cc = fhe.GenCryptoContext(params)
for f in (fhe.PKE, fhe.KEYSWITCH, fhe.LEVELEDSHE, fhe.ADVANCEDSHE, fhe.MULTIPARTY):
    cc.Enable(f)
slots = N // 2
t_keygen = 0.0
lead, t = timed(lambda: cc.KeyGen()); t_keygen += t
kps = [lead]
jpk = lead.publicKey
for _ in range(n - 1):
    kp, t = timed(lambda: cc.MultipartyKeyGen(lead.publicKey, False, True)); t_keygen += t
    kps.append(kp)
    jpk, t = timed(lambda: cc.MultiAddPubKeys(jpk, kp.publicKey)); t_keygen += t
def encrypt(x):
    return [cc.Encrypt(jpk, cc.MakeCKKSPackedPlaintext(x[i:i + slots].tolist())) for i in range(0, P, slots)]
cts, t_enc = [], 0.0
for x in xs:
    c, t = timed(lambda: encrypt(x)); cts.append(c); t_enc += t
upload = sum(len(fhe.Serialize(c, fhe.BINARY)) for c in cts[0])
agg, t_agg = timed(lambda: [cc.EvalAddMany([c[k] for c in cts]) for k in range(len(cts[0]))])
t_share = 0.0
shares = []
for i, kp in enumerate(kps):
    f = cc.MultipartyDecryptLead if i == 0 else cc.MultipartyDecryptMain
    s, t = timed(lambda: [f([ct], kp.secretKey)[0] for ct in agg]); shares.append(s); t_share += t
def fuse():
    out = []
    for k in range(len(agg)):
        pt = cc.MultipartyDecryptFusion([s[k] for s in shares]); pt.SetLength(slots)
        out.extend(pt.GetRealPackedValue())
    return np.array(out[:P])
res, t_fuse = timed(fuse)
print(json.dumps({
    "scheme": f"OpenFHE {fhe.__version__ if hasattr(fhe, '__version__') else ''} threshold CKKS "
              f"(N={N}, BV, scale 2^50, first mod 60, real packing, OMP_NUM_THREADS=1)",
    "keygen_s": t_keygen / n, "encrypt_s": t_enc / n, "aggregate_s": t_agg, "share_s": t_share / n,
    "fuse_s": t_fuse, "upload_bytes": upload, "upload_ratio": upload / (4 * P),
    "max_abs_error": float(np.max(np.abs(res - np.sum(xs, axis=0)))),
    "ciphertexts_per_client": len(cts[0]),
    "notes": "star topology: each party keys against the lead's a (fresh=True), shares summed by MultiAddPubKeys",
}))
"""


def _openfhe_python() -> tuple[str | None, str]:
    env = os.environ.get("BASTIONFL_OPENFHE_PYTHON")
    candidates = [env] if env else [shutil.which("python3.10")]
    for exe in candidates:
        if not exe:
            continue
        probe = subprocess.run([exe, "-c", "import openfhe"], capture_output=True, text=True, timeout=120)
        if probe.returncode == 0:
            return exe, ""
        last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
        return None, f"{exe}: import openfhe failed ({last})"
    return None, "no Python 3.10 interpreter with openfhe (set BASTIONFL_OPENFHE_PYTHON; its wheels import only there)"


def _openfhe(p: int, n: int, ring_dim: int, timeout: int) -> dict[str, Any]:
    try:
        exe, why = _openfhe_python()
        if exe is None:
            return {"scheme": "OpenFHE threshold CKKS", "status": "unavailable", "reason": why}
        env = dict(os.environ, OMP_NUM_THREADS="1")
        run = subprocess.run(
            [exe, "-c", _OPENFHE_SCRIPT, str(p), str(n), str(ring_dim)],
            capture_output=True, text=True, timeout=timeout, env=env,
        )
        if run.returncode != 0:
            tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
            return {"scheme": "OpenFHE threshold CKKS", "status": "unavailable", "reason": f"run failed: {tail}"}
        out = json.loads(run.stdout.strip().splitlines()[-1])
        out["status"] = "ok"
        return out
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return {"scheme": "OpenFHE threshold CKKS", "status": "unavailable", "reason": f"{type(exc).__name__}: {exc}"}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bastionfl bench he", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=int, default=1_000_000, help="floats per client update (default 1,000,000)")
    ap.add_argument("--clients", type=int, default=3, help="number of clients (default 3)")
    ap.add_argument("--paillier-subset", type=int, default=100, help="floats Paillier really encrypts per client")
    ap.add_argument("--profiles", default="precise,lean", help="comma-separated xMK-CKKS profiles")
    ap.add_argument("--skip", default="", help="comma-separated baselines to skip: tenseal,paillier,openfhe")
    ap.add_argument("--openfhe-ring-dim", type=int, default=16384)
    ap.add_argument("--openfhe-timeout", type=int, default=900)
    ap.add_argument("--threat-models", nargs="?", const="honest-but-curious,malicious,malicious-colluding",
                    default=None, help="also run the protocol engine per profile and threat model (comma-separated; "
                    "all three when given without a value)")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    return ap


def main(argv: list[str]) -> int:
    """Run the benchmark and print JSON; returns 0, or 2 on a usage error."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    profiles = [s for s in args.profiles.split(",") if s]
    skip = {s for s in args.skip.split(",") if s}
    if args.params < 1 or args.clients < 2 or args.paillier_subset < 1 or not profiles:
        print("--params and --paillier-subset must be >= 1, --clients >= 2, --profiles non-empty", file=sys.stderr)
        return 2
    xs = _inputs(args.params, args.clients)
    load_before = list(os.getloadavg())
    schemes: dict[str, Any] = {"plaintext": _plaintext(xs)}
    for prof in profiles:
        schemes[f"xmkckks_{prof}"] = _xmk(prof, xs)
    if "tenseal" not in skip:
        schemes["tenseal_single_key"] = _tenseal_single(xs)
    if "paillier" not in skip:
        schemes["paillier"] = _paillier(xs, args.paillier_subset)
    if "openfhe" not in skip:
        schemes["openfhe_threshold"] = _openfhe(args.params, args.clients, args.openfhe_ring_dim, args.openfhe_timeout)
    if "paillier" in schemes:
        pai = schemes["paillier"]
        for prof in profiles:
            x = schemes[f"xmkckks_{prof}"]
            x["speedup_vs_paillier_per_client"] = pai["encrypt_s"] / (x["encrypt_s"] + x["share_s"])
    threat_models: dict[str, Any] = {}
    if args.threat_models:
        from bastionfl.crypto import get_profile
        from bastionfl.crypto.costs import protocol_costs

        for prof in profiles:
            threat_models[prof] = {
                tm: protocol_costs(get_profile(prof), tm, args.clients, args.params)
                for tm in args.threat_models.split(",") if tm
            }
    result = {
        "params": args.params,
        "clients": args.clients,
        "float32_bytes": 4 * args.params,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": list(os.getloadavg()),
        },
        "schemes": schemes,
    }
    if threat_models:
        result["threat_models"] = threat_models
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
