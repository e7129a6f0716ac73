"""Fixed-size FL-VSP-AKA messages (design section 6.1) and the key schedule shared by all three parties."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .errors import MalformedInput
from .primitives import PREFIX, ct_equal, exp, gcm_open, gcm_seal, h, hkdf, lp, mac, u64, x25519_public, x25519_shared

__all__ = [
    "ACK_LEN",
    "HANDLE_LEN",
    "HXRES_LEN",
    "KP_MSG1_LEN",
    "KP_VERSION",
    "MSG1_LEN",
    "MSG2_LEN",
    "MSG3_LEN",
    "MSG4_LEN",
    "SID_LEN",
    "VERSION",
    "Msg1",
    "Msg2",
    "parse_msg1",
    "parse_msg2",
]

VERSION = 0x01
KP_VERSION = 0x03
MSG1_LEN = 114  # ver(1) kid(1) PID(16) Nc(16) epk(32) ct(48)
KP_MSG1_LEN = 66  # ver(1) kid(1) GP(16) Nc(16) tag(32)
MSG2_LEN = 80  # Nh(16) E(32) AUTN(32)
MSG3_LEN = 32  # RES
MSG4_LEN = 32  # SCONF
ACK_LEN = 32
SID_LEN = 16
HXRES_LEN = 16
HANDLE_LEN = 16
PT_LEN = 32  # mode(1) cid_field(16) ctr(8) zero(7)
MODE_FAST = 0x00
MODE_RECOVERY = 0x01


@dataclass(frozen=True, slots=True, repr=False)
class Msg1:
    """Parsed base-mode msg1; every field is public wire data (still kept out of reprs)."""

    ver: int
    kid: int
    pid: bytes
    nc: bytes
    epk: bytes
    ct: bytes

    def __repr__(self) -> str:
        return f"Msg1(ver={self.ver}, kid={self.kid})"


@dataclass(frozen=True, slots=True, repr=False)
class Msg2:
    """Parsed msg2 = Nh || E || AUTN."""

    nh: bytes
    e: bytes
    autn: bytes

    def __repr__(self) -> str:
        return "Msg2(...)"


def _require_bytes(data: object, length: int, name: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedInput(f"{name} must be bytes")
    raw = bytes(data)
    if len(raw) != length:
        raise MalformedInput(f"{name} must be {length} bytes")
    return raw


def parse_msg1(data: object) -> Msg1:
    """Parse a base-mode msg1 strictly (length 114, version 1); :class:`MalformedInput` otherwise."""
    raw = _require_bytes(data, MSG1_LEN, "msg1")
    if raw[0] != VERSION:
        raise MalformedInput("msg1 has an unsupported version")
    return Msg1(raw[0], raw[1], raw[2:18], raw[18:34], raw[34:66], raw[66:114])


def parse_msg2(data: object) -> Msg2:
    """Parse msg2 strictly (length 80); :class:`MalformedInput` otherwise."""
    raw = _require_bytes(data, MSG2_LEN, "msg2")
    return Msg2(raw[:16], raw[16:48], raw[48:80])


def msg1_aad(ver: int, kid: int, pid: bytes, nc: bytes, server_id: bytes, ctx: bytes) -> bytes:
    """AAD of the concealment ciphertext: ``ver || kid || PID || Nc || LP(server_id) || ctx``."""
    return bytes((ver, kid)) + pid + nc + lp(server_id) + ctx


def conceal_key(z: bytes, epk: bytes, pk_ha: bytes) -> bytes:
    """``k_conceal = HKDF(z, salt = epk || pk_HA, info = "flvsp1 conceal")``."""
    return hkdf(z, epk + pk_ha, PREFIX + b"conceal")


def build_msg1(
    *,
    kid: int,
    pk_ha: bytes,
    pid: bytes,
    nc: bytes,
    esk: X25519PrivateKey,
    mode: int,
    cid_field: bytes,
    ctr: int,
    server_id: bytes,
    ctx: bytes,
) -> bytes:
    """Build msg1 for the fast (mode 0) or recovery (mode 1) path; both have the same size and shape."""
    epk = x25519_public(esk)
    z = x25519_shared(esk, pk_ha)
    if z is None:
        raise MalformedInput("the pinned HA public key is invalid")
    pt = bytes((mode,)) + cid_field + u64(ctr) + bytes(7)
    aad = msg1_aad(VERSION, kid, pid, nc, server_id, ctx)
    return bytes((VERSION, kid)) + pid + nc + epk + gcm_seal(conceal_key(z, epk, pk_ha), pt, aad)


@dataclass(frozen=True, slots=True, repr=False)
class ChallengeSecrets:
    """What one side derives from a challenge: msg2, XRES, HXRES and the pre-key ``k_s`` (secret)."""

    msg2: bytes
    xres: bytes
    hxres: bytes
    k_s: bytes
    p_next: bytes

    def __repr__(self) -> str:
        return "ChallengeSecrets(<secret>)"


def _keys(k: bytes, nc: bytes, nh: bytes, server_id: bytes, ctx: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    km = hkdf(k, nc + nh, PREFIX + b"km" + lp(server_id) + ctx)
    return exp(km, b"autn"), exp(km, b"res"), exp(km, b"pid"), exp(km, b"ks")


def _t0(msg1: bytes, nh: bytes, server_id: bytes, ctx: bytes) -> bytes:
    return h(PREFIX + b"T0" + msg1 + nh + lp(server_id) + ctx)


def make_challenge(
    k: bytes, msg1: bytes, nc: bytes, nh: bytes, p_next: bytes, server_id: bytes, ctx: bytes
) -> ChallengeSecrets:
    """HA side: msg2 = Nh || E || AUTN with E = AES-GCM_{k_pid}(P_next), plus XRES, HXRES and ``k_s``."""
    k_autn, k_res, k_pid, k_s = _keys(k, nc, nh, server_id, ctx)
    t0 = _t0(msg1, nh, server_id, ctx)
    e = gcm_seal(k_pid, p_next, t0)
    t = h(PREFIX + b"T" + t0 + e)
    autn = mac(k_autn, b"AUTN" + t)
    xres = mac(k_res, b"RES" + t + h(p_next))
    return ChallengeSecrets(nh + e + autn, xres, hxres_of(nh, xres), k_s, p_next)


def open_challenge(
    k: bytes, msg1: bytes, nc: bytes, msg2: Msg2, server_id: bytes, ctx: bytes
) -> ChallengeSecrets | None:
    """Client side: verify AUTN and decrypt ``P_next``; ``None`` on any failure (no reason given)."""

    k_autn, k_res, k_pid, k_s = _keys(k, nc, msg2.nh, server_id, ctx)
    t0 = _t0(msg1, msg2.nh, server_id, ctx)
    t = h(PREFIX + b"T" + t0 + msg2.e)
    if not ct_equal(mac(k_autn, b"AUTN" + t), msg2.autn):
        return None
    p_next = gcm_open(k_pid, msg2.e, t0)
    if p_next is None or len(p_next) != 16:
        return None
    res = mac(k_res, b"RES" + t + h(p_next))
    return ChallengeSecrets(msg2.nh + msg2.e + msg2.autn, res, hxres_of(msg2.nh, res), k_s, p_next)


def hxres_of(nh: bytes, res: bytes) -> bytes:
    """``HXRES = H("flvsp1 HXRES" || Nh || RES)[:16]`` — what S may check without learning RES in advance."""
    return h(PREFIX + b"HXRES" + nh + res)[:HXRES_LEN]


def transcript_hash(server_id: bytes, ctx: bytes, msg1: bytes, msg2: bytes, msg3: bytes) -> bytes:
    """``TH = H("flvsp1 TH" || LP(server_id) || ctx || msg1 || msg2 || msg3)``."""
    return h(PREFIX + b"TH" + lp(server_id) + ctx + msg1 + msg2 + msg3)


def session_key(k_s: bytes, th: bytes) -> bytes:
    """``K_S = Exp(k_s, "ks" || TH)``: bound to server id and round context through TH."""
    return exp(k_s, b"ks" + th)


def sconf(k_session: bytes, th: bytes) -> bytes:
    """Server key confirmation ``MAC(K_S, "SCONF" || TH)``."""
    return mac(k_session, b"SCONF" + th)


def ack(k_session: bytes, th: bytes) -> bytes:
    """Client key confirmation ``MAC(K_S, "ACK" || TH)``."""
    return mac(k_session, b"ACK" + th)
