"""Helpers shared by the auth tests: a settable clock, enrolled clients and a handshake driver."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bastionfl.auth import (
    AuthClient,
    AuthServer,
    HomeAuthority,
    LocalRelay,
    MemoryCredentialStore,
    RateLimits,
    RoundContext,
    Session,
)

SERVER = "fl-server-A"
OTHER = "fl-server-B"
GENEROUS = RateLimits(fast_rate=1e6, fast_burst=1e6, recovery_rate=1e6, recovery_burst=1e6)


class Clock:
    """Settable clock shared by every party of a test."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Transcript:
    msg1: bytes
    msg2: bytes
    msg3: bytes
    msg4: bytes
    ack: bytes
    client_session: Session | None
    server_session: Session | None


def make_client(ha: HomeAuthority, clock: Clock, label: str = "alice", servers=(SERVER, OTHER)) -> AuthClient:
    return AuthClient(MemoryCredentialStore(ha.enroll(label, list(servers))), clock=clock)


def make_server(ha: HomeAuthority, clock: Clock, server_id: str = SERVER) -> AuthServer:
    return AuthServer(server_id, LocalRelay(ha, server_id), clock=clock)


def ctx_for(clock: Clock, epoch: int = 1, node_id: int = 42, run_id: int = 7) -> RoundContext:
    return RoundContext(run_id, epoch, node_id, int(clock()) + 120)


def handshake(client: AuthClient, server: AuthServer, ctx: RoundContext, tamper=None) -> Transcript:
    """Run one full handshake; ``tamper(name, data) -> data`` may alter msg1..msg4/ack in flight."""
    t = tamper or (lambda name, data: data)
    hs = server.begin(ctx)
    m1 = t("msg1", client.start(server.server_id, ctx))
    m2 = t("msg2", hs.challenge(m1))
    m3 = t("msg3", client.respond(m2))
    m4 = t("msg4", hs.confirm(m3))
    out = client.finish(m4)
    a = t("ack", out.ack)
    return Transcript(m1, m2, m3, m4, a, out.session, hs.accept(a))


def make_tls_cert(directory) -> tuple[str, str]:
    """Self-signed certificate for 127.0.0.1 (cryptography x509); returns ``(cert_path, key_path)``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bastionfl-ha-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "ha.crt"), os.path.join(directory, "ha.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path
