"""Paper-faithful profile: basic k-pseudonym scheme, the mark attack on it, and the variable k-pseudonym scheme.

This is a reconstruction for replication experiments (design section 8), not the recommended protocol: it is
symmetric-only (no public-key operation on the device) and gives k-anonymity per bucket instead of one-time
pseudonyms. Both schemes use the same 66-byte request shape ``ver || kid || GP || Nc || tag``.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bastionfl.auth.errors import MalformedInput
from bastionfl.auth.messages import (
    ACK_LEN,
    HXRES_LEN,
    KP_MSG1_LEN,
    KP_VERSION,
    MSG3_LEN,
    SID_LEN,
    ack,
    make_challenge,
    open_challenge,
    parse_msg2,
    sconf,
    session_key,
    transcript_hash,
)
from bastionfl.auth.primitives import (
    PREFIX,
    RoundContext,
    ct_equal,
    encode_server_id,
    gcm_open,
    gcm_seal,
    hkdf,
    lp,
    mac,
    random_bytes,
    u64,
)
from bastionfl.auth.server import ChallengeReply, ConfirmReply
from bastionfl.auth.session import Session

__all__ = [
    "BASIC_VERSION",
    "BasicKPseudonymClient",
    "BasicKPseudonymServer",
    "VariableKPseudonymAuthority",
    "VariableKPseudonymClient",
    "VariableKRelay",
    "group_pseudonym",
    "kp_tag",
    "mark_attack_success_rate",
]

BASIC_VERSION = 0x02
GP_PERIOD_S = 3600


def group_pseudonym(group_key: bytes, period: int) -> bytes:
    """Variable shared pseudonym ``GP_{b,e} = MAC(GK_b, "flvsp1 gp" || u64(e))[:16]``: changes with time alone."""
    return mac(group_key, PREFIX + b"gp" + u64(period))[:16]


def kp_tag(key: bytes, gp: bytes, nc: bytes, server_id: bytes, ctx: bytes) -> bytes:
    """``tag = MAC(K, "flvsp1 kp" || 0x03 || GP || Nc || LP(server_id) || ctx)``."""
    return mac(key, PREFIX + b"kp" + bytes((KP_VERSION,)) + gp + nc + lp(server_id) + ctx)


# -- basic k-pseudonym scheme (the baseline the paper attacks) ------------------------------------------------------


@dataclass(slots=True, repr=False)
class BasicKPseudonymClient:
    """Member of a bucket sharing a static group pseudonym that the server updates in-band (markable)."""

    key: bytes
    gp: bytes
    _nonce: bytes = b""

    def request(self) -> bytes:
        """66-byte request ``0x02 || 0x00 || GP || nonce || MAC_K(GP || nonce)``."""
        self._nonce = random_bytes(16)
        return bytes((BASIC_VERSION, 0)) + self.gp + self._nonce + mac(self.key, PREFIX + b"bkp" + self.gp
                                                                       + self._nonce)

    def accept_update(self, reply: bytes) -> bool:
        """Install the next group pseudonym if the reply decrypts; otherwise keep the old one (the mark)."""
        k = hkdf(self.key, self._nonce, PREFIX + b"bkp update")
        gp = gcm_open(k, reply, b"") if len(reply) == 32 else None
        if gp is None:
            return False
        self.gp = gp
        return True


class BasicKPseudonymServer:
    """Server of the basic scheme: trial-verifies the k bucket keys and pushes the next GP in each reply."""

    def __init__(self, n_clients: int, k: int) -> None:
        if k < 2 or n_clients < k:
            raise MalformedInput("need k >= 2 and at least k clients")
        self.k = k
        self._buckets: list[list[bytes]] = []
        self._accepted: dict[bytes, int] = {}
        self._next: dict[int, bytes] = {}
        self.clients: list[BasicKPseudonymClient] = []
        keys = [random_bytes(32) for _ in range(n_clients)]
        for b in range(n_clients // k):
            members = keys[b * k:(b + 1) * k]
            gp = random_bytes(16)
            self._buckets.append(members)
            self._accepted[gp] = b
            self.clients += [BasicKPseudonymClient(key, gp) for key in members]
        self.new_epoch()

    def new_epoch(self) -> None:
        """Draw each bucket's next GP; old GPs stay accepted (desync tolerance), which is what the mark exploits."""
        self._next = {b: random_bytes(16) for b in range(len(self._buckets))}
        for b, gp in self._next.items():
            self._accepted[gp] = b

    def handle(self, request: bytes) -> bytes:
        """Verify a request (constant work over the bucket) and return the encrypted next GP, or 32 random bytes."""
        if len(request) != KP_MSG1_LEN or request[0] != BASIC_VERSION:
            return random_bytes(32)
        gp, nonce, tag = request[2:18], request[18:34], request[34:66]
        bucket = self._accepted.get(gp)
        members = self._buckets[bucket] if bucket is not None else [random_bytes(32)] * self.k
        found = None
        for key in members:
            if ct_equal(mac(key, PREFIX + b"bkp" + gp + nonce), tag) and found is None:
                found = key
        if found is None or bucket is None:
            return random_bytes(32)
        return gcm_seal(hkdf(found, nonce, PREFIX + b"bkp update"), self._next[bucket], b"")


# -- variable k-pseudonym scheme (ver 0x03) ------------------------------------------------------------------------


@dataclass(slots=True, repr=False)
class _KPSession:
    ok: bool
    key: bytes
    xres: bytes
    k_s: bytes
    msg1: bytes
    msg2: bytes
    server_id: bytes
    ctx: bytes
    expires: float


@dataclass(slots=True, repr=False)
class VariableKPseudonymClient:
    """Bucket member of the variable scheme: symmetric-only, pseudonym derived from the clock, no update message."""

    key: bytes
    group_key: bytes
    servers: tuple[str, ...]
    clock: Callable[[], float] = time.time
    period_s: int = GP_PERIOD_S
    _st: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return "VariableKPseudonymClient(<secret>)"

    def start(self, server_id: str, ctx: RoundContext, *, nc: bytes | None = None) -> bytes:
        """msg1 (66 B) = ``0x03 || 0x00 || GP || Nc || tag``."""
        if server_id not in self.servers:
            raise MalformedInput("server_id is not allowed by this credential")
        sid_b, ctx_d = encode_server_id(server_id), ctx.digest()
        gp = group_pseudonym(self.group_key, int(self.clock()) // self.period_s)
        nc = random_bytes(16) if nc is None else nc
        msg1 = bytes((KP_VERSION, 0)) + gp + nc + kp_tag(self.key, gp, nc, sid_b, ctx_d)
        self._st = {"msg1": msg1, "nc": nc, "sid": sid_b, "ctx": ctx, "ctx_d": ctx_d, "server_id": server_id}
        return msg1

    def respond(self, msg2: bytes) -> bytes:
        """RES or 32 random bytes; the HA's ``P_next`` is bound into RES but not used."""
        st = self._st
        try:
            parsed = parse_msg2(msg2)
        except MalformedInput:
            parsed = None
        sec = None
        if "msg1" in st and parsed is not None:
            sec = open_challenge(self.key, st["msg1"], st["nc"], parsed, st["sid"], st["ctx_d"])
        if sec is None:
            self._st = {}
            return random_bytes(MSG3_LEN)
        st.update(msg2=sec.msg2, msg3=sec.xres, k_s=sec.k_s)
        return sec.xres

    def finish(self, msg4: bytes) -> tuple[bytes, Session | None]:
        """``(ack, session)``; ack is random on failure."""
        st, self._st = self._st, {}
        if "k_s" in st and isinstance(msg4, bytes) and len(msg4) == 32:
            th = transcript_hash(st["sid"], st["ctx_d"], st["msg1"], st["msg2"], st["msg3"])
            k = session_key(st["k_s"], th)
            if ct_equal(sconf(k, th), msg4):
                return ack(k, th), Session(key=k, server_id=st["server_id"], ctx=st["ctx"], role="client")
        return random_bytes(ACK_LEN), None


class VariableKPseudonymAuthority:
    """HA of the variable scheme: GP (epochs e-1..e+1) -> bucket, k tag checks (constant work), seen-Nc cache."""

    SESSION_TTL_S = 60.0

    def __init__(self, k: int = 8, *, clock: Callable[[], float] = time.time, period_s: int = GP_PERIOD_S) -> None:
        if k < 2:
            raise MalformedInput("k must be at least 2")
        self.k, self._clock, self.period_s = k, clock, period_s
        self._buckets: list[tuple[bytes, list[bytes]]] = []  # (GK_b, member keys)
        self._revoked: set[bytes] = set()
        self._seen: dict[bytes, float] = {}
        self._sessions: dict[bytes, _KPSession] = {}

    def __repr__(self) -> str:
        return f"VariableKPseudonymAuthority(k={self.k}, buckets={len(self._buckets)})"

    def enroll(self, servers: Sequence[str]) -> VariableKPseudonymClient:
        """Place a new client in the current bucket (a new bucket every k clients); buckets never change in-band."""
        if not self._buckets or len(self._buckets[-1][1]) == self.k:
            self._buckets.append((random_bytes(32), []))
        gk, members = self._buckets[-1]
        key = random_bytes(32)
        members.append(key)
        return VariableKPseudonymClient(key, gk, tuple(servers), self._clock, self.period_s)

    def revoke(self, client: VariableKPseudonymClient) -> None:
        """Refuse this member from now on."""
        self._revoked.add(client.key)

    def challenge(self, server_id: str, ctx: RoundContext, msg1: bytes) -> ChallengeReply:
        """msg2 + HXRES for a valid member, a same-cost decoy otherwise."""
        sid_b, ctx_d, now = encode_server_id(server_id), ctx.digest(), self._clock()
        ok = isinstance(msg1, bytes) and len(msg1) == KP_MSG1_LEN and msg1[0] == KP_VERSION and msg1[1] == 0
        work = msg1 if ok else bytes((KP_VERSION, 0)) + bytes(KP_MSG1_LEN - 2)
        gp, nc, tag = work[2:18], work[18:34], work[34:66]
        e = int(now) // self.period_s
        bucket = None
        for gk, members in self._buckets:
            if any(ct_equal(group_pseudonym(gk, p), gp) for p in (e - 1, e, e + 1)):
                bucket = members
        candidates = bucket if bucket is not None and len(bucket) == self.k else (
            (bucket or []) + [random_bytes(32)] * (self.k - len(bucket or [])))
        found = None
        for key in candidates:  # all k tags, always: the work does not depend on who matched
            if ct_equal(kp_tag(key, gp, nc, sid_b, ctx_d), tag) and found is None:
                found = key
        ok = ok and bucket is not None and found is not None and found not in self._revoked
        ok = ok and nc not in self._seen and now < ctx.expiry
        self._seen = {n: t for n, t in self._seen.items() if t > now - 3 * self.period_s}
        if ok:
            self._seen[nc] = now
        key = found if ok and found is not None else random_bytes(32)
        sec = make_challenge(key, work if not ok else msg1, nc, random_bytes(16), random_bytes(16), sid_b, ctx_d)
        sid = random_bytes(SID_LEN)
        self._sessions[sid] = _KPSession(ok, key, sec.xres, sec.k_s, msg1, sec.msg2, sid_b, ctx_d,
                                         now + self.SESSION_TTL_S)
        return ChallengeReply(sid, sec.msg2, sec.hxres if ok else random_bytes(HXRES_LEN))

    def confirm(self, server_id: str, sid: bytes, res: bytes) -> ConfirmReply:
        """Single-use confirm returning ``K_S``."""
        s = self._sessions.pop(bytes(sid), None)
        ok = s is not None and s.ok and self._clock() <= s.expires and ct_equal(s.server_id, encode_server_id(
            server_id)) and len(res) == 32 and ct_equal(bytes(res), s.xres)
        if not ok or s is None or s.key in self._revoked:
            return ConfirmReply(False)
        th = transcript_hash(s.server_id, s.ctx, s.msg1, s.msg2, bytes(res))
        return ConfirmReply(True, session_key(s.k_s, th), random_bytes(16))


class VariableKRelay:
    """In-process :class:`~.server.HARelay` for the variable scheme (use ``AuthServer(..., msg1_len=66)``)."""

    def __init__(self, ha: VariableKPseudonymAuthority, server_id: str) -> None:
        self._ha, self._server_id = ha, server_id

    def challenge(self, ctx: RoundContext, msg1: bytes) -> ChallengeReply:
        """Forward to the in-process authority."""
        return self._ha.challenge(self._server_id, ctx, msg1)

    def confirm(self, sid: bytes, res: bytes) -> ConfirmReply:
        """Forward to the in-process authority."""
        return self._ha.confirm(self._server_id, sid, res)


# -- the mark attack ----------------------------------------------------------------------------------------------


def _guess_marked(observed: Sequence[bytes], rng: random.Random) -> int:
    """The attacker's best generic strategy: pick a request whose visible class (length, header, pseudonym) is
    the rarest in the bucket; among equals, guess uniformly."""
    classes = [(len(m), m[:2], m[2:18]) for m in observed]
    counts = Counter(classes)
    rarest = min(counts.values())
    candidates = [i for i, c in enumerate(classes) if counts[c] == rarest]
    return rng.choice(candidates)


def mark_attack_success_rate(scheme: str, *, k: int = 8, trials: int = 200, seed: int = 0) -> float:
    """Reproducible mark attack: tamper the target's session in epoch e, then single it out among its k bucket
    peers in epoch e+1. Returns the attacker's success rate (1.0 against ``"basic"``, about 1/k against
    ``"variable"``)."""
    if scheme not in ("basic", "variable"):
        raise MalformedInput("scheme must be 'basic' or 'variable'")
    rng = random.Random(seed)
    hits = 0
    for _ in range(trials):
        target = rng.randrange(k)
        if scheme == "basic":
            srv = BasicKPseudonymServer(k, k)
            for i, c in enumerate(srv.clients):  # epoch e: everyone authenticates, the target's reply is corrupted
                reply = srv.handle(c.request())
                c.accept_update(random_bytes(32) if i == target else reply)
            srv.new_epoch()
            observed = [c.request() for c in srv.clients]  # epoch e+1
        else:
            t = {"now": 1_700_000_000.0}
            ha = VariableKPseudonymAuthority(k, clock=lambda: t["now"])
            clients = [ha.enroll(["S"]) for _ in range(k)]
            for i, c in enumerate(clients):
                ctx = RoundContext(1, 1, i, int(t["now"]) + 60)
                reply = ha.challenge("S", ctx, c.start("S", ctx))
                c.respond(random_bytes(80) if i == target else reply.msg2)
            t["now"] += 60
            observed = [c.start("S", RoundContext(1, 2, i, int(t["now"]) + 60)) for i, c in enumerate(clients)]
        order = list(range(k))
        rng.shuffle(order)
        guess = _guess_marked([observed[i] for i in order], rng)
        hits += order[guess] == target
    return hits / trials
