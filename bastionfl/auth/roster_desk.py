"""The Home Authority's roster desk: endorsement keys of this run's sessions, endorsed epoch keys, signed rosters.

The HA composes one desk; ``HomeAuthority.confirm`` hands it each admitted session's endorsement key under the
session's opaque handle. Everything here is keyed by the FL server's identity (from its authenticated channel),
so one server cannot register keys into another's rosters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from .errors import AuthError, MalformedInput
from .roster import VK_LEN, SignedRoster, verify_endorsement
from .store import HAStore

__all__ = ["RosterDesk"]

MIN_ROSTER = 2  # below two members an "aggregate" is one client's update


@dataclass(slots=True, repr=False)
class _Endorser:
    cid: bytes
    key: bytes
    server_id: str
    run_id: int
    expires: float


class RosterDesk:
    """Endorsed epoch keys per (server, run, key epoch): at most one key per client, one signed roster per label."""

    TTL_S = 3600.0  # an admission handshake's endorsement key serves the key setup of that round
    MAX_ENDORSERS = 200_000
    MAX_PENDING_LABELS = 10_000

    def __init__(self, store: HAStore, clock: Callable[[], float] = time.time) -> None:
        self._store, self._clock = store, clock
        self._lock = threading.RLock()
        self._endorsers: dict[bytes, _Endorser] = {}
        self._pending: dict[tuple[str, int, int], dict[bytes, bytes]] = {}

        def make() -> tuple[bytes, bytes]:
            sk = Ed25519PrivateKey.generate()
            return (sk.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
                    sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

        sk, self._public = store.roster_key(make)
        self._signer = Ed25519PrivateKey.from_private_bytes(sk)

    def __repr__(self) -> str:
        return f"RosterDesk(endorsers={len(self._endorsers)}, pending={len(self._pending)})"

    @property
    def public_key(self) -> bytes:
        """The Ed25519 key clients verify rosters with (written into every credential at enrolment)."""
        return self._public

    def admitted(self, handle: bytes, cid: bytes, key: bytes, server_id: str, run_id: int) -> None:
        """Remember an admitted session's endorsement key under its handle (expires with ``TTL_S``)."""
        with self._lock:
            now = self._clock()
            if len(self._endorsers) >= self.MAX_ENDORSERS:
                for h in [h for h, e in self._endorsers.items() if e.expires < now]:
                    del self._endorsers[h]
                if len(self._endorsers) >= self.MAX_ENDORSERS:
                    raise AuthError("too many open endorsements")
            self._endorsers[bytes(handle)] = _Endorser(cid, key, server_id, run_id, now + self.TTL_S)

    def register(self, server_id: str, handle: bytes, key_epoch: int, vk: bytes, tag: bytes) -> bool:
        """Add ``vk`` to the pending roster of (server, the handle's run, key epoch) if the client's tag verifies.

        False for an unknown or expired handle, another server's handle, a bad tag, a client that already put
        another key into this roster, or a roster already signed. Never raises for network input of the right types.
        """
        if not isinstance(vk, (bytes, bytearray)) or len(vk) != VK_LEN or not isinstance(key_epoch, int):
            raise MalformedInput("register: a 32-byte key and an integer key epoch are required")
        with self._lock:
            e = self._endorsers.get(bytes(handle))
            if e is None or e.expires < self._clock() or e.server_id != server_id:
                return False
            if not verify_endorsement(e.key, server_id, e.run_id, key_epoch, bytes(vk), tag):
                return False
            label = (server_id, e.run_id, key_epoch)
            if self._store.sealed_roster(*label) is not None:
                return False
            members = self._pending.get(label)
            if members is None:
                if len(self._pending) >= self.MAX_PENDING_LABELS:
                    raise AuthError("too many open rosters")
                members = self._pending[label] = {}
            if members.get(e.cid, bytes(vk)) != bytes(vk):
                return False  # one client, one key per roster: no sybils from one enrolment
            members[e.cid] = bytes(vk)
            return True

    def sign(self, server_id: str, run_id: int, key_epoch: int) -> SignedRoster:
        """Sign and seal the roster of (server, run, key epoch); the same roster again on a repeated request."""
        with self._lock:
            sealed = self._store.sealed_roster(server_id, run_id, key_epoch)
            if sealed is not None:
                return SignedRoster.from_bytes(sealed)
            members = self._pending.pop((server_id, run_id, key_epoch), {})
            if len(members) < MIN_ROSTER:
                raise AuthError(f"roster of key epoch {key_epoch}: {len(members)} endorsed key(s), at least "
                                f"{MIN_ROSTER} are needed")
            roster = SignedRoster.sign(self._signer, server_id, run_id, key_epoch, frozenset(members.values()))
            return SignedRoster.from_bytes(self._store.seal_roster(server_id, run_id, key_epoch, roster.to_bytes()))
