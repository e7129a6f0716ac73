"""Key epoch: a client's key share (secret kept inside), its public share, and the aggregated public key."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import tenseal.sealapi as sa

from .backend import backend, load, save, second_components_equal
from .crs import CrsSeed, crs_material
from .errors import CryptoFormatError, EpochError, ParameterError
from .params import Params
from .wire import Kind, Reader, Writer, check_seal_blob, guarded, open_envelope, seal

if TYPE_CHECKING:
    from .decryption import DecryptionRequest, DecryptionShare
    from .encryption import EncryptedVector

MAX_PARTICIPANTS = 100_000


def _key_blob_limit(params: Params) -> int:
    return 2 * params.poly_modulus_degree * (len(params.data_bits) + 1) * 8 + 4096


def _is_zero_c1(be_eval: sa.Evaluator, ct: sa.Ciphertext, a0: sa.Ciphertext) -> bool:
    """True if ``ct`` has second component exactly ``a`` (i.e. ``ct − (0, a)`` is transparent)."""
    return second_components_equal(be_eval, ct, a0)


@dataclass(frozen=True, eq=False)
class PublicKeyShare:
    """``(b_i, a)`` with ``b_i = −(a·s_i + e_i)``: what a client publishes for the epoch."""

    params: Params
    crs: CrsSeed
    ciphertext: sa.Ciphertext = field(repr=False)
    _blob: bytes = field(repr=False)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the share's SEAL bytes: names the participant within the epoch."""
        return hashlib.sha256(self._blob).digest()

    def to_bytes(self) -> bytes:
        """Wire form."""
        body = Writer().blob(self.crs.run_id.encode()).u64(self.crs.epoch).blob(self._blob).getvalue()
        return seal(Kind.PUBLIC_SHARE, self.params, body)

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> "PublicKeyShare":
        """Parse and validate (level, size, NTT form, ``a`` equal to the CRS polynomial)."""
        r = Reader(open_envelope(Kind.PUBLIC_SHARE, params, data), "public key share")
        crs = _read_crs(r)
        blob = check_seal_blob(r.blob(_key_blob_limit(params)), "public key share")
        r.done()
        be = backend(params)
        ct = sa.Ciphertext()
        guarded("public key share", lambda: load(ct, be.ctx_b, blob))
        if ct.parms_id() != be.key_parms_id or ct.size() != 2 or not ct.is_ntt_form() or ct.scale != 1.0:
            raise CryptoFormatError("public key share: wrong level, size, form or scale for these parameters")
        a0 = crs_material(params, crs).a0
        if not guarded("public key share", lambda: _is_zero_c1(be.eval_b, ct, a0)):
            raise CryptoFormatError("public key share: not built on this epoch's CRS polynomial a")
        return cls(params, crs, ct, blob)


def _scratch_path_for_secret() -> str:
    """A fresh 0600 file in the RAM-backed scratch folder: SEAL serialises keys only through files."""
    from .backend import _scratch_path

    path = _scratch_path()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    return path


def _read_crs(r: Reader) -> CrsSeed:
    try:
        run_id = r.blob(256).decode()
    except UnicodeDecodeError:
        raise CryptoFormatError("run id is not UTF-8") from None
    epoch = r.u64()
    if epoch >= 2**63:
        raise CryptoFormatError("epoch out of range")
    return CrsSeed(run_id, epoch)


def epoch_id_of(crs: CrsSeed, share_digests: Sequence[bytes]) -> bytes:
    """16-byte identity of a key epoch: the CRS and the sorted participants' public-share digests."""
    h = hashlib.sha256(b"bastionfl/xmkckks/epoch/v1\x00" + crs.digest + len(share_digests).to_bytes(4, "little"))
    for d in sorted(share_digests):
        h.update(d)
    return h.digest()[:16]


@dataclass(frozen=True, eq=False)
class AggregatedPublicKey:
    """``pk~ = (Σ b_i, a)``: the public key of ``s~ = Σ s_i`` under which every client encrypts in the epoch."""

    params: Params
    crs: CrsSeed
    share_digests: tuple[bytes, ...]
    public_key: sa.PublicKey = field(repr=False)

    @property
    def participants(self) -> int:
        """Number of key shares in the epoch: decryption needs a share from each."""
        return len(self.share_digests)

    @property
    def epoch_id(self) -> bytes:
        """Identity of the key epoch (CRS + participants)."""
        return epoch_id_of(self.crs, self.share_digests)

    @classmethod
    def aggregate(cls, params: Params, crs: CrsSeed, shares: Sequence[PublicKeyShare]) -> "AggregatedPublicKey":
        """Sum the public shares (server side); refuses shares of another CRS, duplicates, or an empty set."""
        if not shares:
            raise ParameterError("no public key shares to aggregate")
        be = backend(params)
        mat = crs_material(params, crs)
        digests = []
        for s in shares:
            if s.params != params or s.crs != crs:
                raise EpochError("a public key share belongs to another parameter set or CRS (key epoch)")
            if not _is_zero_c1(be.eval_b, s.ciphertext, mat.a0):
                raise CryptoFormatError("a public key share is not built on this epoch's CRS polynomial a")
            digests.append(s.digest)
        if len(set(digests)) != len(digests):
            raise ParameterError("duplicate public key share")
        acc = sa.Ciphertext()
        if len(shares) == 1:
            be.eval_b.add_plain(shares[0].ciphertext, be.c0(mat.a0), acc)  # copy (B9: no copy constructor)
        else:
            be.eval_b.add_many([s.ciphertext for s in shares], acc)  # (Σ b_i, n·a)
        for _ in range(len(shares) - 1):
            be.eval_b.sub_inplace(acc, mat.a0)  # (Σ b_i, a)
        tmp = sa.Ciphertext()
        be.eval_b.negate(acc, tmp)
        pk = sa.PublicKey()
        be.eval_b.negate(tmp, pk.data())  # writes into the key through the mutable reference (B2)
        if pk.parms_id() != be.key_parms_id:
            raise RuntimeError("aggregated key landed at an unexpected level")
        return cls(params, crs, tuple(sorted(digests)), pk)

    def to_bytes(self) -> bytes:
        """Wire form: CRS, participants' share digests, SEAL public key."""
        w = Writer().blob(self.crs.run_id.encode()).u64(self.crs.epoch).u32(len(self.share_digests))
        for d in self.share_digests:
            w.raw(d)
        return seal(Kind.AGGREGATED_KEY, self.params, w.blob(save(self.public_key)).getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> "AggregatedPublicKey":
        """Parse and validate: level, CRS polynomial ``a`` and sorted distinct digests."""
        r = Reader(open_envelope(Kind.AGGREGATED_KEY, params, data), "aggregated public key")
        crs = _read_crs(r)
        count = r.u32()
        if not 1 <= count <= MAX_PARTICIPANTS:
            raise CryptoFormatError("aggregated public key: participant count out of range")
        digests = tuple(r.raw(32) for _ in range(count))
        if list(digests) != sorted(set(digests)):
            raise CryptoFormatError("aggregated public key: digests not sorted and distinct")
        blob = check_seal_blob(r.blob(_key_blob_limit(params)), "aggregated public key")
        r.done()
        be = backend(params)
        pk = sa.PublicKey()
        guarded("aggregated public key", lambda: load(pk, be.ctx_a, blob))
        data = pk.data()
        if pk.parms_id() != be.key_parms_id or data.size() != 2 or not data.is_ntt_form() or data.scale != 1.0:
            raise CryptoFormatError("aggregated public key: wrong level, size, form or scale for these parameters")
        a0 = crs_material(params, crs).a0
        if not guarded("aggregated public key", lambda: _is_zero_c1(be.eval_b, data, a0)):
            raise CryptoFormatError("aggregated public key: not built on this epoch's CRS polynomial a")
        return cls(params, crs, digests, pk)


class KeyShare:
    """A client's secret key share for one epoch. The secret never leaves this object: no serialisation, no repr."""

    def __init__(
        self,
        params: Params,
        crs: CrsSeed,
        secret: sa.SecretKey,
        public: PublicKeyShare,
        max_shares: int | None = None,
    ) -> None:
        self.params = params
        self.crs = crs
        self.__secret = secret
        self._decryptor = sa.Decryptor(backend(params).ctx_b, secret)
        self._public = public
        self.epoch_id: bytes | None = None
        self.participants: int | None = None
        self.used_rounds: set[int] = set()
        self.used_sets: set[bytes] = set()
        self.max_shares = max_shares
        self._prepared: list[sa.Plaintext] = []

    @classmethod
    def generate(cls, params: Params, crs: CrsSeed, max_shares: int | None = None) -> "KeyShare":
        """Fresh ternary secret from SEAL's unseeded PRNG and its public share ``(−(a·s_i + e_i), a)``.

        ``max_shares`` (optional) caps the decryption shares this key produces: the client's own K-round rotation.
        """
        be = backend(params)
        z = crs_material(params, crs).z
        secret = sa.KeyGenerator(be.ctx_b).secret_key()
        dec = sa.Decryptor(be.ctx_b, secret)
        x = sa.Plaintext()
        dec.decrypt(z, x)  # z0 + a·s_i
        pk = sa.Ciphertext()
        be.eval_b.sub_plain(z, x, pk)  # (−a·s_i, a)
        noise_ct = sa.Ciphertext()
        sa.Encryptor(be.ctx_b, secret).encrypt_zero_symmetric(z.parms_id(), noise_ct)
        e = sa.Plaintext()
        dec.decrypt(noise_ct, e)  # −e_i: fresh SEAL error, std 3.2
        be.eval_b.add_plain_inplace(pk, e)
        return cls(params, crs, secret, PublicKeyShare(params, crs, pk, save(pk)), max_shares)

    def public_share(self) -> PublicKeyShare:
        """The share to send to the server."""
        return self._public

    def accept(self, apk: AggregatedPublicKey) -> None:
        """Bind to the epoch's aggregated key after checking it contains this client's share and CRS."""
        if apk.params != self.params or apk.crs != self.crs:
            raise EpochError("aggregated key of another parameter set or key epoch")
        if not any(hmac.compare_digest(d, self._public.digest) for d in apk.share_digests):
            raise EpochError("aggregated key does not include this client's public share")
        self.epoch_id = apk.epoch_id
        self.participants = apk.participants

    def prepare_smudging(self, count: int) -> None:
        """Sample ``count`` smudging plaintexts ahead of time (e.g. right after uploading): each is used once.

        Moves the noise sampling off the decrypt stage's critical path; nothing about the noise is published.
        """
        from .noise import smudging_plaintext

        be = backend(self.params)
        n, std = self.params.poly_modulus_degree, self.params.smudging_std
        for _ in range(count):
            self._prepared.append(smudging_plaintext(be.encoder_b, n, be.data_parms_id, self.params.scale, std))

    def take_smudging(self) -> sa.Plaintext | None:
        """One prepared smudging plaintext (removed from the pool), or None."""
        return self._prepared.pop() if self._prepared else None

    def _secret_decrypt(self, ct: sa.Ciphertext) -> sa.Plaintext:
        out = sa.Plaintext()
        self._decryptor.decrypt(ct, out)
        return out

    def __repr__(self) -> str:
        return f"KeyShare(params={self.params.name!r}, epoch={self.crs.epoch}, public={self._public.digest[:6].hex()}…)"

    def __reduce__(self) -> object:
        raise TypeError("KeyShare holds a secret and cannot be pickled or copied")

    def decryption_share(self, request: "DecryptionRequest", own: "EncryptedVector | bytes") -> "DecryptionShare":
        """Check the request (C1 = Σ c1_j, own c1 included, epoch, no replay), then return a smudged share.

        ``own`` is this client's uploaded ``EncryptedVector`` or just its ``c1_digest()`` (what a client that
        restarted between upload and decryption still has).
        """
        from .decryption import make_share

        return make_share(self, request, own)

    def export_local(self) -> bytes:
        """This key share, secret included, for the client's OWN storage between protocol steps.

        For a node whose protocol steps run in separate processes (Flower's ClientApps); the bytes must stay on
        the client (they are the secret). Carries the epoch binding and the replay record, so a reloaded share
        still refuses a second decryption for the same round or ciphertext set.
        """
        path = _scratch_path_for_secret()
        try:
            self.__secret.save(path)
            with open(path, "rb") as fh:
                secret_blob = fh.read()
        finally:
            os.unlink(path)
        w = Writer().blob(self.crs.run_id.encode()).u64(self.crs.epoch).blob(secret_blob).blob(self._public._blob)
        w.raw(self.epoch_id or bytes(16)).u8(1 if self.epoch_id else 0).u32(self.participants or 0)
        w.u64(self.max_shares if self.max_shares is not None else 2**64 - 1)
        w.u32(len(self.used_rounds))
        for r in sorted(self.used_rounds):
            w.u64(r)
        w.blobs(sorted(self.used_sets))
        return seal(Kind.LOCAL_KEY_STATE, self.params, w.getvalue())

    @classmethod
    def import_local(cls, params: Params, data: bytes) -> "KeyShare":
        """Inverse of :meth:`export_local` (``CryptoFormatError`` on any defect)."""
        r = Reader(open_envelope(Kind.LOCAL_KEY_STATE, params, data), "local key state")
        crs = _read_crs(r)
        secret_blob = check_seal_blob(r.blob(_key_blob_limit(params)), "local key state")
        public_blob = check_seal_blob(r.blob(_key_blob_limit(params)), "local key state")
        epoch_id, bound, participants = r.raw(16), r.u8(), r.u32()
        max_shares = r.u64()
        used_rounds = {r.u64() for _ in range(r.u32())}
        used_sets = set(r.blobs(1 << 20, 32))
        r.done()
        be = backend(params)
        secret = sa.SecretKey()
        guarded("local key state", lambda: load(secret, be.ctx_b, secret_blob))
        if secret.parms_id() != be.ctx_b.key_parms_id() or used_rounds and max(used_rounds) >= 2**63:
            raise CryptoFormatError("local key state: secret key at the wrong level, or a bad replay record")
        public = sa.Ciphertext()
        guarded("local key state", lambda: load(public, be.ctx_b, public_blob))
        if public.parms_id() != be.key_parms_id or public.size() != 2 or public.scale != 1.0:
            raise CryptoFormatError("local key state: public share at the wrong level, size or scale")
        a0 = crs_material(params, crs).a0
        if not guarded("local key state", lambda: _is_zero_c1(be.eval_b, public, a0)):
            raise CryptoFormatError("local key state: public share not built on the CRS polynomial a")
        if bound not in (0, 1) or any(len(d) != 32 for d in used_sets):
            raise CryptoFormatError("local key state: malformed epoch binding or replay record")
        key = cls(params, crs, secret, PublicKeyShare(params, crs, public, public_blob),
                  None if max_shares == 2**64 - 1 else max_shares)
        if bound:
            key.epoch_id, key.participants = epoch_id, participants
        key.used_rounds, key.used_sets = used_rounds, used_sets
        return key

