"""A member's side of t-of-n decryption: its exchange key, the Shamir shares it deals, the threshold key share it
combines from what it receives, and its decryption shares (Lagrange coefficient applied by the member itself, then
fresh smudging; one share per ciphertext digest and per round attempt, ever)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import tenseal.sealapi as sa

from . import scheme
from .backend import backend
from .errors import CryptoFormatError, EpochError, ProtocolStateError, ReplayError, VerificationError
from .polyarith import add_mod_inplace, digest
from .shamir import lagrange_at_zero, mulmod_scalar
from .threshold import ExchangeKey, ThresholdRule, box_context, open_box, seal_box
from .threshold_messages import DealtShares, ShareDealing
from .wire import Reader, Writer

if TYPE_CHECKING:
    from .keys import KeyShare
    from .params import Params


def ciphertext_digest(c1: np.ndarray) -> bytes:
    """Digest of the exact ciphertext part a share multiplies (the re-randomised C1 of an attempt)."""
    return digest(b"decrypted-c1", c1)


class ThresholdMember:
    """Threshold state of one member in one epoch (secrets inside: no repr of them, no pickling)."""

    def __init__(self, rule: ThresholdRule, exchange: ExchangeKey | None) -> None:
        self.rule = rule
        self.exchange = exchange
        self.t = 0
        self.peers: tuple[bytes, ...] = ()  # every member's exchange key, roster order
        self._own_part: np.ndarray | None = None  # f_i(x_i): this member's share of its own secret
        self._share: np.ndarray | None = None  # the threshold key share sum_j f_j(x_i), shape (L, N)
        self.attempts: set[tuple[int, int]] = set()
        self.answered: dict[int, bytes] = {}  # round -> the one round transcript (upload set) shares were given for

    @property
    def ready(self) -> bool:
        """True once the threshold key share is combined."""
        return self._share is not None

    def deal(self, params: Params, key: KeyShare, transcript: bytes, index: int) -> bytes:
        """T1: Shamir-share this member's secret to every member; each other member's share in its own box."""
        if self.exchange is None or not self.peers or self.t == 0:
            raise ProtocolStateError("dealing needs the roster with every member's exchange key")
        if self._own_part is not None or self._share is not None:
            raise ReplayError("this member already dealt its shares in this epoch")
        n = len(self.peers)
        shares = key.shamir_shares(list(range(n)), self.t)
        boxes = []
        for k in range(n):
            if k == index:
                continue
            box_key = self.exchange.box_key(self.peers[k], transcript, index, k)
            plain = np.ascontiguousarray(shares[k], dtype="<u8").tobytes()
            boxes.append((k, seal_box(box_key, box_context(transcript, index, k), plain)))
        self._own_part = np.array(shares[index], copy=True)
        return ShareDealing(index, tuple(boxes)).to_bytes(params)

    def combine(self, params: Params, data: bytes, transcript: bytes, index: int) -> None:
        """T2: open every box addressed to this member and add them to its own part: the threshold key share."""
        if self.exchange is None or self._own_part is None:
            raise ProtocolStateError("combining needs this member's own dealing first")
        dealt = DealtShares.from_bytes(params, data)
        n = len(self.peers)
        if dealt.recipient != index or [s for s, _ in dealt.boxes] != [j for j in range(n) if j != index]:
            raise VerificationError("the dealt shares must hold one box from every other member, for this member")
        acc = np.array(self._own_part, copy=True)
        shape = self._own_part.shape
        for sender, box in dealt.boxes:
            box_key = self.exchange.box_key(self.peers[sender], transcript, sender, index)
            raw = open_box(box_key, box_context(transcript, sender, index), box)
            part = np.frombuffer(raw, dtype="<u8").astype(np.uint64).reshape(shape)
            q = np.asarray(params.data_primes, dtype=np.uint64).reshape(len(params.data_primes), 1)
            if np.any(part >= q):
                raise VerificationError(f"member {sender} dealt a share value out of range")
            add_mod_inplace(acc, part, params.data_primes)
        self._share, self._own_part, self.exchange = acc, None, None

    def has_answered(self, round_number: int) -> bool:
        """True once this member gave a decryption share in ``round_number`` (its upload set is then fixed)."""
        return round_number in self.answered

    def decryption_share(self, params: Params, key: KeyShare, round_number: int, attempt: int, c1: np.ndarray,
                         decrypting: Sequence[int], index: int, members: int, uploads: int, *,
                         transcript: bytes) -> np.ndarray:
        """``lambda_S(index) * k_index * C1_a + E``: refused for a ciphertext or (round, attempt) already answered,
        and for a second round transcript (upload set) of a round: a server never decrypts two sums of one round."""
        if self._share is None:
            raise ProtocolStateError("no threshold key share in this epoch (the dealt shares never arrived)")
        if attempt > members - self.t:  # each failed attempt loses a member of S: an honest server stops at n - t
            raise VerificationError(f"attempt {attempt} of a round: at most {members - self.t + 1} attempts with "
                                    f"{members} members and t = {self.t}")
        d = ciphertext_digest(c1)
        done = self.answered.get(round_number)
        if done is not None and not hmac.compare_digest(done, transcript):
            raise ReplayError(f"shares were already given for another upload set of round {round_number}: refused "
                              "(two sums of one round differ by the updates left out)")
        if (round_number, attempt) in self.attempts:
            raise ReplayError(f"a share was already produced for round {round_number}, attempt {attempt}: refused")
        if any(hmac.compare_digest(d, u) for u in key.used_sets):
            raise ReplayError("a share was already produced for this ciphertext: refused (two shares on one "
                              "ciphertext reveal the key share)")
        if round_number not in key.used_rounds and key.max_shares is not None and \
                len(key.used_rounds) >= key.max_shares:
            raise EpochError(f"this key share already served {key.max_shares} rounds: a new key epoch is required")
        self.attempts.add((round_number, attempt))
        self.answered[round_number] = transcript
        key.used_rounds.add(round_number)
        key.used_sets.add(d)
        lam = lagrange_at_zero(list(decrypting), params.data_primes)[index]
        scaled = mulmod_scalar(self._share, lam, params.data_primes)
        full = np.zeros((len(params.primes), params.poly_modulus_degree), dtype=np.uint64)
        full[: len(params.data_primes)] = scaled
        decryptor = sa.Decryptor(backend(params).ctx_b, scheme.secret_from_data(params, full))
        bits = params.flood_bits(members, uploads, c1.shape[0])
        return scheme.partial_decrypt(params, decryptor, c1, key.take_flood(bits, c1.shape[0]))

    # ---- persistence (the member's own storage) ----
    def write_local(self, w: Writer) -> Writer:
        self.rule.write(w).u32(self.t).u32(len(self.peers))
        for p in self.peers:
            w.raw(p)
        w.u8(0) if self.exchange is None else w.u8(1).raw(self.exchange.private_bytes())
        for a in (self._own_part, self._share):
            w.u8(0) if a is None else w.u8(1).array(a)
        w.u32(len(self.attempts))
        for r, a in sorted(self.attempts):
            w.u64(r).u32(a)
        w.u32(len(self.answered))
        for r, t in sorted(self.answered.items()):
            w.u64(r).raw(t)
        return w

    @classmethod
    def read_local(cls, params: Params, r: Reader) -> ThresholdMember:
        rule = ThresholdRule.read(r)
        t, n = r.u32(), r.u32()
        peers = tuple(r.raw(32) for _ in range(n))

        def flag() -> bool:
            f = r.u8()
            if f not in (0, 1):
                raise CryptoFormatError("local threshold state: malformed flag")
            return bool(f)

        exchange = ExchangeKey.from_private_bytes(r.raw(32)) if flag() else None
        own = cls(rule, exchange)
        own.t, own.peers = t, peers
        shape = (len(params.data_primes), params.poly_modulus_degree)
        own._own_part = r.array(shape, params.data_primes) if flag() else None
        own._share = r.array(shape, params.data_primes) if flag() else None
        own.attempts = {(r.u64(), r.u32()) for _ in range(r.u32())}
        own.answered = {r.u64(): r.raw(32) for _ in range(r.u32())}
        return own

    def __repr__(self) -> str:
        return f"ThresholdMember(t={self.t}, members={len(self.peers)}, ready={self.ready})"

    def __reduce__(self) -> object:
        raise TypeError("ThresholdMember holds secrets and cannot be pickled; use the epoch's export_local")
