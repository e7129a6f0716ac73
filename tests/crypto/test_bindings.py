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


def test_b5_coefficient_form_ciphertext_loads_and_transforms_to_ntt(be, tiny):
    """A coefficient-form CKKS ciphertext built from raw values loads, and SEAL's NTT matches util's (the flood)."""
    from bastionfl.crypto import sealraw

    n, q = tiny.poly_modulus_degree, tiny.primes[0]
    rng = np.random.default_rng(5)
    raw = rng.integers(0, q, size=(3, 1, n), dtype=np.uint64)
    ct = sealraw.to_ciphertext(be.ctx_a, be.data_parms_id, raw, tiny.data_primes, 1.0, ntt=False)
    assert not ct.is_ntt_form()
    be.eval_a.transform_to_ntt_inplace(ct)
    out = sealraw.ciphertext_data(ct)
    tables = util.NTTTables(int(math.log2(n)), sa.Modulus(q))
    for i in range(3):
        assert [v % q for v in util.ntt_negacyclic_harvey([int(v) for v in raw[i, 0]], tables)] == out[i, 0].tolist()


def test_b6_seeded_prng_is_deterministic_across_processes(tiny):
    code = (
        "from bastionfl.crypto import custom_params, CrsSeed;"
        "from bastionfl.crypto.crs import crs_material;from bastionfl.crypto.backend import save;import hashlib;"
        "p=custom_params(4096,[40],40,30,16,name='tiny',below_standard=True);"
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
        load(sa.Ciphertext(), backend(tiny).ctx_a, save(share.ciphertext))


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


def test_b16_seal_member_layout_is_what_sealraw_builds(be, ct, secret, tiny):
    """The decompressed member bytes SEAL writes equal the bytes sealraw builds from the same coefficients."""
    from bastionfl.crypto import sealraw

    data = sealraw.ciphertext_data(ct)
    assert sealraw._members(ct, len(sealraw.ciphertext_members(ct.parms_id(), data, ct.scale))) == \
        sealraw.ciphertext_members(ct.parms_id(), data, ct.scale)
    pt = sa.Plaintext()
    be.encoder_a.encode([0.25] * 4, be.data_parms_id, 2.0**30, pt)
    pdata = sealraw.plaintext_data(pt, 1)
    members = sealraw.plaintext_members(pt.parms_id(), pdata, pt.scale)
    assert sealraw._members(pt, len(members)) == members
    sdata = sealraw.secret_key_data(secret, len(tiny.primes))
    members = sealraw.plaintext_members(secret.parms_id(), sdata, 1.0)
    assert sealraw._members(secret.data(), len(members)) == members
    rebuilt = sealraw.to_secret_key(be.ctx_b, be.ctx_b.key_parms_id(), sdata, tiny.primes)
    assert (sealraw.secret_key_data(rebuilt, len(tiny.primes)) == sdata).all()
    assert sealraw._VERSION[0] == 4 and save(ct)[5] == 2  # SEAL 4.x, saving with ZSTD (the only mode bound)


def test_b17_zstd_decompress_is_exported_by_the_extension():
    """sealraw reads SEAL's own output with the ZSTD_decompress of the extension module (else a slow fallback)."""
    from bastionfl.crypto import sealraw

    assert sealraw._ZSTD_FUNCS is not None


def test_b18_builders_refuse_out_of_range_coefficients(be, tiny):
    from bastionfl.crypto import CryptoFormatError, sealraw

    q = tiny.primes[0]
    bad = np.zeros((2, 1, tiny.poly_modulus_degree), dtype=np.uint64)
    bad[1, 0, 7] = q
    with pytest.raises(CryptoFormatError, match="out of range"):
        sealraw.to_ciphertext(be.ctx_a, be.data_parms_id, bad, tiny.data_primes, 2.0**30)
    bad[1, 0, 7] = q - 1
    assert sealraw.to_ciphertext(be.ctx_a, be.data_parms_id, bad, tiny.data_primes, 2.0**30).size() == 2
