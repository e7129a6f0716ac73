"""Known-answer tests: RFC 5869, RFC 4231, RFC 7748 and the protocol's own vectors (design section 11)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bastionfl.auth.messages import (
    build_msg1,
    conceal_key,
    make_challenge,
    open_challenge,
    parse_msg2,
    sconf,
    session_key,
    transcript_hash,
)
from bastionfl.auth.primitives import RoundContext, exp, hkdf, x25519_public, x25519_shared


def seq(start: int, n: int) -> bytes:
    return bytes(range(start, start + n))


def test_rfc5869_tc1():
    ikm, salt, info = b"\x0b" * 22, bytes.fromhex("000102030405060708090a0b0c"), bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = HKDF(hashes.SHA256(), 42, salt, info).derive(ikm)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    prk = hmac.digest(salt, ikm, "sha256")
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    assert hkdf(ikm, salt, info) == okm[:32]


def test_rfc4231_tc2():
    tag = hmac.new(b"Jefe", b"what do ya want for nothing?", hashlib.sha256).hexdigest()
    assert tag == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_rfc7748_x25519():
    a = X25519PrivateKey.from_private_bytes(
        bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    )
    b = X25519PrivateKey.from_private_bytes(
        bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    )
    assert x25519_public(a).hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert x25519_public(b).hex() == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert x25519_shared(a, x25519_public(b)).hex() == shared
    assert x25519_shared(b, x25519_public(a)).hex() == shared


def test_x25519_low_order_point_rejected():
    a = X25519PrivateKey.generate()
    with pytest.raises(ValueError):
        a.exchange(X25519PublicKey.from_public_bytes(bytes(32)))
    assert x25519_shared(a, bytes(32)) is None


K = seq(0x00, 32)
NC = seq(0xA0, 16)
NH = seq(0xB0, 16)
SID = b"fl-server-A"
CTX = RoundContext(run_id=1, epoch=3, node_id=42, expiry=1700000000)
SK_HA = X25519PrivateKey.from_private_bytes(seq(0x60, 32))
ESK = X25519PrivateKey.from_private_bytes(seq(0x40, 32))
PID, CID, P_NEXT = seq(0x10, 16), seq(0xC0, 16), seq(0xD0, 16)

MSG1_RECOVERY = (
    "0101101112131415161718191a1b1c1d1e1fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf79a631eede1bf9c98f12032cdeadd0e7a079398fc786"
    "b88cc846ec89af85a51a98ef7ae27eff4434f43453c2d134986fe53db59ae29d2b5671ec69d42cf3e466c6a96e3c8cd6355c15d770338900"
    "55f7"
)
MSG1_FAST = (
    "0101101112131415161718191a1b1c1d1e1fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf79a631eede1bf9c98f12032cdeadd0e7a079398fc786"
    "b88cc846ec89af85a51a992fbb20bd3b81f233fc9a081af855a12a3db59ae29d2b5671ec69d42cf3e466deb9afc3dd66dcf32728553a2724"
    "9ea8"
)


def _msg1(mode: int) -> bytes:
    return build_msg1(
        kid=1, pk_ha=x25519_public(SK_HA), pid=PID, nc=NC, esk=ESK, mode=mode,
        cid_field=CID if mode else bytes(16), ctr=5, server_id=SID, ctx=CTX.digest(),
    )


def test_protocol_kat_context_and_concealment():
    assert CTX.digest().hex() == "e786ad797d0aeb77bb030aea2bc632aa28cad4e0d5152ec15c0bb374568ebe31"
    pk = x25519_public(SK_HA)
    assert pk.hex() == "675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52f"
    epk = x25519_public(ESK)
    assert epk.hex() == "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a"
    z = x25519_shared(ESK, pk)
    assert z.hex() == "d6fb939511b2381bc8599b4b8edc5968829450dfd7a87aebe78a703cd04cd54e"
    assert conceal_key(z, epk, pk).hex() == "35024c09c2ec86be9bceee75b8a843dd6c0515a0420b6f9f358d3ddf672a5531"
    assert _msg1(1).hex() == MSG1_RECOVERY
    assert _msg1(0).hex() == MSG1_FAST


def test_protocol_kat_key_schedule():
    km = hkdf(K, NC + NH, b"flvsp1 km" + len(SID).to_bytes(2, "big") + SID + CTX.digest())
    assert km.hex() == "ce9f1a45cbc649831e671719717ae3d866740fcb70dcdc83fd2f18797962ce44"
    assert exp(km, b"autn").hex() == "5102a47704541d3dac9da1c8a28ac199c8f85998aace98f0868ad6a30c36a930"
    assert exp(km, b"res").hex() == "278fba33a75f4f88d0c3b784f41cfdbbaa28924ab3b2d656bb9d92625fce070e"
    assert exp(km, b"pid").hex() == "4c80c116bb358eb35564273323c6d9d8e5fe7628e77bd6dcf542e22e4662ecf5"
    assert exp(km, b"ks").hex() == "d7c5d07b7d98c12c63a23ddac910d51da94d3ac683242872ca2122c6ebffda48"


def test_protocol_kat_challenge_and_confirmation():
    msg1 = bytes.fromhex(MSG1_RECOVERY)
    ch = make_challenge(K, msg1, NC, NH, P_NEXT, SID, CTX.digest())
    e, autn = ch.msg2[16:48], ch.msg2[48:]
    assert ch.msg2[:16] == NH
    assert e.hex() == "7f725439f85e6bbef4e657a380df9231f2035950bff1b7c1ecaa8cd01d819b79"
    assert autn.hex() == "6a2a0cf23bcaf8f974f1e2591a5f425b2aa07dce78d98a4e8b0dcde12bc7ffd6"
    assert ch.xres.hex() == "908b67dff98fb0fe12b19956b711baccf17ab600d5416e9dd99c1e1f62b8b4fc"
    assert ch.hxres.hex() == "44510089ec7f885a7861cb18861567ea"
    client_side = open_challenge(K, msg1, NC, parse_msg2(ch.msg2), SID, CTX.digest())
    assert client_side is not None and client_side.p_next == P_NEXT and client_side.xres == ch.xres
    th = transcript_hash(SID, CTX.digest(), msg1, ch.msg2, ch.xres)
    assert th.hex() == "391b8fc76d0f5d5c1ba7991279be7d34ab9056529e4de2a724bcf4fb511c4f15"
    ks = session_key(ch.k_s, th)
    assert ks.hex() == "80529818b8b8bf4578abee47f34d6f383cb9607f8dd870d1e3cb96fe02d4d4f3"
    assert sconf(ks, th).hex() == "44bb644f1105ed87852b35bab72d679986fca9956075a030e3a6bbcd8da20868"


def test_protocol_kat_ha_deconceals_both_modes(tmp_path):
    """The HA code path (not only the helpers) opens the KAT msg1s: fast via the pid index, recovery via cid."""
    from bastionfl.auth.ha import HomeAuthority
    from bastionfl.auth.store import HAStore
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    store = HAStore(tmp_path / "kat.db", bytes(32))
    raw = SK_HA.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    store.add_key(1, raw, x25519_public(SK_HA))
    store.create_client("kat", CID, K, PID, ["fl-server-A"])
    ha = HomeAuthority(store, clock=lambda: 1_699_999_990.0)
    for hexmsg in (MSG1_FAST, MSG1_RECOVERY):
        reply = ha.challenge("fl-server-A", CTX, bytes.fromhex(hexmsg))
        msg1 = bytes.fromhex(hexmsg)
        opened = open_challenge(K, msg1, NC, parse_msg2(reply.msg2), SID, CTX.digest())
        assert opened is not None, "the HA must accept the KAT msg1"
    assert store.counter("decoys") == 0
