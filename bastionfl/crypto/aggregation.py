"""Server-side homomorphic sum, streaming: one update in memory at a time plus the running sum."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import tenseal.sealapi as sa

from .backend import backend
from .encryption import EncryptedVector, check_ciphertext, require_epoch
from .errors import CryptoError, ParameterError, VerificationError
from .keys import AggregatedPublicKey
from .params import Params

if TYPE_CHECKING:
    from .decryption import DecryptionRequest


@dataclass(eq=False)
class Aggregate:
    """The summed ciphertexts ``C = Σ ct_j`` of one round, with every participant's c1 list for verification."""

    params: Params
    epoch_id: bytes
    participants: int
    share_digests: tuple[bytes, ...]
    length: int
    ciphertexts: list[sa.Ciphertext] = field(repr=False)
    components: list[list[bytes]] = field(repr=False)
    transcripts: dict[int, bytes] = field(default_factory=dict, repr=False)

    def decryption_request(self, round_number: int) -> "DecryptionRequest":
        """What the server sends every client in the decrypt stage of ``round_number``."""
        from .decryption import DecryptionRequest

        return DecryptionRequest.build(self, round_number)


class StreamingAggregator:
    """Adds one client's ``EncryptedVector`` at a time; refuses other epochs, lengths and duplicates."""

    def __init__(self, params: Params, apk: AggregatedPublicKey) -> None:
        if apk.params != params:
            raise ParameterError("aggregated key of another parameter set")
        self.params = params
        self.apk = apk
        self._sum: list[sa.Ciphertext] | None = None
        self._length: int | None = None
        self._components: list[list[bytes]] = []
        self._digests: set[bytes] = set()

    @property
    def count(self) -> int:
        """Updates added so far."""
        return len(self._components)

    def add(self, update: EncryptedVector) -> None:
        """Add one update to the running sum (validates epoch, length, level and scale first)."""
        require_epoch(update.epoch_id, self.apk.epoch_id, "encrypted update")
        if update.params != self.params:
            raise ParameterError("encrypted update of another parameter set")
        if self._length is not None and update.length != self._length:
            raise ParameterError(f"update length {update.length} differs from the round's {self._length}")
        if self.count >= self.apk.participants:
            raise VerificationError("more updates than participants in the key epoch")
        for ct in update.ciphertexts:
            check_ciphertext(self.params, ct, "encrypted update")
        blobs = update.c1_blobs()
        digest = update.c1_digest()
        if digest in self._digests:
            raise VerificationError("the same ciphertexts were added twice")
        ev = backend(self.params).eval_a
        if self._sum is None:
            self._sum = []
            for ct in update.ciphertexts:
                neg, acc = sa.Ciphertext(), sa.Ciphertext()
                ev.negate(ct, neg)
                ev.negate(neg, acc)  # a copy: no copy constructor is bound (B9); the caller's update stays intact
                self._sum.append(acc)
            self._length = update.length
        else:
            for acc, ct in zip(self._sum, update.ciphertexts):
                ev.add_inplace(acc, ct)
        self._digests.add(digest)
        self._components.append(blobs)

    def result(self) -> Aggregate:
        """The round's aggregate; requires one update from every participant of the epoch (N-of-N)."""
        if self._sum is None or self.count != self.apk.participants:
            raise CryptoError(f"aggregate has {self.count} of {self.apk.participants} participants' updates")
        assert self._length is not None
        return Aggregate(
            self.params,
            self.apk.epoch_id,
            self.apk.participants,
            self.apk.share_digests,
            self._length,
            self._sum,
            list(self._components),
        )

