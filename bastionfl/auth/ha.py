"""Home Authority state machine: de-conceal, challenge, confirm, enroll, revoke, rotate keys; decoys on failure."""

from __future__ import annotations

import logging

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PrivateFormat, NoEncryption

from .credential import ClientCredential
from .errors import AuthError, MalformedInput, RateLimited
from .messages import (
    HXRES_LEN,
    MODE_FAST,
    MODE_RECOVERY,
    MSG1_LEN,
    MSG3_LEN,
    SID_LEN,
    VERSION,
    conceal_key,
    make_challenge,
    msg1_aad,
    session_key,
    transcript_hash,
)
from .primitives import RoundContext, ct_equal, encode_server_id, gcm_open, random_bytes, x25519_public, x25519_shared
from .roster import SignedRoster, endorsement_key
from .roster_desk import RosterDesk
from .server import ChallengeReply, ConfirmReply
from .store import HAStore

log = logging.getLogger("bastionfl.auth.ha")

__all__ = ["HomeAuthority", "LocalRelay", "RateLimits", "TokenBucket"]

_SINK_CID = b"\xff" * 16  # never enrolled (cids are 16 random bytes; collision odds 2^-128): decoys write here


class TokenBucket:
    """Classic token bucket: ``rate`` tokens/s up to ``burst``; refills, so it never locks anyone out for good."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def take(self, now: float) -> bool:
        """Spend one token if available."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per-server quota (explicit refusal) and per-client-path budgets (silent decoys, refilling: no lockout)."""

    server_rate: float = 5000.0
    server_burst: float = 10000.0
    fast_rate: float = 1.0  # per cid, fast path
    fast_burst: float = 60.0
    recovery_rate: float = 20.0 / 3600.0  # per cid, recovery path (forgeable by whoever knows cid)
    recovery_burst: float = 20.0


@dataclass(slots=True, repr=False)
class _HASession:
    ok: bool
    cid: bytes
    ctr: int
    xres: bytes
    p_next: bytes
    k_s: bytes
    msg1: bytes
    msg2: bytes
    server_id: bytes
    ctx: bytes
    expires: float
    run_id: int = 0
    probe: bool = False  # a counter value already committed: a RES that matches proves a second credential holder


class HomeAuthority:
    """The HA: the only party that knows identities and long-term keys; answers everything invalid with a decoy."""

    SESSION_TTL_S = 60.0
    MAX_SESSIONS = 200_000
    PENDING_CAP = 4
    MAX_EXPIRY_AHEAD_S = 24 * 3600
    KEY_RELOAD_S = 5.0

    def __init__(
        self,
        store: HAStore,
        *,
        limits: RateLimits = RateLimits(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._limits = limits
        self._clock = clock
        self._lock = threading.RLock()
        self._sessions: dict[bytes, _HASession] = {}
        self._server_buckets: dict[bytes, TokenBucket] = {}
        self._path_buckets: dict[tuple[bytes, int], TokenBucket] = {}
        self._dummy_key = X25519PrivateKey.generate()
        self._dummy_pk = x25519_public(self._dummy_key)
        self._keys: dict[int, tuple[X25519PrivateKey, bytes, float | None]] = {}
        self._keys_loaded = -1e18
        if not store.keys():
            self._new_key(1)
        self._reload_keys(force=True)
        self.rosters = RosterDesk(store, clock)

    def __repr__(self) -> str:
        return f"HomeAuthority(kids={sorted(self._keys)}, sessions={len(self._sessions)})"

    @classmethod
    def open(cls, db_path: str | os.PathLike[str], kek: bytes, **kwargs) -> HomeAuthority:
        """Open (or create) the SQLite-backed HA at ``db_path`` with key-encryption key ``kek``."""
        return cls(HAStore(db_path, kek), **kwargs)

    @property
    def store(self) -> HAStore:
        """The underlying store (admin operations, tests)."""
        return self._store

    # -- keys ---------------------------------------------------------------------------------------------------
    def _new_key(self, kid: int) -> None:
        sk = X25519PrivateKey.generate()
        raw = sk.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        self._store.add_key(kid, raw, x25519_public(sk))

    def _reload_keys(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._keys_loaded < self.KEY_RELOAD_S:
            return
        keys = {}
        for kid, sk, pk, not_after in self._store.keys():
            if sk is not None:
                keys[kid] = (X25519PrivateKey.from_private_bytes(sk), pk, not_after)
        self._keys, self._keys_loaded = keys, now

    def current_key(self) -> tuple[int, bytes]:
        """``(kid, public key)`` that new enrollments pin: the newest live key."""
        self._reload_keys(force=True)
        live = [kid for kid, (_, _, na) in self._keys.items() if na is None]
        if not live:
            raise AuthError("no live HA key")
        kid = max(live)
        return kid, self._keys[kid][1]

    def public_keys(self) -> dict[int, bytes]:
        """All usable public keys by kid (public information)."""
        self._reload_keys(force=True)
        now = self._clock()
        return {kid: pk for kid, (_, pk, na) in self._keys.items() if na is None or now <= na}

    def rotate_key(self, grace_s: float = 7 * 24 * 3600) -> int:
        """Add a new HA key; older keys stay accepted for ``grace_s`` seconds, then their private half is deleted."""
        with self._lock:
            kids = [k for k, *_ in self._store.keys()]
            kid = max(kids) + 1
            if kid > 255:
                raise AuthError("kid space exhausted; re-key the deployment")
            self._new_key(kid)
            self._store.retire_keys(kid, self._clock() + grace_s)
            self._reload_keys(force=True)
            return kid

    def purge_retired_keys(self) -> int:
        """Delete private keys past their grace period (limits exposure of recorded recovery requests)."""
        n = self._store.purge_keys(self._clock())
        self._reload_keys(force=True)
        return n

    # -- admin --------------------------------------------------------------------------------------------------
    def enroll(self, label: str, servers: list[str]) -> ClientCredential:
        """Create a client (fresh random cid, K, P0) and return its credential bundle; ``label`` is the identity."""
        if not isinstance(label, str) or not label:
            raise MalformedInput("label must be a non-empty string")
        if not servers:
            raise MalformedInput("at least one server id is required")
        for s in servers:
            encode_server_id(s)
        if self._store.label_exists(label):
            raise AuthError("label already enrolled")
        kid, pk = self.current_key()
        cid, key, p0 = random_bytes(16), random_bytes(32), random_bytes(16)
        self._store.create_client(label, cid, key, p0, list(servers))
        return ClientCredential(cid=cid, key=key, kid=kid, ha_public_key=pk, pid=p0, ctr=0, servers=tuple(servers),
                                roster_public_key=self.rosters.public_key)

    def revoke(self, label: str) -> bool:
        """Revoke the client enrolled as ``label``: its pseudonyms vanish and every later attempt gets a decoy."""
        cid = self._store.cid_for_label(label)
        if cid is None:
            return False
        with self._lock:
            for sid in [s for s, sess in self._sessions.items() if sess.cid == cid]:
                self._sessions[sid].ok = False
        return self._store.revoke(cid)

    # -- protocol -----------------------------------------------------------------------------------------------
    def _take_server_token(self, server_id: bytes, now: float) -> None:
        bucket = self._server_buckets.get(server_id)
        if bucket is None:
            bucket = self._server_buckets[server_id] = TokenBucket(
                self._limits.server_rate, self._limits.server_burst, now
            )
        if not bucket.take(now):
            raise RateLimited("server quota exhausted")

    def _take_path_token(self, cid: bytes, mode: int, now: float) -> bool:
        key = (cid, mode)
        bucket = self._path_buckets.get(key)
        if bucket is None:
            rate, burst = (
                (self._limits.fast_rate, self._limits.fast_burst)
                if mode == MODE_FAST
                else (self._limits.recovery_rate, self._limits.recovery_burst)
            )
            bucket = self._path_buckets[key] = TokenBucket(rate, burst, now)
        return bucket.take(now)

    def _purge_sessions(self, now: float) -> None:
        for sid in [s for s, sess in self._sessions.items() if sess.expires < now]:
            del self._sessions[sid]

    def challenge(self, server_id: str, ctx: RoundContext, msg1: bytes) -> ChallengeReply:
        """Answer msg1 from ``server_id`` (taken from the authenticated channel) with msg2 + HXRES or a decoy.

        Every well-sized request takes the same work (X25519, HKDF, GCM, key schedule, one write transaction),
        so decoys for unknown, replayed, revoked or forged requests match real answers in size and cost.
        Raises :class:`RateLimited` only for the per-server quota.
        """
        sid_b = encode_server_id(server_id)
        if not isinstance(ctx, RoundContext):
            raise MalformedInput("ctx must be a RoundContext")
        if not isinstance(msg1, (bytes, bytearray)):
            raise MalformedInput("msg1 must be bytes")
        msg1 = bytes(msg1)
        with self._lock:
            now = self._clock()
            self._take_server_token(sid_b, now)
            if len(self._sessions) >= self.MAX_SESSIONS:
                self._purge_sessions(now)
                if len(self._sessions) >= self.MAX_SESSIONS:
                    raise RateLimited("too many open sessions")
            self._reload_keys()
            ok = len(msg1) == MSG1_LEN and msg1[0] == VERSION
            work = msg1 if ok else bytes((VERSION, 0)) + bytes(MSG1_LEN - 2)
            kid, pid, nc, epk, ct = work[1], work[2:18], work[18:34], work[34:66], work[66:114]
            entry = self._keys.get(kid)
            if entry is None or (entry[2] is not None and now > entry[2]):
                ok, sk, pk = False, self._dummy_key, self._dummy_pk
            else:
                sk, pk = entry[0], entry[1]
            ctx_d = ctx.digest()
            ok = ok and now < ctx.expiry <= now + self.MAX_EXPIRY_AHEAD_S
            z = x25519_shared(sk, epk)
            if z is None:
                ok, z = False, bytes(32)
            pt = gcm_open(conceal_key(z, epk, pk), ct, msg1_aad(VERSION, kid, pid, nc, sid_b, ctx_d))
            if pt is None or len(pt) != 32:
                ok, pt = False, bytes(32)
            mode, cid_field, ctr = pt[0], pt[1:17], int.from_bytes(pt[17:25], "big")
            ok = ok and mode in (MODE_FAST, MODE_RECOVERY) and pt[25:] == bytes(7)
            if mode == MODE_RECOVERY:
                cid = cid_field
            else:
                ok = ok and cid_field == bytes(16)
                cid = self._store.lookup_pid(pid) or self._store.lookup_retired_pid(pid) or bytes(16)
            row = self._store.client(cid)
            known = ok and row is not None and row.active
            # a used counter value: a replay (no RES will follow) or a second holder of the credential (RES will)
            probe = known and row is not None and ctr <= row.ctr_committed
            ok = known and row is not None and ctr > row.ctr_committed
            if ok or probe:
                allowed = self._take_path_token(cid, mode, now)
                ok, probe = ok and allowed, probe and allowed
            key = row.key if (ok or probe) and row is not None else random_bytes(32)
            nh, p_next = random_bytes(16), random_bytes(16)
            # a decoy is computed under a random key: its bytes are as random as real ones and cost the same
            secrets = make_challenge(key, msg1, nc, nh, p_next, sid_b, ctx_d)
            self._store.add_pending(cid if ok else _SINK_CID, p_next, self.PENDING_CAP, decoy=not ok)
            sid = random_bytes(SID_LEN)
            self._sessions[sid] = _HASession(
                ok, cid, ctr, secrets.xres, p_next, secrets.k_s, msg1, secrets.msg2, sid_b, ctx_d,
                now + self.SESSION_TTL_S, ctx.run_id, probe,
            )
            return ChallengeReply(sid, secrets.msg2, secrets.hxres if ok or probe else random_bytes(HXRES_LEN))

    def confirm(self, server_id: str, sid: bytes, res: bytes) -> ConfirmReply:
        """Single-use confirm: on a matching RES, commit the counter and ``P_next`` and release ``K_S``."""
        sid_b = encode_server_id(server_id)
        if not isinstance(sid, (bytes, bytearray)) or not isinstance(res, (bytes, bytearray)):
            raise MalformedInput("sid and res must be bytes")
        with self._lock:
            now = self._clock()
            sess = self._sessions.pop(bytes(sid), None)
            ok = (
                sess is not None and (sess.ok or sess.probe) and now <= sess.expires
                and ct_equal(sess.server_id, sid_b) and len(res) == MSG3_LEN
            )
            expected = sess.xres if sess is not None else random_bytes(32)
            ok = ct_equal(bytes(res), expected) and ok
            if ok and sess is not None and sess.probe:
                self._clone_alert(sess.cid, server_id)
                return ConfirmReply(False)
            if not ok or sess is None:
                return ConfirmReply(False)
            handle = random_bytes(16)
            if not self._store.commit(sess.cid, sess.ctr, sess.p_next, handle, server_id, now):
                return ConfirmReply(False)
            th = transcript_hash(sid_b, sess.ctx, sess.msg1, sess.msg2, bytes(res))
            self.rosters.admitted(handle, sess.cid, endorsement_key(sess.k_s, th), server_id, sess.run_id)
            return ConfirmReply(True, session_key(sess.k_s, th), handle)

    def _clone_alert(self, cid: bytes, server_id: str) -> None:
        """Two holders of one credential: a proven RES for a counter value that was already committed."""
        label = self._store.record_clone_alert(cid)
        log.warning("Home Authority: CLONE ALERT: credential %r answered a challenge for a counter value it had "
                    "already used (via server %r): a copy of its credential file is in use elsewhere; revoke and "
                    "re-enrol it", label, server_id)

    @property
    def clone_alerts(self) -> int:
        """Clone alerts raised so far (persistent)."""
        return self._store.counter("clone_alerts")

    def register_epoch_key(self, server_id: str, handle: bytes, key_epoch: int, vk: bytes, tag: bytes) -> bool:
        """Put an admitted client's endorsed epoch key into the roster of ``key_epoch`` (see ``RosterDesk``)."""
        return self.rosters.register(server_id, handle, key_epoch, vk, tag)

    def sign_roster(self, server_id: str, run_id: int, key_epoch: int) -> SignedRoster:
        """Sign and seal the roster of (server, run, key epoch) (see ``RosterDesk``)."""
        return self.rosters.sign(server_id, run_id, key_epoch)


class LocalRelay:
    """In-process relay for simulations: binds one FL server identity to an in-process :class:`HomeAuthority`."""

    def __init__(self, ha: HomeAuthority, server_id: str) -> None:
        self._ha = ha
        self._server_id = server_id

    def __repr__(self) -> str:
        return f"LocalRelay(server_id={self._server_id!r})"

    def challenge(self, ctx: RoundContext, msg1: bytes) -> ChallengeReply:
        """Forward msg1 to the in-process HA."""
        return self._ha.challenge(self._server_id, ctx, msg1)

    def confirm(self, sid: bytes, res: bytes) -> ConfirmReply:
        """Forward the confirm request to the in-process HA."""
        return self._ha.confirm(self._server_id, sid, res)

    def register_epoch_key(self, handle: bytes, key_epoch: int, vk: bytes, tag: bytes) -> bool:
        """Forward an endorsed epoch key to the in-process HA."""
        return self._ha.register_epoch_key(self._server_id, handle, key_epoch, vk, tag)

    def sign_roster(self, run_id: int, key_epoch: int) -> bytes:
        """The signed roster of this server's ``key_epoch`` (wire bytes)."""
        return self._ha.sign_roster(self._server_id, run_id, key_epoch).to_bytes()
