"""Generate a test CA and a server certificate for SuperLink (or the Home Authority) TLS.

``bastionfl deploy certs --out certs --san superlink --san localhost --ip 127.0.0.1``
writes ca.crt, server.pem and server.key (0600). For tests, demos and compose files; a production
deployment uses its own PKI.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["make_certificates", "make_deployment_certificates"]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "BastionFL test PKI"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    os.chmod(path, mode)


def _new_ca(days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("BastionFL test CA")).issuer_name(_name("BastionFL test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_cert, ca_key


def _issue(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], out: Path, dns: list[str], ips: list[str],
           days: int, key_mode: int) -> dict[str, Path]:
    """A server certificate signed by ``ca`` into ``out`` (ca.crt, server.pem, server.key)."""
    ca_cert, ca_key = ca
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder().subject_name(_name(dns[0] if dns else ips[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": out / "ca.crt", "cert": out / "server.pem", "key": out / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths["key"], key, key_mode)
    return paths


def make_certificates(out: Path, dns: list[str], ips: list[str], days: int = 30) -> dict[str, Path]:
    """Write ca.crt, server.pem, server.key into ``out``; the server certificate covers ``dns`` and ``ips``."""
    return _issue(_new_ca(days), out, dns, ips, days, 0o600)


def make_deployment_certificates(out: Path, servers: dict[str, tuple[list[str], list[str]]], days: int = 30,
                                 key_mode: int = 0o600) -> dict[str, dict[str, Path]]:
    """One CA for the whole deployment and one server certificate per name (``{name: (dns, ips)}``).

    Writes ``out/ca.crt`` and ``out/<name>/{ca.crt,server.pem,server.key}``; the CA key is not kept (no more
    certificates can be issued from it). ``key_mode`` 0o640 lets a container user of the file's group read a key.
    """
    ca = _new_ca(days)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.crt").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    return {name: _issue(ca, out / name, dns, ips, days, key_mode) for name, (dns, ips) in servers.items()}
