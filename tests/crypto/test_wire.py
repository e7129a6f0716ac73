"""Wire encoding: round trips, and every defect (truncation, corruption, wrong parameters/kind/length) is typed."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bastionfl.crypto import (
    AggregatedPublicKey,
    CrsSeed,
    CryptoError,
    CryptoFormatError,
    DecryptionRequest,
    DecryptionShare,
    EncryptedVector,
    KeyShare,
    PublicKeyShare,
    StreamingAggregator,
    custom_params,
    encrypt_vector,
)

from .conftest import next_round


@pytest.fixture(scope="module")
def samples(tiny3):
    """One valid wire object of every kind, with the parser of each."""
    p = tiny3.params
    xs = [np.linspace(-1, 1, 700) * (i + 1) / 3 for i in range(3)]
    evs = [encrypt_vector(tiny3.apk, x) for x in xs]
    agg = StreamingAggregator(p, tiny3.apk)
    for ev in evs:
        agg.add(ev)
    aggregate = agg.result()
    req = aggregate.decryption_request(next_round())
    share = tiny3.keys[0].decryption_share(req, evs[0])
    return {
        "crs": (tiny3.crs.to_bytes(p), lambda d: CrsSeed.from_bytes(p, d)),
        "public_share": (tiny3.keys[1].public_share().to_bytes(), lambda d: PublicKeyShare.from_bytes(p, d)),
        "aggregated_key": (tiny3.apk.to_bytes(), lambda d: AggregatedPublicKey.from_bytes(p, d)),
        "encrypted_vector": (evs[2].to_bytes(), lambda d: EncryptedVector.from_bytes(p, d)),
        "request": (req.to_bytes(), lambda d: DecryptionRequest.from_bytes(p, d)),
        "share": (share.to_bytes(), lambda d: DecryptionShare.from_bytes(p, d)),
        "local_key": (tiny3.keys[2].export_local(), lambda d: KeyShare.import_local(p, d)),
    }


KINDS = ["crs", "public_share", "aggregated_key", "encrypted_vector", "request", "share", "local_key"]


def _reseal(data: bytes, body: bytes) -> bytes:
    """Rebuild an envelope around a modified body with a correct length and checksum (reaches inner parsers)."""
    head = data[:4 + 1 + 1 + 16] + struct.pack("<Q", len(body))
    return head + body + hashlib.sha256(head + body).digest()


@pytest.mark.parametrize("kind", KINDS)
def test_roundtrip(samples, kind):
    data, parse = samples[kind]
    obj = parse(data)
    if kind == "crs":
        assert obj.to_bytes(custom_params(4096, [40], 40, 30, 16, name="tiny", below_standard=True)) == data
    elif kind == "local_key":
        assert obj.export_local() == data
    else:
        assert obj.to_bytes() == data


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_corrupted_and_extended_refused(samples, kind):
    data, parse = samples[kind]
    for bad in (data[:-1], data[: len(data) // 2], data[:10], b"", data + b"\x00"):
        with pytest.raises(CryptoFormatError):
            parse(bad)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    with pytest.raises(CryptoFormatError, match="checksum"):
        parse(bytes(flipped))
    versioned = bytearray(data)
    versioned[4] = 1  # the previous envelope version (SEAL blobs inside) is refused
    with pytest.raises(CryptoFormatError, match="version"):
        parse(bytes(versioned))


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_parameters_refused(samples, kind, lean):
    data, _ = samples[kind]
    parsers = {
        "crs": lambda d: CrsSeed.from_bytes(lean, d),
        "public_share": lambda d: PublicKeyShare.from_bytes(lean, d),
        "aggregated_key": lambda d: AggregatedPublicKey.from_bytes(lean, d),
        "encrypted_vector": lambda d: EncryptedVector.from_bytes(lean, d),
        "request": lambda d: DecryptionRequest.from_bytes(lean, d),
        "share": lambda d: DecryptionShare.from_bytes(lean, d),
        "local_key": lambda d: KeyShare.import_local(lean, d),
    }
    with pytest.raises(CryptoFormatError, match="fingerprint"):
        parsers[kind](data)


def test_wrong_kind_refused(samples):
    data, _ = samples["share"]
    _, parse_vector = samples["encrypted_vector"]
    with pytest.raises(CryptoFormatError, match="kind"):
        parse_vector(data)


def test_wrong_length_field_refused(samples):
    data, parse = samples["encrypted_vector"]
    body = bytearray(data[30:-32])
    body[16:24] = struct.pack("<Q", 700 + 4096)  # claims two ciphertexts, carries one
    with pytest.raises(CryptoFormatError, match="count|truncated"):
        parse(_reseal(data, bytes(body)))


def test_coefficient_defects_refused_behind_a_valid_checksum(samples, tiny3):
    """A sender that computes a correct checksum over out-of-range coefficients still gets a typed error, and
    SEAL never parses its bytes: polynomials travel as raw coefficients that sealraw checks and wraps itself."""
    for kind in ("public_share", "aggregated_key", "encrypted_vector", "request", "share"):
        data, parse = samples[kind]
        q = (tiny3.params.key_primes if kind in ("public_share", "aggregated_key") else tiny3.params.data_primes)[-1]
        body = bytearray(data[30:-32])
        body[-8:] = struct.pack("<Q", q)  # the last coefficient becomes the prime itself
        with pytest.raises(CryptoFormatError, match="out of range"):
            parse(_reseal(data, bytes(body)))
        body[-8:] = struct.pack("<Q", 2**64 - 1)
        with pytest.raises(CryptoFormatError, match="out of range"):
            parse(_reseal(data, bytes(body)))
        body[-8:] = struct.pack("<Q", q - 1)  # in range: a well-formed message a sender could have sent anyway
        parse(_reseal(data, bytes(body)))
    # a share that claims more ciphertexts than it carries
    data, parse = samples["share"]
    body = bytearray(data[30:-32])
    body[16 + 8 + 32 + 32 : 16 + 8 + 32 + 32 + 4] = struct.pack("<I", 2)
    with pytest.raises(CryptoFormatError, match="truncated"):
        parse(_reseal(data, bytes(body)))


def _fuzz_case(samples, kind, raw, position, payload, reseal):
    data, parse = samples[kind]
    if raw is not None:
        candidate = raw
    else:
        body = bytearray(data[30:-32])
        pos = position % max(1, len(body))
        body[pos : pos + len(payload)] = payload
        candidate = _reseal(data, bytes(body)) if reseal else bytes(data[:30]) + bytes(body) + data[-32:]
    try:
        parse(candidate)
    except CryptoFormatError:
        pass
    except CryptoError as exc:  # pragma: no cover - would be a bug: the wire must only raise CryptoFormatError
        raise AssertionError(f"non-format CryptoError {exc!r}") from exc


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(raw=None, position=100, payload=b"\x00", reseal=True)  # found by this test: a zeroed scale byte
@given(
    raw=st.one_of(st.none(), st.binary(max_size=300)),
    position=st.integers(min_value=0, max_value=10**7),
    payload=st.binary(min_size=1, max_size=12),
    reseal=st.booleans(),
)
def test_fuzz_from_bytes_raises_only_the_typed_error(samples, kind, raw, position, payload, reseal):
    _fuzz_case(samples, kind, raw, position, payload, reseal)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.binary(min_size=30, max_size=30))
def test_fuzz_headers(samples, kind, header):
    data, parse = samples[kind]
    try:
        parse(header + data[30:])
    except CryptoFormatError:
        pass


def test_non_bytes_refused(samples):
    _, parse = samples["share"]
    with pytest.raises(CryptoFormatError):
        parse("not bytes")  # type: ignore[arg-type]
