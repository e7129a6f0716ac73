"""Server-side homomorphic sum, streaming: one update in memory at a time plus the running sum (numpy, mod q)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import tenseal.sealapi as sa

from . import sealraw
from .backend import backend
from .encryption import EncryptedVector, require_epoch
from .errors import (
    CryptoError,
    IncompleteShareSetError,
    ParameterError,
    VerificationError,
)
from .keys import AggregatedPublicKey
from .params import Params
from .polyarith import add_mod_inplace

if TYPE_CHECKING:
    from .decryption import DecryptionRequest


@dataclass(eq=False)
class Aggregate:
    """The summed ciphertexts ``C = sum ct_j`` of one round, every participant's c1 for the honest-but-curious
    request, and the sum of the bounds the clients declared (for the range check of the decoded result)."""

    params: Params
    epoch_id: bytes
    participants: int
    share_digests: tuple[bytes, ...]
    length: int
    data: np.ndarray = field(repr=False)  # (k, 2, L, N)
    components: list[np.ndarray] = field(repr=False)  # c1 of each update, (k, L, N)
    bound_total: float = 0.0
    transcripts: dict[int, bytes] = field(default_factory=dict, repr=False)

    @property
    def ciphertexts(self) -> list[sa.Ciphertext]:
        """The aggregate as SEAL ciphertexts (built from the coefficients)."""
        be = backend(self.params)
        return [
            sealraw.to_ciphertext(be.ctx_a, be.data_parms_id, ct, self.params.data_primes, self.params.scale)
            for ct in self.data
        ]

    def decryption_request(self, round_number: int) -> DecryptionRequest:
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
        self._sum: np.ndarray | None = None
        self._length: int | None = None
        self._components: list[np.ndarray] = []
        self._digests: set[bytes] = set()
        self._bound = 0.0

    @property
    def count(self) -> int:
        """Updates added so far."""
        return len(self._components)

    def add(self, update: EncryptedVector) -> None:
        """Add one update to the running sum (validates epoch, length, shape and the declared bound first)."""
        require_epoch(update.epoch_id, self.apk.epoch_id, "encrypted update")
        if update.params != self.params:
            raise ParameterError("encrypted update of another parameter set")
        if self._length is not None and update.length != self._length:
            raise ParameterError(f"update length {update.length} differs from the round's {self._length}")
        if self.count >= self.apk.participants:
            raise VerificationError("more updates than participants in the key epoch")
        digest = update.c1_digest()
        if digest in self._digests:
            raise VerificationError("the same ciphertexts were added twice")
        self.params.check_sum_fits(1, self._bound + update.bound)
        if self._sum is None:
            self._sum = np.array(update.data, dtype=np.uint64, copy=True)
            self._length = update.length
        else:
            add_mod_inplace(self._sum, update.data, self.params.data_primes)
        self._bound += update.bound
        self._digests.add(digest)
        self._components.append(update.c1())

    def result(self) -> Aggregate:
        """The round's aggregate; requires one update from every participant of the epoch (N-of-N)."""
        if self._sum is None or self.count != self.apk.participants:
            raise IncompleteShareSetError(
                f"aggregate has {self.count} of {self.apk.participants} participants' updates"
            )
        if self._length is None:
            raise CryptoError("aggregate without a length")
        return Aggregate(
            self.params,
            self.apk.epoch_id,
            self.apk.participants,
            self.apk.share_digests,
            self._length,
            self._sum,
            list(self._components),
            self._bound,
        )
