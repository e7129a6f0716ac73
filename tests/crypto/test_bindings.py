"""One test per tenseal.sealapi behaviour the construction relies on (B1..B11), plus the probes known to fail.

If a TenSEAL upgrade changes any of these, the matching test fails loudly before the protocol silently breaks.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tenseal.sealapi as sa
from tenseal.sealapi import util

from bastionfl.crypto.backend import backend, load, save
from bastionfl.crypto.crs import CrsSeed, crs_material


@pytest.fixture(scope="module")
def be(tiny):
    return backend(tiny)


@pytest.fixture(scope="module")
def secret(be):
    return sa.KeyGenerator(be.ctx_b).secret_key()


@pytest.fixture(scope="module")
def ct(be, secret):
    pk = sa.PublicKey()
    sa.KeyGenerator(be.ctx_a).create_public_key(pk)  # the zero-argument overload returns an unbound type
    pt = sa.Plaintext()
    be.encoder_a.encode([0.5] * 16, be.data_parms_id, 2.0**30, pt)
    out = sa.Ciphertext()
    sa.Encryptor(be.ctx_a, pk).encrypt(pt, out)
    return out


def _coeffs(obj, count):
    return [int(obj[i]) for i in range(count)]


def test_b1_decrypt_is_unrounded_and_linear(be, secret, ct):
    """Dec_0(C) + Dec_s((0, C1)) == Dec_s(C) bit for bit: Decryptor returns c0 + c1·s in NTT form."""
    dec = sa.Decryptor(be.ctx_b, secret)
    full, part = sa.Plaintext(), sa.Plaintext()
    dec.decrypt(ct, full)
    dec.decrypt(be.c1_only(ct, be.eval_a), part)
    c0 = be.c0(ct)
    n, q = be.data_coeff_count, be.params.primes[0]
    assert full.is_ntt_form()
    assert [(a + b) % q for a, b in zip(_coeffs(c0, n), _coeffs(part, n))] == _coeffs(full, n)


def test_b2_key_data_are_mutable_references(be, tiny):
    zk = sa.KeyGenerator(be.ctx_b).secret_key()
    assert not zk.data().is_zero()
    zk.data().set_zero()
    assert zk.data().is_zero()
    mat = crs_material(tiny, CrsSeed.from_session("b2", 0))
    pk = sa.PublicKey()
    be.eval_b.negate(mat.z, pk.data())
    assert pk.parms_id() == be.key_parms_id


def test_b3_parms_id_depends_on_moduli_only(be):
    assert be.ctx_a.key_parms_id() == be.ctx_b.first_parms_id()
    assert be.ctx_a.first_parms_id() == be.ctx_b.first_context_data().next_context_data().parms_id()


def test_b4_ctx_b_works_on_ctx_a_objects_but_not_the_reverse(be, secret, ct, tiny):
    out = sa.Plaintext()
    sa.Decryptor(be.ctx_b, secret).decrypt(ct, out)
    assert out.parms_id() == be.data_parms_id
    z = crs_material(tiny, CrsSeed.from_session("b4", 0)).z
    with pytest.raises((ValueError, RuntimeError), match="not valid for encryption parameters"):
        be.eval_a.add(z, z, sa.Ciphertext())


def test_b5_encoder_gaussian_gives_coefficient_std(be, tiny):
    from bastionfl.crypto.noise import smudging_plaintext

    n, q = tiny.poly_modulus_degree, tiny.primes[0]
    std = 2.0**20
    pt = smudging_plaintext(be.encoder_b, n, be.data_parms_id, 1.0, std)
    coeffs = util.inverse_ntt_negacyclic_harvey(_coeffs(pt, n), util.NTTTables(int(math.log2(n)), sa.Modulus(q)))
    centred = np.array([(c % q) - q if c % q > q // 2 else c % q for c in coeffs], dtype=np.float64)
    assert abs(np.std(centred) / std - 1) < 0.05
    assert np.all(centred == np.round(centred))


def test_b6_seeded_prng_is_deterministic_across_processes(tiny):
    code = (
        "from bastionfl.crypto import custom_params, CrsSeed;"
        "from bastionfl.crypto.crs import crs_material;from bastionfl.crypto.backend import save;import hashlib;"
        "p=custom_params(4096,[40],40,30,16,name='tiny');"
        "print(hashlib.sha256(save(crs_material(p,CrsSeed.from_session('b6',3)).a0)).hexdigest())"
    )
    here = __import__("hashlib").sha256(save(crs_material(tiny, CrsSeed.from_session("b6", 3)).a0)).hexdigest()
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == here
    assert save(crs_material(tiny, CrsSeed.from_session("b6", 4)).a0) != save(
        crs_material(tiny, CrsSeed.from_session("b6", 3)).a0
    )


def test_b7_save_load_roundtrip_and_header(be, ct):
    blob = save(ct)
    assert blob[:6] == bytes.fromhex("5ea110040302")  # magic A15E, header 16, version 4.x, ZSTD
    assert int.from_bytes(blob[8:16], "little") == len(blob)
    again = sa.Ciphertext()
    load(again, be.ctx_a, blob)
    assert save(again) == blob


def test_b8_inverse_ntt_binding_inverts_forward_ntt_up_to_reduction(tiny):
    """Outputs lie in [0, 2q) (the harvey variants may be lazy); reduced mod q they invert the forward NTT."""
    n, q = tiny.poly_modulus_degree, tiny.primes[0]
    tables = util.NTTTables(int(math.log2(n)), sa.Modulus(q))
    rng = np.random.default_rng(0)
    values = [int(v) for v in rng.integers(0, q, n)]
    forward = util.ntt_negacyclic_harvey(values, tables)
    out = util.inverse_ntt_negacyclic_harvey(forward, tables)
    assert max(out) < 2 * q and max(forward) < 4 * q
    assert [v % q for v in out] == values
    assert forward != values


def test_b9_ciphertext_copy_constructor_not_bound(ct):
    with pytest.raises(TypeError):
        sa.Ciphertext(ct)


def test_b10_plaintext_scale_is_settable(be):
    pt = sa.Plaintext()
    be.encoder_a.encode([1.0], be.data_parms_id, 1.0, pt)
    pt.scale = 2.0**30
    assert pt.scale == 2.0**30


def test_b11_transparent_result_raises(be, ct):
    """Evaluator ops whose result is transparent raise: ``second_components_equal`` relies on it."""
    with pytest.raises(RuntimeError, match="transparent"):
        be.eval_a.sub(ct, ct, sa.Ciphertext())


def test_b12_public_key_encryption_level_and_scale(be, ct):
    assert ct.parms_id() == be.data_parms_id and ct.size() == 2 and ct.is_ntt_form() and ct.scale == 2.0**30


def test_probe_decrypt_key_level_object_in_own_context_fails(be, tiny):
    z = crs_material(tiny, CrsSeed.from_session("probe", 0)).z
    sk_a = sa.KeyGenerator(be.ctx_a).secret_key()
    with pytest.raises((ValueError, RuntimeError), match="not valid for encryption parameters"):
        sa.Decryptor(be.ctx_a, sk_a).decrypt(z, sa.Plaintext())


def test_probe_plaintext_from_string_cannot_enter_ckks_ntt(be):
    pt = sa.Plaintext("3x^2 + 1")
    with pytest.raises((ValueError, RuntimeError), match="not valid for encryption parameters"):
        be.eval_a.transform_to_ntt_inplace(pt, be.data_parms_id)


def test_probe_aggregated_key_does_not_load_in_ctx_b(tiny):
    from .conftest import make_epoch

    ep = make_epoch(tiny, 2, run_id="probe-pk")
    blob = save(ep.apk.public_key)
    with pytest.raises((ValueError, RuntimeError)):
        load(sa.PublicKey(), backend(tiny).ctx_b, blob)
    pk = sa.PublicKey()
    load(pk, backend(tiny).ctx_a, blob)  # the right context accepts it


def test_probe_public_share_refused_by_ctx_a(tiny):
    from bastionfl.crypto import KeyShare

    share = KeyShare.generate(tiny, CrsSeed.from_session("probe-share", 0)).public_share()
    with pytest.raises((ValueError, RuntimeError)):
        load(sa.Ciphertext(), backend(tiny).ctx_a, share._blob)


def test_no_seal_file_is_left_behind(be, ct):
    from bastionfl.crypto import backend as backend_module

    save(ct)
    scratch = backend_module._scratch
    assert scratch is not None and os.listdir(scratch._dir) == []


def test_b13_data_primes_context_key_level_is_data_level(lean, precise):
    """The encryption path: a context of the data primes alone has key parms_id == ctx_a's data parms_id."""
    for p in (lean, precise):
        be = backend(p)
        assert be.ctx_direct.key_parms_id() == be.data_parms_id


def test_b15_encrypt_zero_accepts_the_key_level_and_scale_is_settable(tiny):
    """Encryptor.encrypt_zero at the key level works (no special-prime step); Ciphertext.scale is writable."""
    be = backend(tiny)
    sk = sa.KeyGenerator(be.ctx_direct).secret_key()
    pk = sa.PublicKey()
    sa.KeyGenerator(be.ctx_direct, sk).create_public_key(pk)
    ct = sa.Ciphertext()
    sa.Encryptor(be.ctx_direct, pk).encrypt_zero(be.ctx_direct.key_parms_id(), ct)
    assert ct.parms_id() == be.data_parms_id and ct.scale == 1.0
    ct.scale = 2.0**30
    pt = sa.Plaintext()
    be.encoder_a.encode([0.25] * 8, be.data_parms_id, 2.0**30, pt)
    be.eval_a.add_plain_inplace(ct, pt)  # ctx_a treats it as an ordinary data-level ciphertext
    out = sa.Plaintext()
    sa.Decryptor(be.ctx_direct, sk).decrypt(ct, out)
    assert abs(be.encoder_a.decode_double(out)[0] - 0.25) < 1e-4


def test_b14_ckks_mod_switch_drops_the_last_prime(tiny):
    """CKKS mod_switch_to_next divides nothing: it drops the last RNS component (used for the data-level pk)."""
    be = backend(tiny)
    z = crs_material(tiny, CrsSeed.from_session("b14", 0)).z
    dropped, neg = sa.Ciphertext(), sa.Ciphertext()
    be.eval_b.negate(z, neg)
    be.eval_b.mod_switch_to_next(neg, dropped)
    n = tiny.poly_modulus_degree
    q0 = tiny.primes[0]
    assert dropped.parms_id() == be.data_parms_id
    assert [int(dropped[i]) for i in range(n)] == [int(neg[i]) for i in range(n)]  # first prime untouched
    assert all(int(dropped[i]) < q0 for i in range(n))
