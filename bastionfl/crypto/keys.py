"""Key epoch: a client's key share (secret kept inside), its public share, and the aggregated public key.

This is the honest-but-curious building block (``KeyShare.accept`` trusts the server to have summed the right
shares); the malicious settings verify the aggregated key in ``client_epoch`` before using the same objects.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import tenseal.sealapi as sa

from . import scheme
from .backend import backend
from .crs import CrsSeed
from .errors import CryptoFormatError, EpochError, ParameterError, ReplayError
from .params import Params
from .polyarith import digest, sum_mod
from .wire import Kind, Reader, Writer, open_envelope, seal

if TYPE_CHECKING:
    from .decryption import DecryptionRequest, DecryptionShare
    from .encryption import EncryptedVector

MAX_PARTICIPANTS = 100_000
_NO_CAP = 2**64 - 1


def key_shape(params: Params) -> tuple[int, int]:
    """Shape of a public share or aggregated ``b~``: (data primes + special prime, N)."""
    return (len(params.key_primes), params.poly_modulus_degree)


def write_crs(w: Writer, crs: CrsSeed) -> Writer:
    """Append a CRS seed (run id, epoch) to a body."""
    return w.blob(crs.run_id.encode()).u64(crs.epoch)


def read_crs(r: Reader) -> CrsSeed:
    """Read a CRS seed written by :func:`write_crs`."""
    try:
        run_id = r.blob(256).decode()
    except UnicodeDecodeError:
        raise CryptoFormatError("run id is not UTF-8") from None
    epoch = r.u64()
    if epoch >= 2**63:
        raise CryptoFormatError("epoch out of range")
    return CrsSeed(run_id, epoch)


@dataclass(frozen=True, eq=False)
class PublicKeyShare:
    """``b_i = -(a s_i + e_i)``: what a client publishes for the epoch (``a`` is the CRS polynomial)."""

    params: Params
    crs: CrsSeed
    b: np.ndarray = field(repr=False)

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of the share's coefficients: names the participant within the epoch."""
        return digest(b"public-share", self.b)

    @property
    def ciphertext(self) -> sa.Ciphertext:
        """``(b_i, a)`` as a SEAL ciphertext of the helper context (key level)."""
        be = backend(self.params)
        data = np.stack([self.b, scheme.crs_polynomial(self.params, self.crs)])
        from .sealraw import to_ciphertext

        return to_ciphertext(be.ctx_b, be.key_parms_id, data, self.params.key_primes, 1.0)

    def to_bytes(self) -> bytes:
        """Wire form: CRS seed and the coefficients of ``b_i``."""
        return seal(Kind.PUBLIC_SHARE, self.params, write_crs(Writer(), self.crs).array(self.b).getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> PublicKeyShare:
        """Parse and validate (every coefficient below its prime)."""
        r = Reader(open_envelope(Kind.PUBLIC_SHARE, params, data), "public key share")
        crs = read_crs(r)
        b = r.array(key_shape(params), params.key_primes)
        r.done()
        return cls(params, crs, b)


def epoch_id_of(crs: CrsSeed, share_digests: Sequence[bytes]) -> bytes:
    """16-byte identity of a key epoch: the CRS and the sorted participants' public-share digests."""
    h = hashlib.sha256(b"bastionfl/xmkckks/epoch/v1\x00" + crs.digest + len(share_digests).to_bytes(4, "little"))
    for d in sorted(share_digests):
        h.update(d)
    return h.digest()[:16]


@dataclass(frozen=True, eq=False)
class AggregatedPublicKey:
    """``pk~ = (sum b_i, a)``: the public key of ``s~ = sum s_i`` under which every client encrypts in the epoch."""

    params: Params
    crs: CrsSeed
    share_digests: tuple[bytes, ...]
    b_tilde: np.ndarray = field(repr=False)

    @property
    def participants(self) -> int:
        """Number of key shares in the epoch: decryption needs a share from each."""
        return len(self.share_digests)

    @property
    def epoch_id(self) -> bytes:
        """Identity of the key epoch (CRS + participants)."""
        return epoch_id_of(self.crs, self.share_digests)

    @cached_property
    def public_key(self) -> sa.PublicKey:
        """The key as a SEAL ``PublicKey`` of the scheme context (key level)."""
        return scheme.key_level_public_key(self.params, self.crs, self.b_tilde)

    @cached_property
    def encryptor(self) -> sa.Encryptor:
        """SEAL encryptor under this key at the data level (built once)."""
        return scheme.encryptor(self.params, self.crs, self.b_tilde)

    @classmethod
    def aggregate(cls, params: Params, crs: CrsSeed, shares: Sequence[PublicKeyShare]) -> AggregatedPublicKey:
        """Sum the public shares (server side); refuses shares of another CRS, duplicates, or an empty set."""
        if not shares:
            raise ParameterError("no public key shares to aggregate")
        for s in shares:
            if s.params != params or s.crs != crs:
                raise EpochError("a public key share belongs to another parameter set or CRS (key epoch)")
        digests = [s.digest for s in shares]
        if len(set(digests)) != len(digests):
            raise ParameterError("duplicate public key share")
        return cls(params, crs, tuple(sorted(digests)), sum_mod((s.b for s in shares), params.key_primes))

    def to_bytes(self) -> bytes:
        """Wire form: CRS, participants' share digests, coefficients of ``b~``."""
        w = write_crs(Writer(), self.crs).u32(len(self.share_digests))
        for d in self.share_digests:
            w.raw(d)
        return seal(Kind.AGGREGATED_KEY, self.params, w.array(self.b_tilde).getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> AggregatedPublicKey:
        """Parse and validate: sorted distinct digests, every coefficient below its prime."""
        r = Reader(open_envelope(Kind.AGGREGATED_KEY, params, data), "aggregated public key")
        crs = read_crs(r)
        count = r.u32()
        if not 1 <= count <= MAX_PARTICIPANTS:
            raise CryptoFormatError("aggregated public key: participant count out of range")
        digests = tuple(r.raw(32) for _ in range(count))
        if list(digests) != sorted(set(digests)):
            raise CryptoFormatError("aggregated public key: digests not sorted and distinct")
        b_tilde = r.array(key_shape(params), params.key_primes)
        r.done()
        return cls(params, crs, digests, b_tilde)


class KeyShare:
    """A client's secret key share for one epoch. The secret never leaves this object except through
    :meth:`export_local` (the client's own storage): no repr, no pickling, never in a message."""

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
        self.used_sets: set[bytes] = set()  # digests of the c1 lists and of the aggregate C1 already shared
        self.max_shares = max_shares
        self._prepared: list[tuple[int, np.ndarray]] = []

    @classmethod
    def generate(cls, params: Params, crs: CrsSeed, max_shares: int | None = None) -> KeyShare:
        """Fresh ternary secret from SEAL's unseeded PRNG and its public share ``-(a s_i + e_i)``.

        ``max_shares`` (optional) caps the decryption shares this key produces: the client's own K-round rotation.
        """
        secret = scheme.generate_secret(params)
        return cls(params, crs, secret, PublicKeyShare(params, crs, scheme.public_share(params, crs, secret)), max_shares)

    def public_share(self) -> PublicKeyShare:
        """The share to send to the server."""
        return self._public

    def accept(self, apk: AggregatedPublicKey) -> None:
        """Bind to the epoch's aggregated key after checking it contains this client's share and CRS.

        Honest-but-curious only: whether ``b~`` really is the sum of the listed shares is the server's word.
        """
        if apk.params != self.params or apk.crs != self.crs:
            raise EpochError("aggregated key of another parameter set or key epoch")
        if not any(hmac.compare_digest(d, self._public.digest) for d in apk.share_digests):
            raise EpochError("aggregated key does not include this client's public share")
        self.bind(apk.epoch_id, apk.participants)

    def bind(self, epoch_id: bytes, participants: int) -> None:
        """Record the epoch this key answers for (after the caller verified the aggregated key)."""
        self.epoch_id = bytes(epoch_id)
        self.participants = int(participants)

    def prepare_smudging(self, count: int) -> None:
        """Sample the floods of a share of ``count`` ciphertexts ahead of time (e.g. right after uploading).

        Moves the noise sampling off the decrypt stage's critical path; each flood is used once, never published.
        """
        from .flood import sample_flood

        if self.participants is None:
            raise EpochError("accept the aggregated key before preparing smudging (its size depends on the epoch)")
        bits = self.params.flood_bits(self.participants, self.participants, count)
        self._prepared.append((bits, sample_flood(self.params, bits, count)))

    def take_flood(self, bits: int, count: int) -> np.ndarray:
        """A prepared flood of this size (removed from the pool), else a fresh one."""
        from .flood import sample_flood

        for i, (b, flood) in enumerate(self._prepared):
            if b == bits and flood.shape[0] == count:
                return self._prepared.pop(i)[1]
        return sample_flood(self.params, bits, count)

    def partial_decrypt(self, c1: np.ndarray, members: int, uploads: int) -> np.ndarray:
        """``s_i C1 + E`` for a verified aggregate ``C1`` (shape (k, L, N)); the flood is sized for the epoch."""
        bits = self.params.flood_bits(members, uploads, c1.shape[0])
        return scheme.partial_decrypt(self.params, self._decryptor, c1, self.take_flood(bits, c1.shape[0]))

    def shamir_shares(self, members: Sequence[int], threshold: int) -> np.ndarray:
        """Shamir shares of this secret's data-prime rows for each member index (t-of-n key setup): (n, L, N).

        Each share goes to its member sealed under their pairwise key; decryption needs only the data primes."""
        from .shamir import deal

        rows = scheme.secret_data(self.params, self.__secret)[: len(self.params.data_primes)]
        return deal(np.ascontiguousarray(rows), self.params.data_primes, members, threshold)

    def check_share_allowed(self, round_number: int, aggregate_digests: Sequence[bytes]) -> None:
        """``EpochError`` at the share cap (rotate the epoch); ``ReplayError`` for a round or aggregate already used."""
        if self.max_shares is not None and len(self.used_rounds) >= self.max_shares:
            raise EpochError(f"this key share already produced {self.max_shares} shares: a new key epoch is required")
        if round_number in self.used_rounds:
            raise ReplayError(f"a share was already produced for round {round_number}: refused")
        if any(d in self.used_sets for d in aggregate_digests):
            raise ReplayError("a share was already produced for this ciphertext set or aggregate: refused")

    def record_share(self, round_number: int, aggregate_digests: Sequence[bytes]) -> None:
        """Remember a share given (store the export afterwards, or a restart forgets it)."""
        self.used_rounds.add(round_number)
        self.used_sets.update(aggregate_digests)

    def __repr__(self) -> str:
        return f"KeyShare(params={self.params.name!r}, epoch={self.crs.epoch}, public={self._public.digest[:6].hex()}…)"

    def __reduce__(self) -> object:
        raise TypeError("KeyShare holds a secret and cannot be pickled or copied")

    def decryption_share(self, request: DecryptionRequest, own: EncryptedVector | bytes) -> DecryptionShare:
        """Check the request (C1 = sum c1_j, own c1 included, epoch, no replay), then return a smudged share.

        ``own`` is this client's uploaded ``EncryptedVector`` or just its ``c1_digest()`` (what a client that
        restarted between upload and decryption still has).
        """
        from .decryption import make_share

        return make_share(self, request, own)

    def _body(self) -> Writer:
        w = write_crs(Writer(), self.crs).array(scheme.secret_data(self.params, self.__secret)).array(self._public.b)
        w.raw(self.epoch_id or bytes(16)).u8(1 if self.epoch_id else 0).u32(self.participants or 0)
        w.u64(self.max_shares if self.max_shares is not None else _NO_CAP)
        w.u32(len(self.used_rounds))
        for r in sorted(self.used_rounds):
            w.u64(r)
        return w.blobs(sorted(self.used_sets))

    def export_local(self) -> bytes:
        """This key share, secret included, for the client's OWN storage between protocol steps.

        For a node whose protocol steps run in separate processes (Flower's ClientApps); the bytes must stay on
        the client (they are the secret). Carries the epoch binding and the replay record, so a reloaded share
        still refuses a second decryption for the same round or ciphertext set.
        """
        return seal(Kind.LOCAL_KEY_STATE, self.params, self._body().getvalue())

    @classmethod
    def read_local(cls, params: Params, r: Reader) -> KeyShare:
        """Read the body written by :meth:`export_local` from a reader (also used inside larger local states)."""
        crs = read_crs(r)
        secret_data = r.array((len(params.primes), params.poly_modulus_degree), params.primes)
        b = r.array(key_shape(params), params.key_primes)
        epoch_id, bound, participants = r.raw(16), r.u8(), r.u32()
        max_shares = r.u64()
        used_rounds = {r.u64() for _ in range(r.u32())}
        used_sets = set(r.blobs(1 << 20, 32))
        if bound not in (0, 1) or any(len(d) != 32 for d in used_sets) or any(x >= 2**63 for x in used_rounds):
            raise CryptoFormatError("local key state: malformed epoch binding or replay record")
        key = cls(params, crs, scheme.secret_from_data(params, secret_data), PublicKeyShare(params, crs, b),
                  None if max_shares == _NO_CAP else max_shares)
        if bound:
            key.epoch_id, key.participants = epoch_id, participants
        key.used_rounds, key.used_sets = used_rounds, used_sets
        return key

    def write_local(self, w: Writer) -> Writer:
        """Append this key's local state to a larger local state body."""
        return w.raw(self._body().getvalue())

    @classmethod
    def import_local(cls, params: Params, data: bytes) -> KeyShare:
        """Inverse of :meth:`export_local` (``CryptoFormatError`` on any defect)."""
        r = Reader(open_envelope(Kind.LOCAL_KEY_STATE, params, data), "local key state")
        key = cls.read_local(params, r)
        r.done()
        return key
