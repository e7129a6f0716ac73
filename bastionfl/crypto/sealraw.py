"""Raw RNS coefficients in and out of SEAL objects, so that SEAL never parses bytes from the network.

Out: an object we made is saved (SEAL compresses with ZSTD; the bindings expose no other mode) and decompressed with
the ZSTD_decompress exported by the very extension module that wrote it; the member layout is checked field by
field before the coefficients are read (element-wise reading is the fallback if the symbol is missing).
In: a SEAL blob is built here, with compression NONE, from the expected metadata and coefficients that were already
checked to lie below their primes, then handed to SEAL's loader. Layouts (SEAL 4.x) are pinned by tests:

- Ciphertext / PublicKey members: parms_id 4xu64 | is_ntt_form u8 | size u64 | N u64 | L u64 | scale f64 |
  correction factor u64 | DynArray.
- Plaintext / SecretKey members: parms_id 4xu64 | coeff_count u64 | scale f64 | DynArray.
- DynArray: its own 16-byte header (compression NONE) | count u64 | count x u64.
"""

from __future__ import annotations

import ctypes
import struct
import sys
from collections.abc import Sequence

import numpy as np
import tenseal.sealapi as sa

from .backend import load, save
from .errors import BackendError, CryptoFormatError

_HEADER = struct.Struct("<HBBBBHQ")
_MAGIC = 0xA15E
_NONE, _MODE_ZSTD = 0, 2
_CT_META = struct.Struct("<4QBQQQdQ")
_PT_META = struct.Struct("<4QQd")
_COUNT = struct.Struct("<Q")


def _probe_version() -> tuple[int, int]:
    """(major, minor) that this SEAL writes into its headers (read once from a freshly saved object)."""
    blob = save(sa.Plaintext())
    magic, size, major, minor, *_ = _HEADER.unpack_from(blob, 0)
    if magic != _MAGIC or size != 16 or major != 4:
        raise BackendError("unexpected SEAL serialisation header: this SEAL build is not supported")
    return major, minor


_VERSION = _probe_version()


def _load_zstd() -> object | None:
    try:
        lib = ctypes.CDLL(sys.modules[sa.Ciphertext.__module__].__file__)
        fn = lib.ZSTD_decompress
        err = lib.ZSTD_isError
    except (OSError, AttributeError, KeyError, TypeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    err.restype, err.argtypes = ctypes.c_uint, [ctypes.c_size_t]
    return fn, err


_ZSTD_FUNCS = _load_zstd()


def header(total_size: int) -> bytes:
    """A SEAL header with compression NONE for a blob of ``total_size`` bytes (header included)."""
    return _HEADER.pack(_MAGIC, 16, _VERSION[0], _VERSION[1], _NONE, 0, total_size)


def _dyn_array(data: np.ndarray) -> bytes:
    flat = np.ascontiguousarray(data, dtype="<u8").reshape(-1)
    return header(16 + 8 + 8 * flat.size) + _COUNT.pack(flat.size) + flat.tobytes()


def ciphertext_members(parms_id: Sequence[int], data: np.ndarray, scale: float, ntt: bool = True) -> bytes:
    """SEAL's member bytes of a ciphertext/public key with coefficients ``data`` of shape (size, L, N)."""
    size, primes, degree = data.shape
    meta = _CT_META.pack(*parms_id, 1 if ntt else 0, size, degree, primes, float(scale), 1)
    return meta + _dyn_array(data)


def plaintext_members(parms_id: Sequence[int], data: np.ndarray, scale: float) -> bytes:
    """SEAL's member bytes of a plaintext/secret key with coefficients ``data`` of shape (L, N)."""
    return _PT_META.pack(*parms_id, data.size, float(scale)) + _dyn_array(data)


def _wrap(members: bytes) -> bytes:
    return header(16 + len(members)) + members


def below_primes(data: np.ndarray, primes: Sequence[int]) -> bool:
    """True iff ``data[..., j, :] < primes[j]`` everywhere (RNS components in range)."""
    q = np.asarray(primes, dtype=np.uint64).reshape((len(primes), 1))
    return bool(data.dtype == np.uint64 and data.shape[-2] == len(primes) and np.all(data < q))


def _checked(data: np.ndarray, primes: Sequence[int], what: str) -> np.ndarray:
    if not below_primes(data, primes):
        raise CryptoFormatError(f"{what}: coefficients out of range for their primes")
    return data


def to_ciphertext(ctx: sa.SEALContext, parms_id: Sequence[int], data: np.ndarray, primes: Sequence[int],
                  scale: float, ntt: bool = True) -> sa.Ciphertext:
    """A SEAL ciphertext with exactly these coefficients (shape (size, L, N), each < its prime)."""
    _checked(data, primes, "ciphertext")
    ct = sa.Ciphertext()
    _load(ct, ctx, _wrap(ciphertext_members(parms_id, data, scale, ntt)), "ciphertext")
    return ct


def to_public_key(ctx: sa.SEALContext, parms_id: Sequence[int], data: np.ndarray, primes: Sequence[int]) -> sa.PublicKey:
    """A SEAL public key ``(data[0], data[1])`` (shape (2, L, N)) at ``parms_id``."""
    _checked(data, primes, "public key")
    pk = sa.PublicKey()
    _load(pk, ctx, _wrap(ciphertext_members(parms_id, data, 1.0)), "public key")
    return pk


def to_plaintext(ctx: sa.SEALContext, parms_id: Sequence[int], data: np.ndarray, primes: Sequence[int],
                 scale: float) -> sa.Plaintext:
    """A SEAL NTT-form plaintext with exactly these coefficients (shape (L, N))."""
    _checked(data, primes, "plaintext")
    pt = sa.Plaintext()
    _load(pt, ctx, _wrap(plaintext_members(parms_id, data, scale)), "plaintext")
    return pt


def to_secret_key(ctx: sa.SEALContext, parms_id: Sequence[int], data: np.ndarray, primes: Sequence[int]) -> sa.SecretKey:
    """A SEAL secret key (NTT form, shape (L, N)) from its coefficients."""
    _checked(data, primes, "secret key")
    sk = sa.SecretKey()
    _load(sk, ctx, _wrap(plaintext_members(parms_id, data, 1.0)), "secret key")
    return sk


def _load(obj: object, ctx: sa.SEALContext, blob: bytes, what: str) -> None:
    try:
        load(obj, ctx, blob)
    except Exception as exc:  # a validated blob is refused only if the metadata does not fit the context
        raise CryptoFormatError(f"{what}: SEAL refused the metadata ({type(exc).__name__}: {exc})") from None


def _members(obj: object, expected_len: int) -> bytes:
    """The decompressed member bytes of an object this process made."""
    blob = save(obj)
    magic, hsize, major, _, mode, _, size = _HEADER.unpack_from(blob, 0)
    if magic != _MAGIC or hsize != 16 or major != 4 or size != len(blob):
        raise BackendError("SEAL wrote an unexpected header")
    if mode == _NONE:
        return blob[16:]
    if mode != _MODE_ZSTD or _ZSTD_FUNCS is None:
        raise BackendError("SEAL compressed with a mode this module cannot read")
    fn, is_error = _ZSTD_FUNCS  # type: ignore[misc]
    dst = ctypes.create_string_buffer(expected_len + 1)
    got = fn(dst, expected_len + 1, blob[16:], len(blob) - 16)
    if is_error(got) or got != expected_len:
        raise BackendError("SEAL member bytes have an unexpected length")
    return dst.raw[:expected_len]


def _data(members: bytes, offset: int, count: int) -> np.ndarray:
    magic, hsize, major, _, mode, _, size = _HEADER.unpack_from(members, offset)
    (got,) = _COUNT.unpack_from(members, offset + 16)
    if magic != _MAGIC or hsize != 16 or mode != _NONE or got != count or size != 24 + 8 * count:
        raise BackendError("SEAL DynArray header is not the expected one")
    return np.frombuffer(members, dtype="<u8", count=count, offset=offset + 24).astype(np.uint64)


def _elementwise(obj: object, count: int) -> np.ndarray:
    return np.fromiter((int(obj[i]) for i in range(count)), dtype=np.uint64, count=count)  # type: ignore[index]


def ciphertext_data(ct: sa.Ciphertext) -> np.ndarray:
    """Coefficients of a ciphertext (or of ``PublicKey.data()``) this process made: shape (size, L, N)."""
    size, primes, degree = ct.size(), ct.coeff_modulus_size(), ct.poly_modulus_degree()
    count = size * primes * degree
    if _ZSTD_FUNCS is None:
        return _elementwise(ct, count).reshape(size, primes, degree)
    members = _members(ct, _CT_META.size + 24 + 8 * count)
    meta = _CT_META.unpack_from(members, 0)
    if list(meta[:4]) != list(ct.parms_id()) or meta[5:8] != (size, degree, primes):
        raise BackendError("SEAL ciphertext metadata is not the expected one")
    return _data(members, _CT_META.size, count).reshape(size, primes, degree)


def public_key_data(pk: sa.PublicKey) -> np.ndarray:
    """Coefficients of a public key this process made: shape (2, L, N)."""
    return ciphertext_data(pk.data())


def plaintext_data(pt: sa.Plaintext, primes: int) -> np.ndarray:
    """Coefficients of an NTT-form plaintext this process made: shape (L, N)."""
    count = pt.coeff_count()
    if count % primes:
        raise BackendError("plaintext coefficient count is not a multiple of the prime count")
    if _ZSTD_FUNCS is None:
        return _elementwise(pt, count).reshape(primes, count // primes)
    members = _members(pt, _PT_META.size + 24 + 8 * count)
    return _data(members, _PT_META.size, count).reshape(primes, count // primes)


def secret_key_data(sk: sa.SecretKey, primes: int) -> np.ndarray:
    """Coefficients of a secret key (NTT form): shape (L, N). For the client's own storage only."""
    return plaintext_data(sk.data(), primes)
